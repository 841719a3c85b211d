"""ITI-42 over HTTP against the running registry: acceptance, every rejection code, all-or-nothing."""
import pytest

from affinity_domain import ns
from tests.services import start_registry
from tests.xds import (APPROVED, DEPRECATED, Doc, association, envelope, feed,
                 mtom, new_oid, new_patient, post, stored_query, submission)

GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
GET_FOLDER_AND_CONTENTS = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"


@pytest.fixture
def patient(registry):
    pid = new_patient()
    feed(registry, pid)
    return pid


def register(registry, body: str):
    return post(registry.url, envelope(ns.REGISTER, body))


def documents(registry, uids: list[str]):
    r = post(registry.url, envelope(ns.STORED_QUERY, stored_query(GET_DOCUMENTS, {
        "$XDSDocumentEntryUniqueId": "(" + ",".join(f"'{u}'" for u in uids) + ")"})))
    assert r.response_status == "Success", r.body
    return r.objects("ExtrinsicObject")


def test_registration_assigns_uuids_lid_version_and_status(registry, patient):
    doc = Doc()
    r = register(registry, submission(patient, [doc]))
    assert (r.status, r.response_status, r.action) == (200, "Success", ns.REGISTER + "Response")
    assert r.relates_to and r.relates_to.startswith("urn:uuid:")
    [entry] = documents(registry, [doc.unique_id])
    assert entry.get("id").startswith("urn:uuid:") and entry.get("lid") == entry.get("id")
    assert entry.get("status") == APPROVED
    assert entry.find("{*}VersionInfo").get("versionName") == "1"
    refs = {c.get("classifiedObject") for c in entry.iterfind("{*}Classification")}
    assert refs == {entry.get("id")}


def test_mtom_request_gets_an_mtom_answer(registry, patient):
    body, ctype = mtom(envelope(ns.REGISTER, submission(patient, [Doc()])), ns.REGISTER)
    r = post(registry.url, body, ctype)
    assert r.status == 200 and r.content_type.startswith("multipart/related")
    assert r.response_status == "Success"


def test_unknown_patient(registry):
    r = register(registry, submission(new_patient(), [Doc()]))
    assert r.response_status == "Failure" and r.error_codes == ["XDSUnknownPatientId"]


def test_patient_outside_the_affinity_domain(registry):
    r = register(registry, submission("X1^^^&1.2.3.999&ISO", [Doc()]))
    assert "XDSUnknownPatientId" in r.error_codes


def test_patient_mismatch_between_submission_set_and_document(registry, patient):
    other = new_patient()
    feed(registry, other)
    r = register(registry, submission(patient, [Doc(patient=other)]))
    assert r.error_codes == ["XDSPatientIdDoesNotMatch"]


@pytest.mark.parametrize("field,bad", [("creation_time", "2024-01-01"), ("hash", "xyz"),
                                       ("class_code", ("NOPE", "1.2.3")), ("unique_id", "not an oid")])
def test_malformed_or_uncoded_values_are_metadata_errors(registry, patient, field, bad):
    doc = Doc()
    setattr(doc, field, bad)
    r = register(registry, submission(patient, [doc]))
    assert r.response_status == "Failure" and set(r.error_codes) == {"XDSRegistryMetadataError"}


TEXT_FORMAT = ("urn:ihe:rad:TEXT", "1.3.6.1.4.1.19376.1.2.3")


@pytest.mark.parametrize("unique_id,format_code", [
    ("1.2.3^../../../../q38", Doc.format_code),     # a KOS manifest's uniqueId is its SOP Instance UID
    ("1.2.3^x", Doc.format_code), ("1.2.3^" + "x" * 17, TEXT_FORMAT), ("1.2.3^", TEXT_FORMAT),
    ("1.2.3^a^b", TEXT_FORMAT)])
def test_a_unique_id_its_format_does_not_allow_is_a_metadata_error(registry, patient, unique_id, format_code):
    r = register(registry, submission(patient, [Doc(unique_id=unique_id, format_code=format_code)]))
    assert r.response_status == "Failure" and set(r.error_codes) == {"XDSRegistryMetadataError"}
    assert documents(registry, [unique_id]) == []


def test_oid_with_an_extension_is_a_unique_id_for_other_formats(registry, patient):
    doc = Doc(unique_id=f"{new_oid()}^ABC-1234567890", format_code=TEXT_FORMAT)
    assert register(registry, submission(patient, [doc])).response_status == "Success"
    assert len(documents(registry, [doc.unique_id])) == 1


@pytest.mark.parametrize("bad", ["1.2.3^x", "../q38", "1.2.03"])
def test_submission_set_unique_id_must_be_an_oid(registry, patient, bad):
    r = register(registry, submission(patient, [Doc()], ss_unique_id=bad))
    assert r.response_status == "Failure" and set(r.error_codes) == {"XDSRegistryMetadataError"}


def test_document_not_member_of_submission_set(registry, patient):
    body = submission(patient, [Doc()]).replace(
        'associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" '
        'sourceObject="SubmissionSet01" targetObject="Document01"',
        'associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" '
        'sourceObject="SubmissionSet01" targetObject="urn:uuid:00000000-0000-4000-8000-000000000000"')
    r = register(registry, body)
    assert "XDSRegistryMetadataError" in r.error_codes


def test_resubmitted_unique_id_same_hash_accepted_other_hash_rejected(registry, patient):
    doc = Doc()
    assert register(registry, submission(patient, [doc])).response_status == "Success"
    assert register(registry, submission(patient, [doc])).response_status == "Success"
    changed = Doc(unique_id=doc.unique_id, hash="0" * 40)
    r = register(registry, submission(patient, [changed]))
    assert r.error_codes == ["XDSNonIdenticalHash"]
    assert len(documents(registry, [doc.unique_id])) == 2


