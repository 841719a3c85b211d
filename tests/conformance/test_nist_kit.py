"""The NIST plan replay without a registry: plans load, requests come out as the toolkit would send
them (schema-valid ebRIM 3.0, fresh ids, the right patient), and answers are graded strictly."""
from __future__ import annotations

import re

import pytest
from lxml import etree

from affinity_domain import ns
from tests.conformance import nist_kit as kit
from tests.conformance.nist_kit import ALL_TESTS, REGISTER_TESTS
from tests.shared import IHE, KIT, needs

PATIENT = f"P1^^^&{kit.DOMAIN}&ISO"
ALT_PATIENT = f"P2^^^&{kit.DOMAIN}&ISO"
UNKNOWN = f"U1^^^&{kit.DOMAIN}&ISO"


class _Fresh(dict):
    """A log entry that knows every id: each one asked for gets a new value."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __contains__(self, key):
        return True

    def __missing__(self, key):
        self[key] = value = self.make()
        return value


class DryLinkage:
    """Earlier steps as if they had all run; the current test's patients are fixed."""

    patient_id, unknown_patient_id = PATIENT, UNKNOWN

    def __init__(self):
        self.logs: dict = {}

    def step_log(self, test, section, step):
        if (test, section, step) in self.logs:
            return self.logs[(test, section, step)]
        return kit.StepLog({"AssignedUids": _Fresh(kit.new_uid), "AssignedUuids": _Fresh(kit.new_uuid),
                            "AssignedPatientId": _Fresh(lambda: PATIENT)}, _Fresh(kit.new_uuid))

    def feed_patient(self, feed_test):
        return ALT_PATIENT if feed_test == "15817b" else PATIENT


def prepared_steps(tests):
    link = DryLinkage()
    for test in tests:
        for name in kit.section_names(test):
            section = kit.load_section(test, name)
            for step in section.steps:
                if step.transaction in ("Register", "StoredQuery", "MPQ", "MetadataUpdate"):
                    prepared = kit.prepare(step, section, link)
                    link.logs[(test, name, step.id)] = prepared.log
                    yield section, step, prepared


@pytest.fixture(scope="module")
def schemas():
    class LocalXml(etree.Resolver):      # rim.xsd imports xml.xsd from w3.org; there is no network
        def resolve(self, url, pubid, context):
            if url.endswith("xml.xsd"):
                return self.resolve_filename(str(kit.EBRS_SCHEMAS / "xml.xsd"), context)
            return None

    parser = etree.XMLParser()
    parser.resolvers.add(LocalXml())
    return {name: etree.XMLSchema(etree.parse(str(kit.EBRS_SCHEMAS / f"{name}.xsd"), parser))
            for name in ("lcm", "query")}


@needs(KIT)
def test_every_plan_loads_with_known_transactions_and_checks():
    for test in ALL_TESTS:
        for name in kit.section_names(test):
            for step in kit.load_section(test, name).steps:
                assert step.transaction
                assert step.expected_status in ("Success", "Failure", "PartialSuccess")
                unknown = [c for c, _ in step.expected_contents if c not in kit.CHECKS]
                assert not unknown, f"{test}/{name}: {unknown}"


@needs(KIT, IHE)
def test_requests_validate_against_ebrs3_schemas(schemas):
    count = 0
    for section, step, prepared in prepared_steps(ALL_TESTS):
        schema = schemas["lcm" if step.transaction in ("Register", "MetadataUpdate") else "query"]
        assert schema.validate(prepared.request), f"{section.key}/{step.id}: {schema.error_log.last_error}"
        assert not re.search(r"\$\w+\$", etree.tostring(prepared.request, encoding="unicode"))
        count += 1
    assert count > 150


@needs(KIT)
def test_submissions_are_ebrim3_as_the_toolkit_translates_them():
    for section, step, prepared in prepared_steps(REGISTER_TESTS):
        if step.transaction != "Register":
            continue
        request = prepared.request
        assert etree.QName(request).namespace == ns.LCM
        assert not request.xpath("//*[namespace-uri()!=$lcm and namespace-uri()!=$rim]", lcm=ns.LCM, rim=ns.RIM)
        assert not request.xpath("//rim:ObjectRef | //@majorVersion | //@minorVersion", namespaces=kit.NS)
        for ei in request.iterfind(".//rim:ExternalIdentifier", kit.NS):
            assert ei.get("id") and ei.get("registryObject") == ei.getparent().get("id")
        for c in request.iterfind(".//rim:Classification", kit.NS):
            assert c.get("id") and c.get("classifiedObject")
        for a in request.iterfind(".//rim:Association", kit.NS):
            assert re.fullmatch(r"urn:(oasis:names:tc:ebxml-regrep|ihe:iti:2007):AssociationType:\w+",
                                a.get("associationType")), a.get("associationType")


