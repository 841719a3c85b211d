"""The registry's pure parts, without sockets: formats, stored-query parameters and ITI-42/ITI-57 validation."""
import pytest
from lxml import etree

from affinity_domain import ns
from affinity_domain import ebrim
from affinity_domain.config import ConfigError
from registry import codes, formats, metadata_update, stored_queries, submission
from registry.codes import CodeSets
from tests.shared import KIT, needs
from tests.xds import DOMAIN, Doc, new_oid, new_patient
from tests.xds import submission as submission_xml


@pytest.mark.parametrize("value,ok", [("2024", True), ("202401011230", True), ("20241301", False),
                                      ("2024-01-01", False), ("20240132", False), ("20240101246000", False)])
def test_dtm(value, ok):
    assert formats.is_dtm(value) is ok


def test_dtm_key_orders_mixed_precisions():
    assert formats.dtm_key("2023") < formats.dtm_key("20230101") <= formats.dtm_key("20230101000000")


@pytest.mark.parametrize("value,ok", [("P1^^^&1.2.3&ISO", True), ("P1^^^1.2.3", False), ("^^^&1.2&ISO", False),
                                      ("P1^^^&1.2&ISO^x", False), ("P1^x^^&1.2&ISO", False)])
def test_cx(value, ok):
    assert (formats.cx_problem(value) is None) is ok


def test_oid():
    assert formats.is_oid("1.3.6.1.4.1.21367.2005.13.20.1000")
    assert not formats.is_oid("1.03.4") and not formats.is_oid("abc") and not formats.is_oid("1." + "1" * 70)
    assert not formats.is_oid("1.2.3\n")


CDA_LIKE = False        # a formatCode that is not a DICOM SOP class: OID or OID^extension


@pytest.mark.parametrize("value,dicom,ok", [
    ("1.2.3", CDA_LIKE, True), ("1.2.3^ABC-12345", CDA_LIKE, True), ("1.2.3^" + "x" * 16, CDA_LIKE, True),
    ("1.2.3^" + "x" * 17, CDA_LIKE, False), ("1.2.3^", CDA_LIKE, False), ("1.2.3^a^b", CDA_LIKE, False),
    ("1.2.03^x", CDA_LIKE, False), ("../../../../q38", CDA_LIKE, False),
    ("1.2.3", True, True), ("2.25." + "9" * 39, True, True),
    ("1.2.3^../../../../q38", True, False), ("1.2.3^x", True, False), ("1.2." + "3" * 63, True, False),
    ("1.2.03", True, False)])
def test_document_entry_unique_id(value, dicom, ok):
    assert (formats.unique_id_problem(value, dicom) is None) is ok


@pytest.mark.parametrize("text,values", [("'a'", ["a"]), ("('a','b')", ["a", "b"]), ("('a', 'b' )", ["a", "b"]),
                                         ("200412", ["200412"]), ("('it''s')", ["it's"]), ("('a,b')", ["a,b"])])
def test_parse_value(text, values):
    assert stored_queries.parse_value(text) == values


def test_code_groups_are_anded_and_values_ored():
    p = stored_queries.Params({"$XDSDocumentEntryEventCodeList": [["a^^1", "b^^1"], ["c^^1"]],
                               "$XDSDocumentEntryPatientId": [["P^^^&1&ISO"]],
                               "$XDSDocumentEntryStatus": [["Approved"]]})
    where = stored_queries.document_filter(p)
    assert where.sql.count("event_code && %s") == 2
    assert ["a^^1", "b^^1"] in where.args and ["c^^1"] in where.args
    # Only indexed patient/status equality leads; no slot table exists to scan.
    assert where.sql.startswith("patient_id = %s AND status = ANY(%s)")


def test_single_valued_parameter_given_twice():
    p = stored_queries.Params({"$XDSDocumentEntryPatientId": [["a"], ["b"]]})
    with pytest.raises(Exception) as e:
        p.single("$XDSDocumentEntryPatientId")
    assert e.value.code == "XDSStoredQueryParamNumber"


def _objects(xml: str):
    root = etree.fromstring(xml.encode())
    return ebrim.parse_object_list(root.find(ebrim.q(ns.RIM, "RegistryObjectList")))