def test_duplicate_submission_set_unique_id(registry, patient):
    uid = new_oid()
    assert register(registry, submission(patient, [Doc()], ss_unique_id=uid)).response_status == "Success"
    second = Doc()
    r = register(registry, submission(patient, [second], ss_unique_id=uid))
    assert r.error_codes == ["XDSDuplicateUniqueIdInRegistry"]
    assert documents(registry, [second.unique_id]) == []


def test_all_or_nothing_when_one_document_is_bad(registry, patient):
    good, bad = Doc(id="Document01"), Doc(id="Document02", hash="nothex")
    r = register(registry, submission(patient, [good, bad]))
    assert r.response_status == "Failure"
    assert documents(registry, [good.unique_id, bad.unique_id]) == []


def _entry_uuid(registry, uid):
    [entry] = documents(registry, [uid])
    return entry.get("id")


def test_replace_deprecates_original_and_its_addenda_and_joins_folders(registry, patient):
    original = Doc()
    body = submission(patient, [original], folders=["Folder01"],
                      extra=association("HasMember", "Folder01", "Document01", id="link") +
                      association("HasMember", "SubmissionSet01", "link"))
    assert register(registry, body).response_status == "Success"
    original_id = _entry_uuid(registry, original.unique_id)
    addendum = Doc(id="Document02")
    r = register(registry, submission(patient, [addendum], extra=association("APND", "Document02", original_id)))
    assert r.response_status == "Success", r.body
    replacement = Doc(id="Document03")
    r = register(registry, submission(patient, [replacement], extra=association("RPLC", "Document03", original_id)))
    assert r.response_status == "Success", r.body
    status = {e.get("id"): e.get("status") for e in documents(
        registry, [original.unique_id, addendum.unique_id, replacement.unique_id])}
    assert sorted(status.values()) == [APPROVED, DEPRECATED, DEPRECATED]
    assert status[_entry_uuid(registry, replacement.unique_id)] == APPROVED
    # The replacement joined the original's folder.
    q = post(registry.url, envelope(ns.STORED_QUERY, stored_query(
        "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578",
        {"$XDSDocumentEntryUniqueId": f"'{replacement.unique_id}'"})))
    assert len(q.objects("RegistryPackage")) == 1


def test_replacing_a_deprecated_or_missing_document_fails(registry, patient):
    original = Doc()
    assert register(registry, submission(patient, [original])).response_status == "Success"
    oid = _entry_uuid(registry, original.unique_id)
    assert register(registry, submission(patient, [Doc()], extra=association("RPLC", "Document01", oid))
                    ).response_status == "Success"
    again = register(registry, submission(patient, [Doc()], extra=association("RPLC", "Document01", oid)))
    assert again.error_codes == ["XDSRegistryDeprecatedDocumentError"]
    missing = register(registry, submission(patient, [Doc()], extra=association(
        "RPLC", "Document01", "urn:uuid:11111111-1111-4111-8111-111111111111")))
    assert missing.error_codes == ["XDSRegistryMetadataError"]


def test_replacement_of_another_patients_document(registry, patient):
    other = new_patient()
    feed(registry, other)
    original = Doc()
    assert register(registry, submission(other, [original])).response_status == "Success"
    r = register(registry, submission(patient, [Doc()], extra=association(
        "RPLC", "Document01", _entry_uuid(registry, original.unique_id))))
    assert r.error_codes == ["XDSPatientIdDoesNotMatch"]


def test_folder_last_update_time_moves_when_a_document_is_added(registry, patient):
    body = submission(patient, [], folders=["Folder01"])
    assert register(registry, body).response_status == "Success", body
    fol_uid = body.split('identificationScheme="urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a" '
                         'value="')[1].split('"')[0]

    def folder():
        r = post(registry.url, envelope(ns.STORED_QUERY, stored_query(GET_FOLDER_AND_CONTENTS,
                                                            {"$XDSFolderUniqueId": f"'{fol_uid}'"})))
        [f] = r.objects("RegistryPackage")
        time_ = [s for s in f.iterfind("{*}Slot")
                 if s.get("name") == "lastUpdateTime"][0].findtext("{*}ValueList/{*}Value")
        return f.get("id"), time_, r.objects("ExtrinsicObject")

    fid, before, docs = folder()
    assert docs == []
    import time
    time.sleep(1.1)
    r = register(registry, submission(patient, [Doc()], extra=association("HasMember", fid, "Document01", id="link")
                                      + association("HasMember", "SubmissionSet01", "link")))
    assert r.response_status == "Success", r.body
    _, after, docs = folder()
    assert len(docs) == 1 and after > before


def test_a_new_registry_checks_codes_against_the_shipped_code_sets(new_database, tmp_path):
    """Out of the box, with no codes_file (set empty here, so no environment can supply one), the registry
    holds classCode to the code sets it ships with."""
    fresh = start_registry(new_database(), tmp_path, codes_file="")
    try:
        pid = new_patient()
        feed(fresh, pid)
        unknown = register(fresh, submission(pid, [Doc(class_code=("NOT-A-CLASS", "1.3.6.1.4.1.19376.1.2.6.1"))]))
        assert unknown.response_status == "Failure" and unknown.error_codes == ["XDSRegistryMetadataError"]
        assert b"NOT-A-CLASS" in unknown.body
        known = register(fresh, submission(pid, [Doc(class_code=("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1"))]))
        assert known.response_status == "Success", known.body
    finally:
        fresh.stop()