@needs(KIT)
def test_association_types_get_their_urns():
    section = kit.load_section("11994", "xfrm")
    request = kit.prepare(section.steps[0], section, DryLinkage()).request
    types = {a.get("associationType") for a in request.iterfind(".//rim:Association", kit.NS)}
    assert types == {kit.EBRS_ASSOCIATION + "HasMember", kit.IHE_ASSOCIATION + "XFRM"}


def patient_ids(request):
    return {ei.get("identificationScheme"): ei.get("value") for ei in request.iter(f"{{{ns.RIM}}}ExternalIdentifier")
            if ei.get("identificationScheme") in kit.PATIENT_ID_SCHEMES}


@needs(KIT)
def test_the_test_patient_lands_on_every_object():
    section = kit.load_section("12346", "doc_w_fol")
    ids = patient_ids(kit.prepare(section.steps[0], section, DryLinkage()).request)
    assert set(ids) == kit.PATIENT_ID_SCHEMES and set(ids.values()) == {PATIENT}


@needs(KIT)
def test_11997_submits_two_known_but_different_patients():
    section = kit.load_section("11997", "submit")
    ids = patient_ids(kit.prepare(section.steps[0], section, DryLinkage()).request)
    assert ids == {kit.SS_PATIENT_ID: PATIENT, kit.DE_PATIENT_ID: ALT_PATIENT}


@needs(KIT)
def test_11996_submits_an_unknown_patient():
    section = kit.load_section("11996", "submit")
    assert set(patient_ids(kit.prepare(section.steps[0], section, DryLinkage()).request).values()) == {UNKNOWN}


@needs(KIT)
def test_unique_ids_are_fresh_and_uuids_consistent():
    section = kit.load_section("12346", "two_doc_w_fol")
    link = DryLinkage()
    first, second = (kit.prepare(section.steps[0], section, link) for _ in range(2))
    uids = first.log.assigned["AssignedUids"]
    assert set(uids) == {"Document01", "Document02", "SubmissionSet01", "Folder"}
    assert not set(uids.values()) & set(second.log.assigned["AssignedUids"].values())
    uuids = first.log.assigned["AssignedUuids"]
    defined = set(first.request.xpath("//@id"))
    assert set(uuids.values()) <= defined
    for ref in first.request.xpath("//@sourceObject | //@targetObject | //@classifiedObject | //@registryObject"):
        assert ref in defined or ref.startswith("urn:uuid:")
    assert not any(re.fullmatch(r"Document0\d|SubmissionSet01|Folder", ref) for ref in
                   first.request.xpath("//@sourceObject | //@targetObject | //@classifiedObject"))


@needs(KIT)
def test_no_assign_uids_keeps_the_earlier_document_uid():
    link = DryLinkage()
    section = kit.load_section("12004", "submit")
    submit = kit.prepare(section.steps[0], section, link)
    link.logs[("12004", "submit", "submit")] = submit.log
    resubmit = kit.prepare(section.steps[1], section, link)
    doc_uid = submit.log.assigned["AssignedUids"]["Document01"]
    values = resubmit.request.xpath("//rim:ExtrinsicObject/rim:ExternalIdentifier/@value", namespaces=kit.NS)
    assert doc_uid in values
    assert submit.log.assigned["AssignedUids"]["SubmissionSet01"] != resubmit.log.assigned["AssignedUids"][
        "SubmissionSet01"]


@needs(KIT)
def test_reports_read_the_sent_metadata():
    section = kit.load_section("11999", "submit")
    prepared = kit.prepare(section.steps[0], section, DryLinkage())
    assert prepared.log.reports["folid"] == prepared.log.assigned["AssignedUuids"]["Folder"]
    assert prepared.log.reports["ssuid"] == prepared.log.assigned["AssignedUids"]["SubmissionSet01"]


@needs(KIT)
def test_use_id_reaches_into_other_tests():
    link = DryLinkage()
    sentinel = kit.StepLog({"AssignedUuids": {"Document01": "urn:uuid:11111111-2222-3333-4444-555555555555"}})
    link.logs[("12346", "single_doc", "submit_doc")] = sentinel
    section = kit.load_section("11901", "uuid")
    request = kit.prepare(section.steps[0], section, link).request
    assert "urn:uuid:11111111-2222-3333-4444-555555555555" in etree.tostring(request, encoding="unicode")


def test_envelope_carries_ws_addressing():
    body = etree.Element(f"{{{ns.QUERY}}}AdhocQueryRequest")
    env = etree.fromstring(kit.envelope(body, ns.STORED_QUERY, "http://x/registry"))
    assert env.findtext("s:Header/wsa:Action", namespaces=kit.NS) == ns.STORED_QUERY
    assert env.findtext("s:Header/wsa:To", namespaces=kit.NS) == "http://x/registry"
    assert env.findtext("s:Header/wsa:MessageID", namespaces=kit.NS).startswith("urn:uuid:")
    assert env.findtext("s:Header/wsa:ReplyTo/wsa:Address", namespaces=kit.NS) == ns.WSA_ANONYMOUS
    assert env.find("s:Body/query:AdhocQueryRequest", kit.NS) is not None