def test_validate_accepts_a_good_submission_and_plan_resolves_ids():
    objects = _objects(submission_xml(new_patient(), [Doc()], folders=["F1"]))
    assert submission.validate(objects, CodeSets(), DOMAIN) == []
    submission.plan(objects, "20240101000000")
    assert all(submission.is_uuid(o.id) for o in objects.objects)
    ids = {o.id for o in objects.objects}
    assert all(a.source in ids and a.target in ids for a in objects.of_kind("association"))
    [folder] = objects.of_kind("folder")
    assert folder.slot("lastUpdateTime") == ["20240101000000"]


def test_validate_reports_every_missing_attribute():
    xml = submission_xml(new_patient(), [Doc()])
    for scheme in ("urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"):
        xml = xml.replace(f'classificationScheme="{scheme}"', 'classificationScheme="urn:uuid:x"')
    errors = submission.validate(_objects(xml), CodeSets(), DOMAIN)
    contexts = " ".join(e.context for e in errors)
    assert "classCode" in contexts and "formatCode" in contexts
    assert {e.code for e in errors} == {"XDSRegistryMetadataError"}


def test_decide_rejects_unknown_patient_and_deprecates_on_replace():
    pid = new_patient()
    objects = _objects(submission_xml(pid, [Doc()]))
    submission.plan(objects, "20240101000000")
    errors, _ = submission.decide(objects, submission.RegistryState(), "20240101000000")
    assert [e.code for e in errors] == ["XDSUnknownPatientId"]
    target = "urn:uuid:11111111-1111-4111-8111-111111111111"
    doc = objects.of_kind("document_entry")[0]
    objects.objects.append(ebrim.RegistryObject(kind="association", id="urn:uuid:22222222-2222-4222-8222-222222222222",
                                                association_type=ebrim.RPLC, source=doc.id, target=target))
    state = submission.RegistryState(
        patients={pid: None},
        objects={target: submission.Existing(target, "document_entry", ebrim.APPROVED, pid)},
        dependents={target: ["urn:uuid:apnd"]}, folders_of={target: ["urn:uuid:folder"]})
    errors, effects = submission.decide(objects, state, "20240101000000")
    assert errors == []
    assert effects.deprecate == [target, "urn:uuid:apnd"] and effects.touched_folders == ["urn:uuid:folder"]
    assert effects.new_associations[0].source == "urn:uuid:folder"


# ---------------------------------------------------------------- ITI-57 availability status

def _status_update(pid: str, target: str, original: str = ebrim.APPROVED, new: str = ebrim.DEPRECATED,
                   extra_slot: str = ""):
    from imaging_source.metadata import availability_update
    root = availability_update(target, pid, new_oid(), "urn:uuid:22222222-2222-4222-8222-222222222222",
                               "20240101000000", {"content_type_code": ["X", "1.2.3", "x"]}, "1.3.6.1.4.1.21367.4",
                               original=original, new=new)
    if extra_slot:
        assoc = root.find(f".//{{{ns.RIM}}}Association")
        slot = etree.SubElement(assoc, f"{{{ns.RIM}}}Slot", name=extra_slot)
        etree.SubElement(etree.SubElement(slot, f"{{{ns.RIM}}}ValueList"), f"{{{ns.RIM}}}Value").text = "1"
    return ebrim.parse_object_list(root.find(ebrim.q(ns.RIM, "RegistryObjectList")))


TARGET = "urn:uuid:11111111-1111-4111-8111-111111111111"


def test_an_availability_update_validates_and_decides_a_deprecation():
    pid = new_patient()
    objects = _status_update(pid, TARGET)
    assert metadata_update.validate(objects, CodeSets(), DOMAIN) == []
    submission.plan(objects)
    state = submission.RegistryState(patients={pid: None}, objects={
        TARGET: submission.Existing(TARGET, "document_entry", ebrim.APPROVED, pid)})
    errors, changes = metadata_update.decide(objects, state)
    assert errors == [] and [(c.document, c.new) for c in changes] == [(TARGET, ebrim.DEPRECATED)]


