"""The audit vocabulary, in one place: DICOM PS3.15 A.5 / PS3.16 codes (EventID CID 400, EventTypeCode CID 401
and 403, RoleIDCode CID 402, ParticipantObjectIDTypeCode CID 404), RFC 3881's coded values, the IHE transaction
codes (ITI TF-2 and RAD TF-3 audit tables) and the syslog header values of ITI-20.

A code is ``Code(csd-code, codeSystemName, originalText)``: the three attributes the DICOM schema gives every
coded value. Everything that builds or reads an audit message names codes from here."""
from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    code: str
    system: str
    meaning: str


DCM = "DCM"
RFC3881 = "RFC-3881"
IHE_TRANSACTIONS = "IHE Transactions"
IHE_XDS_METADATA = "IHE XDS Metadata"

# EventID (PS3.16 CID 400)
APPLICATION_ACTIVITY = Code("110100", DCM, "Application Activity")
AUDIT_LOG_USED = Code("110101", DCM, "Audit Log Used")
BEGIN_TRANSFERRING = Code("110102", DCM, "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = Code("110103", DCM, "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", DCM, "DICOM Instances Transferred")
STUDY_DELETED = Code("110105", DCM, "DICOM Study Deleted")
EXPORT = Code("110106", DCM, "Export")
IMPORT = Code("110107", DCM, "Import")
NETWORK_ENTRY = Code("110108", DCM, "Network Entry")
ORDER_RECORD = Code("110109", DCM, "Order Record")
PATIENT_RECORD = Code("110110", DCM, "Patient Record")
PROCEDURE_RECORD = Code("110111", DCM, "Procedure Record")
QUERY = Code("110112", DCM, "Query")
SECURITY_ALERT = Code("110113", DCM, "Security Alert")
USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")

# EventTypeCode of Application Activity and User Authentication (CID 401)
APPLICATION_START = Code("110120", DCM, "Application Start")
APPLICATION_STOP = Code("110121", DCM, "Application Stop")
LOGIN = Code("110122", DCM, "Login")
LOGOUT = Code("110123", DCM, "Logout")

# EventTypeCode of Security Alert (CID 403)
NODE_AUTHENTICATION = Code("110126", DCM, "Node Authentication")
EMERGENCY_OVERRIDE_STARTED = Code("110127", DCM, "Emergency Override Started")
NETWORK_CONFIGURATION = Code("110128", DCM, "Network Configuration")
SECURITY_CONFIGURATION = Code("110129", DCM, "Security Configuration")
SOFTWARE_CONFIGURATION = Code("110131", DCM, "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = Code("110132", DCM, "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = Code("110133", DCM, "Audit Recording Stopped")
AUDIT_RECORDING_STARTED = Code("110134", DCM, "Audit Recording Started")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = Code("110135", DCM, "Object Security Attributes Changed")
SECURITY_ROLES_CHANGED = Code("110136", DCM, "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = Code("110137", DCM, "User security Attributes Changed")
EMERGENCY_OVERRIDE_STOPPED = Code("110138", DCM, "Emergency Override Stopped")

# RoleIDCode (CID 402)
APPLICATION = Code("110150", DCM, "Application")
APPLICATION_LAUNCHER = Code("110151", DCM, "Application Launcher")
DESTINATION_ROLE = Code("110152", DCM, "Destination Role ID")
SOURCE_ROLE = Code("110153", DCM, "Source Role ID")

# ParticipantObjectIDTypeCode: RFC 3881 (5.5.4) and DICOM (CID 404)
PATIENT_NUMBER = Code("2", RFC3881, "Patient Number")
REPORT_NUMBER = Code("9", RFC3881, "Report Number")
SEARCH_CRITERIA = Code("10", RFC3881, "Search Criteria")
USER_IDENTIFIER = Code("11", RFC3881, "User Identifier")
URI = Code("12", RFC3881, "URI")
STUDY_INSTANCE_UID = Code("110180", DCM, "Study Instance UID")
SOP_CLASS_UID = Code("110181", DCM, "SOP Class UID")
NODE_ID = Code("110182", DCM, "Node ID")
SUBMISSION_SET = Code("urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", IHE_XDS_METADATA,
                      "submission set classificationNode")

# EventTypeCode of each IHE transaction (also the ParticipantObjectIDTypeCode of its query parameters)
ITI_8 = Code("ITI-8", IHE_TRANSACTIONS, "Patient Identity Feed")
ITI_9 = Code("ITI-9", IHE_TRANSACTIONS, "PIX Query")
ITI_10 = Code("ITI-10", IHE_TRANSACTIONS, "PIX Update Notification")
ITI_18 = Code("ITI-18", IHE_TRANSACTIONS, "Registry Stored Query")
ITI_41 = Code("ITI-41", IHE_TRANSACTIONS, "Provide and Register Document Set-b")
ITI_42 = Code("ITI-42", IHE_TRANSACTIONS, "Register Document Set-b")
ITI_43 = Code("ITI-43", IHE_TRANSACTIONS, "Retrieve Document Set")
ITI_51 = Code("ITI-51", IHE_TRANSACTIONS, "Multi-Patient Stored Query")
ITI_57 = Code("ITI-57", IHE_TRANSACTIONS, "Update Document Set")
RAD_68 = Code("RAD-68", IHE_TRANSACTIONS, "Provide and Register Imaging Document Set - MTOM/XOP")
RAD_69 = Code("RAD-69", IHE_TRANSACTIONS, "Retrieve Imaging Document Set")

# EventActionCode (RFC 3881 5.1.2)
CREATE, READ, UPDATE, DELETE, EXECUTE = "C", "R", "U", "D", "E"

# EventOutcomeIndicator (RFC 3881 5.1.4)
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12

# NetworkAccessPointTypeCode
MACHINE_NAME, IP_ADDRESS, URI_ACCESS_POINT = "1", "2", "5"

# ParticipantObjectTypeCode and ParticipantObjectTypeCodeRole (RFC 3881 5.5.1, 5.5.2)
PERSON, SYSTEM_OBJECT, ORGANIZATION, OTHER = 1, 2, 3, 4
ROLE_PATIENT, ROLE_REPORT, ROLE_RESOURCE, ROLE_USER = 1, 3, 4, 6
ROLE_SECURITY_RESOURCE, ROLE_JOB, ROLE_QUERY = 13, 20, 24

# AuditSourceTypeCode (PS3.15 A.5.1.2.1)
SOURCE_APPLICATION_SERVER = Code("4", DCM, "Application Server process tier in a multi-tier system")
SOURCE_SECURITY_SERVER = Code("6", DCM, "Security Server")

# ParticipantObjectDetail types named by IHE
DETAIL_QUERY_ENCODING = "QueryEncoding"
DETAIL_HOME_COMMUNITY = "ihe:homeCommunityID"
DETAIL_REPOSITORY = "Repository Unique Id"
DETAIL_MESSAGE_CONTROL_ID = "MSH-10"
DETAIL_TRANSFER_SYNTAX = "TransferSyntax"
DETAIL_ALERT = "Alert Description"

# ITI-20 syslog header (ITI TF-2 3.20.4.1.2): facility 10 (security/authorization), severity 5 (notice)
SYSLOG_FACILITY = 10
SYSLOG_SEVERITY = 5
SYSLOG_SEVERITY_WARNING = 4
SYSLOG_MSGID = "IHE+RFC-3881"

# FHIR systems for ITI-81 AuditEvent (the DICOM to FHIR mapping of IHE's RESTful ATNA)
FHIR_DCM = "http://dicom.nema.org/resources/ontology/DCM"
FHIR_IHE_EVENT_TYPE = "urn:ihe:event-type-code"
FHIR_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
FHIR_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
FHIR_NETWORK_TYPE = "http://hl7.org/fhir/network-type"
FHIR_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
FHIR_SYSTEMS = {DCM: FHIR_DCM, IHE_TRANSACTIONS: FHIR_IHE_EVENT_TYPE}
