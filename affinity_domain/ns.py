"""The profile's XML namespaces and the ``wsa:Action`` of every transaction served or sent.

One name per URI: every module and test says ``ns.XDSB`` rather than spelling the URI again."""

# SOAP 1.2, WS-Addressing, XOP (MTOM)
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"     # only to refuse it
WSA = "http://www.w3.org/2005/08/addressing"
WSA_ANONYMOUS = WSA + "/anonymous"
WSA_FAULT_ACTION = WSA + "/fault"
XOP = "http://www.w3.org/2004/08/xop/include"
XML = "http://www.w3.org/XML/1998/namespace"              # xml:lang

# ebXML RegRep 3.0 (ITI TF-3 4.2)
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"

# IHE
XDSB = "urn:ihe:iti:xds-b:2007"
IHERAD = "urn:ihe:rad:xdsi-b:2009"

# wsa:Action of each request, and of its response
PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"   # ITI-41; RAD-68 travels as ITI-41
PROVIDE_AND_REGISTER_RESPONSE = PROVIDE_AND_REGISTER + "Response"
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"                          # ITI-42
REGISTER_RESPONSE = REGISTER + "Response"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"                            # ITI-43
RETRIEVE_RESPONSE = RETRIEVE + "Response"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"                        # ITI-18
STORED_QUERY_RESPONSE = STORED_QUERY + "Response"
MULTI_PATIENT_QUERY = "urn:ihe:iti:2009:MultiPatientStoredQuery"             # ITI-51
MULTI_PATIENT_QUERY_RESPONSE = MULTI_PATIENT_QUERY + "Response"
UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"                                # ITI-57
UPDATE_RESPONSE = UPDATE + "Response"
RETRIEVE_IMAGING = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"             # RAD-69
RETRIEVE_IMAGING_RESPONSE = RETRIEVE_RESPONSE                                # RAD-69 answers as ITI-43 does

# The transaction each request action is, as metrics and logs name it. A Provide and Register
# carrying a KOS manifest is RAD-68 (the repository tells them apart by content).
TRANSACTIONS = {PROVIDE_AND_REGISTER: "ITI-41", REGISTER: "ITI-42", RETRIEVE: "ITI-43", STORED_QUERY: "ITI-18",
                MULTI_PATIENT_QUERY: "ITI-51", UPDATE: "ITI-57", RETRIEVE_IMAGING: "RAD-69"}
# WS-Security 1.1 (OASIS), SAML 2.0 and XML Signature: the XUA (ITI-40) header
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
HL7V3 = "urn:hl7-org:v3"                                  # Role and PurposeOfUse values (CE)
SAML2_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
# The SOAP 1.2 Subcode of a WS-Security fault (WSS 1.1 SOAP Message Security, 12)
WSSE_INVALID_SECURITY = "InvalidSecurity"                 # an error processing the <wsse:Security> header
WSSE_FAILED_AUTHENTICATION = "FailedAuthentication"       # the token could not be authenticated

# XUA attribute names (ITI TF-2 3.40.4.1.2, from XSPA and XCA)
XUA_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
XUA_ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
XUA_ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
XUA_NPI = "urn:oasis:names:tc:xspa:1.0:subject:npi"
XUA_HOME_COMMUNITY_ID = "urn:ihe:iti:xca:2010:homeCommunityId"
XUA_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"                  # Subject-Role Option: hl7:Role
XUA_PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"  # PurposeOfUse Option: hl7:PurposeOfUse
XUA_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"   # the patient id (CX)
