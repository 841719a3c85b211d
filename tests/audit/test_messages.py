"""Every audit builder's message against the DICOM audit message schema (PS3.15 A.5.1), and against the content
IHE's tables require of its transaction (EventID, EventTypeCode, roles, participant object codes)."""
from __future__ import annotations

import base64
import inspect
import os
from pathlib import Path

import pytest
from lxml import etree

from affinity_domain import audit_codes as c
from affinity_domain.audit import events
from affinity_domain.audit.message import to_xml
from tests.audit import samples

SCHEMA = Path(__file__).with_name("dicom_audit_message.rng")
SAMPLES = samples.all_samples()


def _validator(path: Path):
    doc = etree.parse(str(path))
    return etree.XMLSchema(doc) if doc.getroot().tag.endswith("}schema") else etree.RelaxNG(doc)


def test_every_builder_has_a_sample():
    builders = {name for name, f in inspect.getmembers(events, inspect.isfunction)
                if f.__module__ == events.__name__ and not name.startswith("_")
                and inspect.signature(f).return_annotation == "AuditMessage"}
    assert builders == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_valid_against_the_schema(name):
    schema = _validator(SCHEMA)
    doc = etree.fromstring(to_xml(SAMPLES[name]))
    assert schema.validate(doc), schema.error_log


@pytest.mark.skipif(not os.environ.get("XDSI_AUDIT_SCHEMA"), reason="XDSI_AUDIT_SCHEMA names no published copy")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_valid_against_a_published_copy(name):
    """$XDSI_AUDIT_SCHEMA: the standard's schema as RELAX NG (.rng, e.g. converted from A.5.1's compact
    syntax with trang) or XML Schema."""
    schema = _validator(Path(os.environ["XDSI_AUDIT_SCHEMA"]))
    assert schema.validate(etree.fromstring(to_xml(SAMPLES[name]))), schema.error_log


def test_the_schema_refuses_what_the_standard_forbids():
    """The grammar is no rubber stamp: a message without participants, or with an unknown outcome, fails."""
    schema = _validator(SCHEMA)
    good = etree.fromstring(to_xml(SAMPLES["iti18_registry_stored_query"]))
    assert schema.validate(good)
    for mutate in (lambda d: [d.remove(p) for p in d.findall("ActiveParticipant")],
                   lambda d: d.find("EventIdentification").set("EventOutcomeIndicator", "3"),
                   lambda d: d.find("EventIdentification/EventID").attrib.pop("originalText"),
                   lambda d: d.find("AuditSourceIdentification").attrib.pop("AuditSourceID"),
                   lambda d: d.find("ParticipantObjectIdentification").set("ParticipantObjectTypeCode", "7"),
                   lambda d: d.insert(0, d.find("AuditSourceIdentification"))):
        bad = etree.fromstring(etree.tostring(good))
        mutate(bad)
        assert not schema.validate(bad)


# ------------------------------------------------------------------ content per IHE's tables

def _doc(name):
    return etree.fromstring(to_xml(SAMPLES[name]))


def _code(el):
    return el.get("csd-code"), el.get("codeSystemName")


def _event(doc):
    e = doc.find("EventIdentification")
    return _code(e.find("EventID")), [_code(t) for t in e.findall("EventTypeCode")], e.get("EventActionCode")


def _objects(doc, role):
    return [o for o in doc.findall("ParticipantObjectIdentification")
            if o.get("ParticipantObjectTypeCodeRole") == str(role)]


