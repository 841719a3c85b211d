"""The records the doors and clients make of an exchange (``audit.xds``, ``audit.hl7v2``): what IHE's tables say
each holds, read from real messages; each valid against the DICOM audit message grammar. And the log net: a
patient id in CX form never reaches a JSON log line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lxml import etree

from affinity_domain import audit_codes as c, ebrim, logs, ns
from affinity_domain.audit import hl7v2, xds
from affinity_domain.audit.message import AuditSource, to_xml
from affinity_domain.errors import registry_response

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).with_name("dicom_audit_message.rng"))))
PATIENT = "XDSI7^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def _xml(message):
    from dataclasses import replace
    doc = etree.fromstring(to_xml(replace(message, source=AuditSource("test@host"))))
    SCHEMA.assertValid(doc)
    return doc


def _patients(doc):
    return [o.get("ParticipantObjectID") for o in doc.iterfind("ParticipantObjectIdentification")
            if o.get("ParticipantObjectTypeCodeRole") == "1"]


def _provide(imaging: bool) -> etree._Element:
    mime = "application/dicom" if imaging else "text/plain"
    return etree.fromstring(
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{ns.XDSB}" xmlns:lcm="{ns.LCM}" '
        f'xmlns:rim="{ns.RIM}"><lcm:SubmitObjectsRequest><rim:RegistryObjectList>'
        f'<rim:ExtrinsicObject id="d" mimeType="{mime}"/>'
        f'<rim:RegistryPackage id="SS"><rim:ExternalIdentifier identificationScheme="{ebrim.SS_PATIENT_ID}" '
        f'value="{PATIENT.replace("&", "&amp;")}"/><rim:ExternalIdentifier '
        f'identificationScheme="{ebrim.SS_UNIQUE_ID}" value="1.2.3.99"/></rim:RegistryPackage>'
        f'</rim:RegistryObjectList></lcm:SubmitObjectsRequest></xdsb:ProvideAndRegisterDocumentSetRequest>')


def test_rad68_received_is_an_import_naming_patient_and_submission_set():
    request = _provide(imaging=True)
    facts = xds.facts(ns.PROVIDE_AND_REGISTER, request)
    request.clear()                 # the handler may take the request apart: the facts were read before
    doc = _xml(xds.record(ns.PROVIDE_AND_REGISTER, facts, registry_response(), server=True,
                          requestor=xds.requestor_of("", "10.0.0.7"),
                          responder=xds.Node("http://repo/repository", "repo")))
    event = doc.find("EventIdentification")
    assert event.find("EventID").get("csd-code") == c.IMPORT.code and event.get("EventActionCode") == "C"
    assert event.find("EventTypeCode").get("csd-code") == "RAD-68" and event.get("EventOutcomeIndicator") == "0"
    assert _patients(doc) == [PATIENT]
    assert "1.2.3.99" in [o.get("ParticipantObjectID") for o in doc.iterfind("ParticipantObjectIdentification")]
    source = [p for p in doc.iterfind("ActiveParticipant") if p.find("RoleIDCode").get("csd-code") == "110153"]
    assert source[0].get("UserID") == ns.WSA_ANONYMOUS and source[0].get("NetworkAccessPointID") == "10.0.0.7"


def test_iti41_sent_and_refused_is_an_export_with_a_failure():
    from affinity_domain.errors import XdsError
    answer = registry_response([XdsError("XDSRepositoryMetadataError", "no")])
    doc = _xml(xds.record(ns.PROVIDE_AND_REGISTER, _provide(imaging=False), answer, server=False,
                          requestor=xds.ourselves(), responder=xds.Node("http://repo/repository", "repo")))
    event = doc.find("EventIdentification")
    assert event.find("EventID").get("csd-code") == c.EXPORT.code
    assert event.find("EventTypeCode").get("csd-code") == "ITI-41"
    assert event.get("EventOutcomeIndicator") == "8"
    assert event.findtext("EventOutcomeDescription") == "XDSRepositoryMetadataError"


def test_stored_query_names_the_patient_asked_for_and_the_query():
    query = etree.fromstring(
        f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}" xmlns:rim="{ns.RIM}"><rim:AdhocQuery id="urn:uuid:q">'
        f'<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>\'{PATIENT.replace("&", "&amp;")}'
        f"'</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>")
    doc = _xml(xds.record(ns.STORED_QUERY, query, None, server=False, requestor=xds.ourselves(),
                          responder=xds.Node("http://reg/registry", "reg")))
    assert _patients(doc) == [PATIENT]
    assert doc.find("EventIdentification").get("EventOutcomeIndicator") == "8"     # no answer
    q = [o for o in doc.iterfind("ParticipantObjectIdentification") if o.get("ParticipantObjectTypeCodeRole") == "24"]
    assert q[0].get("ParticipantObjectID") == "urn:uuid:q" and q[0].findtext("ParticipantObjectQuery")


FEED = (b"MSH|^~\\&|ADT|HOSP|XDSI_PIX|XDSI|20240101||ADT^A01^ADT_A01|C1|P|2.3.1\rEVN|A01\r"
        b"PID|||A1^^^&1.2.3&ISO||Doe^Jane\r")


def test_hl7_feed_record_names_both_applications_and_the_patient():
    ack = b"MSH|^~\\&|XDSI_PIX|XDSI|ADT|HOSP|20240101||ACK|X1|P|2.3.1\rMSA|AA|C1\r"
    doc = _xml(hl7v2.record(FEED, ack, sender_host="10.1.1.1", receiver_host="127.0.0.1"))
    event = doc.find("EventIdentification")
    assert (event.find("EventID").get("csd-code"), event.find("EventTypeCode").get("csd-code")) == ("110110", "ITI-8")
    assert event.get("EventActionCode") == "C" and event.get("EventOutcomeIndicator") == "0"
    users = {p.get("UserID"): p.get("NetworkAccessPointID") for p in doc.iterfind("ActiveParticipant")}
    assert users == {"ADT|HOSP": "10.1.1.1", "XDSI_PIX|XDSI": "127.0.0.1"}
    assert _patients(doc) == ["A1^^^&1.2.3&ISO"]


def test_hl7_outcomes_error_rejected_and_unanswered():
    ae = b"MSH|^~\\&|X|X|A|H|2024||ACK|1|P|2.5\rMSA|AE|C1\rERR|||204\r"
    ar = b"MSH|^~\\&|X|X|A|H|2024||ACK|1|P|2.5\rMSA|AR|C1\r"
    got = [hl7v2.record(FEED, reply, sender_host=None, receiver_host=None).outcome for reply in (ae, ar, None)]
    assert got == [c.MINOR_FAILURE, c.SERIOUS_FAILURE, c.SERIOUS_FAILURE]


def test_pix_query_and_notification():
    qbp = (b"MSH|^~\\&|XDSI_SOURCE|XDSI|XDSI_PIX|XDSI|2024||QBP^Q23^QBP_Q21|Q9|P|2.5\r"
           b"QPD|IHE PIX Query|Q9|A1^^^&1.2.3&ISO|^^^&1.9&ISO\rRCP|I\r")
    rsp = (b"MSH|^~\\&|XDSI_PIX|XDSI|XDSI_SOURCE|XDSI|2024||RSP^K23|R|P|2.5\rMSA|AA|Q9\rQAK|Q9|OK\r"
           b"QPD|IHE PIX Query|Q9\rPID|||X7^^^&1.9&ISO\r")
    doc = _xml(hl7v2.record(qbp, rsp, sender_host="127.0.0.1", receiver_host="pix"))
    assert doc.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-9"
    assert _patients(doc) == ["A1^^^&1.2.3&ISO", "X7^^^&1.9&ISO"]
    a31 = FEED.replace(b"ADT^A01^ADT_A01", b"ADT^A31^ADT_A05")
    doc = _xml(hl7v2.record(a31, None, sender_host=None, receiver_host=None))
    assert doc.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-10"


def test_log_lines_carry_no_patient_id():
    record = logging.makeLogRecord({"msg": "PIX does not know %s", "args": ("A1^^^&1.2.3&ISO",), "levelname": "INFO",
                                    "patient": "A1^^^&1.2.3&ISO", "birth_date": "19700101",
                                    "error": "no 'B2^^^&amp;1.2.3&amp;ISO' here", "fetch": 3})
    line = logs.JsonFormatter("consumer").format(record)
    entry = json.loads(line)
    assert "A1" not in line and "B2" not in line and "19700101" not in line
    assert entry["msg"] == "PIX does not know <patient>" and entry["fetch"] == 3
    assert "patient" not in entry and "birth_date" not in entry