@pytest.mark.parametrize(("original", "new", "slot"), [
    (ebrim.APPROVED, ebrim.APPROVED, ""),                     # the same status twice
    (ebrim.APPROVED, "urn:oasis:names:tc:ebxml-regrep:StatusType:Gone", ""),
    ("Approved", ebrim.DEPRECATED, ""),                       # not the full URN
    (ebrim.APPROVED, ebrim.DEPRECATED, "PreviousVersion"),    # a slot of another operation
])
def test_malformed_availability_updates_are_operation_errors(original, new, slot):
    errors = metadata_update.validate(_status_update(new_patient(), TARGET, original, new, slot), CodeSets(), DOMAIN)
    assert errors and {e.code for e in errors} == {"XDSMetadataUpdateOperationError"}


@pytest.mark.parametrize(("kind", "status", "owner", "code"), [
    (None, None, None, "XDSMetadataUpdateError"),                                  # not registered
    ("document_entry", ebrim.DEPRECATED, "same", "XDSMetadataUpdateError"),        # not in OriginalStatus
    ("document_entry", ebrim.APPROVED, "other", "XDSPatientIDReconciliationError"),
    ("folder", ebrim.APPROVED, "same", "XDSMetadataUpdateOperationError"),         # only DocumentEntries here
])
def test_availability_update_decisions_against_the_registry(kind, status, owner, code):
    pid = new_patient()
    objects = _status_update(pid, TARGET)
    submission.plan(objects)
    known = {} if kind is None else {
        TARGET: submission.Existing(TARGET, kind, status, pid if owner == "same" else new_patient())}
    errors, changes = metadata_update.decide(objects, submission.RegistryState(patients={pid: None}, objects=known))
    assert [e.code for e in errors] == [code] and changes == []


# ---------------------------------------------------------------- code sets

IMAGES = ("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1")


def test_the_shipped_code_sets_are_used_when_no_codes_file_is_named():
    sets = codes.from_config(True)
    assert sets.allows(ebrim.DE_CLASS_CODE, *IMAGES)
    assert not sets.allows(ebrim.DE_CLASS_CODE, "NOT-A-CLASS", IMAGES[1])
    assert "application/dicom" in sets.mime_types
    assert not codes.from_config(False).enabled


def test_a_codes_file_replaces_the_shipped_sets_in_our_format_or_the_nist_kits(tmp_path):
    ours = tmp_path / "domain.toml"
    ours.write_text(f'[DocumentEntry.classCode]\nclassScheme = "{ebrim.DE_CLASS_CODE}"\n'
                    'codes = [{ code = "SCANS", codingScheme = "1.2.3", display = "Scans" }]\n'
                    '[DocumentEntry.mimeType]\ncodes = ["application/pdf"]\n')
    nist = tmp_path / "codes.xml"
    nist.write_text(f'<?xml version="1.0"?><Codes><CodeType name="classCode" classScheme="{ebrim.DE_CLASS_CODE}">'
                    '<Code code="SCANS" display="Scans" codingScheme="1.2.3"/></CodeType>'
                    '<CodeType name="mimeType"><Code code="application/pdf" ext="pdf"/></CodeType></Codes>')
    for path in (ours, nist):
        sets = codes.from_config(True, str(path))
        assert sets.by_scheme == {ebrim.DE_CLASS_CODE: {("SCANS", "1.2.3")}} and sets.mime_types == {"application/pdf"}
        assert not sets.allows(ebrim.DE_CLASS_CODE, *IMAGES)
        assert sets.allows(ebrim.DE_TYPE_CODE, "anything", "1.2.3")   # an attribute without a set is not checked


def test_a_broken_codes_file_is_a_one_line_configuration_error(tmp_path):
    broken = tmp_path / "domain.toml"
    broken.write_text('[DocumentEntry.classCode]\ncodes = []\n')
    for path in (broken, tmp_path / "absent.toml"):
        with pytest.raises(ConfigError, match=str(path)):
            codes.from_config(True, str(path))


@needs(KIT)
def test_the_shipped_code_sets_hold_the_connectathon_codes_of_the_kit():
    shipped, kit = codes.load(codes.SHIPPED), codes.load(KIT / "codes.xml")
    assert shipped.mime_types == kit.mime_types
    # The kit also lists associationDocumentation codes, which no registry rule reads.
    assert shipped.by_scheme == {s: c for s, c in kit.by_scheme.items() if s in shipped.by_scheme}
    assert len(shipped.by_scheme) == len(kit.by_scheme) - 1