def _patients(doc):
    found = []
    for o in _objects(doc, c.ROLE_PATIENT):
        assert o.get("ParticipantObjectTypeCode") == "1"
        assert _code(o.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881")
        found.append(o.get("ParticipantObjectID"))
    return found


def _roles(doc):
    return {p.get("UserID"): ([_code(r)[0] for r in p.findall("RoleIDCode")], p.get("UserIsRequestor"))
            for p in doc.findall("ActiveParticipant")}


EXPECTED_EVENTS = {
    "iti8_patient_identity_feed": ("110110", "ITI-8", "U"),
    "iti9_pix_query": ("110112", "ITI-9", "E"),
    "iti10_pix_update_notification": ("110110", "ITI-10", "U"),
    "iti18_registry_stored_query": ("110112", "ITI-18", "E"),
    "iti51_multi_patient_query": ("110112", "ITI-51", "E"),
    "iti41_provide_and_register": ("110107", "ITI-41", "C"),
    "rad68_provide_and_register_imaging": ("110106", "RAD-68", "R"),
    "iti42_register": ("110106", "ITI-42", "R"),
    "iti57_update_document_set": ("110107", "ITI-57", "U"),
    "iti43_retrieve_document_set": ("110106", "ITI-43", "R"),
    "rad69_retrieve_imaging_document_set": ("110104", "RAD-69", "C"),
    "instances_transferred": ("110104", None, "C"),
    "begin_transferring": ("110102", None, "E"),
    "dicom_query": ("110112", None, "E"),
    "application_activity": ("110100", "110120", "E"),
    "user_authentication": ("110114", "110122", "E"),
    "security_alert": ("110113", "110126", "E"),
    "patient_record": ("110110", "ITI-8", "U"),
    "audit_log_used": ("110101", None, "R"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_EVENTS))
def test_event_identification(name):
    event_id, type_code, action = EXPECTED_EVENTS[name]
    (code, system), types, found_action = _event(_doc(name))
    assert (code, system) == (event_id, "DCM")
    assert [t for t, _ in types] == ([type_code] if type_code else [])
    assert found_action == action
    assert all(s == ("IHE Transactions" if t[:3] in ("ITI", "RAD") else "DCM") for t, s in types)


def test_export_and_import_flip_the_event_not_the_participants():
    common = dict(repository=samples.repository_out, consumer=samples.consumer_in,
                  documents=[("1.2.3", "1.3.6.1.4.1.21367.13.40.301", None)], patient=samples.PATIENT)
    out = events.iti43_retrieve_document_set(direction=events.EXPORT, **common)
    into = events.iti43_retrieve_document_set(direction=events.IMPORT, **common)
    assert (out.event_id, out.action) == (c.EXPORT, "R") and (into.event_id, into.action) == (c.IMPORT, "C")
    assert out.participants == into.participants


def test_stored_query_records_the_request_and_its_encoding():
    doc = _doc("iti18_registry_stored_query")
    assert _patients(doc) == [samples.PATIENT]
    [query] = _objects(doc, c.ROLE_QUERY)
    assert query.get("ParticipantObjectTypeCode") == "2"
    assert _code(query.find("ParticipantObjectIDTypeCode")) == ("ITI-18", "IHE Transactions")
    assert query.get("ParticipantObjectID") == samples.FIND_QUERY_ID
    assert base64.b64decode(query.findtext("ParticipantObjectQuery")) == samples.QUERY
    details = {d.get("type"): base64.b64decode(d.get("value")) for d in query.findall("ParticipantObjectDetail")}
    assert details == {"QueryEncoding": b"UTF-8", "ihe:homeCommunityID": b"urn:oid:1.3.6.1.4.1.21367.13.70.200"}
    roles = _roles(doc)
    assert roles[samples.consumer.user_id] == (["110153"], "true")
    assert roles["http://127.0.0.1:8010/registry"] == (["110152"], "false")
    # the human requestor, with XUA's role and purpose of use
    human = doc.find("ActiveParticipant[@UserID='jdoe<jdoe@idp.example.org>']")
    assert human.get("UserIsRequestor") == "true" and human.get("UserName") == "Jane Doe, Hospital A"
    assert _code(human.find("RoleIDCode")) == ("46255001", "2.16.840.1.113883.6.96")
    assert _code(doc.find("EventIdentification/PurposeOfUse"))[0] == "TREATMENT"


def test_access_point_types():
    doc = _doc("iti18_registry_stored_query")
    assert {p.get("NetworkAccessPointID"): p.get("NetworkAccessPointTypeCode")
            for p in doc.findall("ActiveParticipant") if p.get("NetworkAccessPointID")} == {
        "10.0.0.7": "2", "127.0.0.1": "2"}
    assert _doc("application_activity").find("ActiveParticipant").get("NetworkAccessPointTypeCode") == "1"


def test_submissions_name_patient_and_submission_set():
    for name in ("iti41_provide_and_register", "rad68_provide_and_register_imaging", "iti42_register",
                 "iti57_update_document_set"):
        doc = _doc(name)
        assert _patients(doc) == [samples.PATIENT]
        [job] = _objects(doc, c.ROLE_JOB)
        assert job.get("ParticipantObjectTypeCode") == "2"
        assert _code(job.find("ParticipantObjectIDTypeCode")) == (c.SUBMISSION_SET.code, "IHE XDS Metadata")
        assert job.get("ParticipantObjectID").startswith("1.3.6.1.4.1.21367.2005.3.99.")


def test_retrieve_names_each_document_with_its_repository():
    docs = _objects(_doc("iti43_retrieve_document_set"), c.ROLE_REPORT)
    assert [d.get("ParticipantObjectID") for d in docs] == ["1.3.6.1.4.1.21367.2005.3.99.1.1",
                                                            "1.3.6.1.4.1.21367.2005.3.99.1.2"]
    for d in docs:
        assert _code(d.find("ParticipantObjectIDTypeCode")) == ("9", "RFC-3881")
        details = {x.get("type"): base64.b64decode(x.get("value")) for x in d.findall("ParticipantObjectDetail")}
        assert details["Repository Unique Id"] == b"1.3.6.1.4.1.21367.13.40.301"
    assert "ihe:homeCommunityID" not in [x.get("type") for x in docs[0].findall("ParticipantObjectDetail")]


def test_studies_list_sop_classes_and_instances():
    for name in ("rad69_retrieve_imaging_document_set", "instances_transferred", "begin_transferring"):
        doc = _doc(name)
        [study] = [o for o in _objects(doc, c.ROLE_REPORT)
                   if _code(o.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM")]
        assert study.get("ParticipantObjectID") == samples.STUDY.uid
        sop = study.find("ParticipantObjectDescription/SOPClass")
        assert sop.get("UID") == "1.2.840.10008.5.1.4.1.1.2" and sop.get("NumberOfInstances") == "2"
        assert [i.get("UID") for i in sop.findall("Instance")] == ["1.2.3.4.1", "1.2.3.4.2"]
        assert study.find("ParticipantObjectDescription/Accession").get("Number") == "ACC-1"
        assert _patients(doc) == [samples.PATIENT]


def test_hl7_events_carry_the_message_control_id():
    doc = _doc("iti8_patient_identity_feed")
    assert _patients(doc) == [samples.PATIENT, samples.OTHER_PATIENT]
    for o in _objects(doc, c.ROLE_PATIENT):
        [detail] = o.findall("ParticipantObjectDetail")
        assert (detail.get("type"), base64.b64decode(detail.get("value"))) == ("MSH-10", b"MSG-1")
    assert _roles(doc)["XDSI_SOURCE|HOSPA"] == (["110153"], "true")
    query = _doc("iti9_pix_query")
    [q] = _objects(query, c.ROLE_QUERY)
    assert base64.b64decode(q.findtext("ParticipantObjectQuery")).startswith(b"QPD|")
    assert _patients(query) == [samples.OTHER_PATIENT, samples.PATIENT]


def test_dicom_query_keeps_the_identifier_bytes():
    doc = _doc("dicom_query")
    [q] = _objects(doc, c.ROLE_REPORT)
    assert _code(q.find("ParticipantObjectIDTypeCode")) == ("110181", "DCM")
    assert base64.b64decode(q.findtext("ParticipantObjectQuery")) == b"\x08\x00\x52\x00\x06\x00STUDY "
    [ts] = q.findall("ParticipantObjectDetail")
    assert (ts.get("type"), base64.b64decode(ts.get("value"))) == ("TransferSyntax", b"1.2.840.10008.1.2.1")


def test_security_alert_names_its_subject():
    doc = _doc("security_alert")
    [subject] = _objects(doc, c.ROLE_RESOURCE)
    assert subject.get("ParticipantObjectID") == "10.0.0.66:51234"
    assert _code(subject.find("ParticipantObjectIDTypeCode")) == ("110182", "DCM")
    assert doc.find("EventIdentification").get("EventOutcomeIndicator") == "4"


def test_hostile_values_stay_data():
    """A peer's bytes (a query with markup, NULs, invalid UTF-8) go base64 into the query; text fields are escaped."""
    nasty = b"</ParticipantObjectQuery><x>\x00\xff"
    message = events.iti18_registry_stored_query(consumer=events.source("<&>\"'", host="10.0.0.1"),
                                                 registry=samples.registry, query_id="q", request=nasty)
    from dataclasses import replace
    doc = etree.fromstring(to_xml(replace(message, source=samples.SOURCE)))
    assert _validator(SCHEMA).validate(doc)
    assert base64.b64decode(doc.findtext(".//ParticipantObjectQuery")) == nasty
    assert doc.find("ActiveParticipant").get("UserID") == "<&>\"'"
    # characters XML cannot carry (a NUL in a calling AE title) and line ends: the record is kept, on one line
    message = replace(message, participants=(events.source("AE\x00\x1b\nTWO", host="10.0.0.1"),
                                             samples.registry), outcome_description="line one\nline two")
    xml = to_xml(replace(message, source=samples.SOURCE))
    assert b"\n" not in xml
    doc = etree.fromstring(xml)
    assert _validator(SCHEMA).validate(doc)
    assert doc.find("ActiveParticipant").get("UserID") == "AE\ufffd\ufffd\nTWO"
    assert doc.findtext("EventIdentification/EventOutcomeDescription") == "line one\nline two"


def test_outcomes():
    assert events.outcome_of_xds("urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success") == 0
    assert events.outcome_of_xds("urn:ihe:iti:2007:ResponseStatusType:PartialSuccess") == 4
    assert events.outcome_of_xds("urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure") == 8
    assert [events.outcome_of_dimse(s) for s in (0, 0xFF00, 0xB000, 0x0001, 0xA700, 0xC000, 0xFE00)] == [
        0, 0, 4, 4, 8, 8, 8]


def test_a_record_too_large_is_shortened_not_lost():
    from affinity_domain.audit.message import fit
    huge = events.iti51_multi_patient_query(
        consumer=samples.consumer, registry=samples.registry, query_id="urn:uuid:x", request=b"q" * 200_000,
        patients=[f"P{i}^^^&1.2.3&ISO" for i in range(5000)])
    from dataclasses import replace
    huge = replace(huge, source=samples.SOURCE)
    small = fit(huge, 60000)
    xml = to_xml(small)
    assert len(xml) <= 60000 and _validator(SCHEMA).validate(etree.fromstring(xml))
    assert "audit record shortened" in small.outcome_description and "left out" in small.outcome_description
    assert small.objects[0].id == "P0^^^&1.2.3&ISO"          # the first kept, the last left out
    query_only = events.iti18_registry_stored_query(consumer=samples.consumer, registry=samples.registry,
                                                    query_id="q", request=b"q" * 200_000, patient=samples.PATIENT)
    cut = fit(replace(query_only, source=samples.SOURCE), 60000)
    assert len(cut.objects) == 2 and len(cut.objects[1].query) == 15000
    assert cut.outcome_description == "audit record shortened: queries cut to their first 15000 bytes"
    assert fit(samples.all_samples()["iti18_registry_stored_query"], 60000) == \
        samples.all_samples()["iti18_registry_stored_query"]