# ---------------------------------------------------------------- grading answers

def answer(status="Success", objects="", errors=""):
    error_list = f"<rs:RegistryErrorList>{errors}</rs:RegistryErrorList>" if errors else ""
    return kit.read_answer(f"""<s:Envelope xmlns:s="{ns.SOAP12}"><s:Body>
      <query:AdhocQueryResponse xmlns:query="{ns.QUERY}" xmlns:rs="{ns.RS}" xmlns:rim="{ns.RIM}"
         status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{status}">{error_list}
        <rim:RegistryObjectList>{objects}</rim:RegistryObjectList>
      </query:AdhocQueryResponse></s:Body></s:Envelope>""".encode())


SS = f"""<rim:RegistryPackage id="urn:uuid:ss" status="{kit.STATUS_PREFIX}Approved">
  <rim:ExternalIdentifier id="e1" registryObject="urn:uuid:ss" identificationScheme="{kit.SS_UNIQUE_ID}" value="1.2"/>
</rim:RegistryPackage>"""
DOC = f'<rim:ExtrinsicObject id="urn:uuid:doc" status="{kit.STATUS_PREFIX}{{}}"/>'
MEMBER = (f'<rim:Association id="urn:uuid:a1" sourceObject="urn:uuid:ss" targetObject="urn:uuid:doc" '
          f'associationType="{kit.HAS_MEMBER}"/>')


def step(*checks, status="Success", message=""):
    return kit.Step("s", "StoredQuery", expected_status=status, expected_error_message=message,
                    expected_contents=list(checks))


def test_ss_with_one_doc_and_statuses():
    good = answer(objects=SS + DOC.format("Deprecated") + MEMBER)
    assert kit.grade(step(("SSwithOneDoc", None), ("DocDep", None)), good) == []
    assert kit.grade(step(("DocApp", None)), good)
    assert kit.grade(step(("SSwithOneDoc", None)), answer(objects=SS + DOC.format("Approved")))


def test_counts_must_match_exactly():
    refs = answer(objects='<rim:ObjectRef id="urn:uuid:1"/><rim:ObjectRef id="urn:uuid:2"/>')
    assert kit.grade(step(("ObjectRefs", 2)), refs) == []
    assert kit.grade(step(("ObjectRefs", 1)), refs)
    assert kit.grade(step(("None", None)), answer()) == []
    assert kit.grade(step(("None", None)), answer(objects=DOC.format("Approved")))


def test_status_and_error_message():
    error = '<rs:RegistryError errorCode="XDSUnknownPatientId" codeContext="unknown" severity="x:Error"/>'
    failed = answer("Failure", errors=error)
    assert kit.grade(step(status="Failure", message="XDSUnknownPatientId"), failed) == []
    assert kit.grade(step(status="Failure", message="XDSPatientIdDoesNotMatch"), failed)
    assert kit.grade(step(), failed)
    assert kit.grade(step(status="Failure"), answer())


def test_ss_with_one_doc_one_folder_needs_the_filing_in_the_submission_set():
    folder = f"""<rim:RegistryPackage id="urn:uuid:fol">
      <rim:ExternalIdentifier id="e2" registryObject="urn:uuid:fol" identificationScheme="{kit.FOLDER_UNIQUE_ID}"
         value="1.3"/></rim:RegistryPackage>"""

    def member(aid, source, target):
        return (f'<rim:Association id="urn:uuid:{aid}" sourceObject="urn:uuid:{source}" '
                f'targetObject="urn:uuid:{target}" associationType="{kit.HAS_MEMBER}"/>')

    links = member("a1", "ss", "doc") + member("a2", "ss", "fol") + member("a3", "fol", "doc")
    check = step(("SSwithOneDocOneFol", None))
    objects = SS + folder + DOC.format("Approved") + links
    assert kit.grade(check, answer(objects=objects + member("a4", "ss", "a3"))) == []
    assert kit.grade(check, answer(objects=objects + member("a4", "ss", "a2")))


@needs(KIT)
def test_submission_sets_carry_the_toolkit_source_id():
    section = kit.load_section("12001", "create_folder")
    request = kit.prepare(section.steps[0], section, DryLinkage()).request
    values = request.xpath("//rim:ExternalIdentifier[@identificationScheme=$s]/@value", s=kit.SS_SOURCE_ID,
                           namespaces=kit.NS)
    assert values == [kit.SOURCE_ID]
