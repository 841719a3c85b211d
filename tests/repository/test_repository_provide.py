"""ITI-41 over HTTP against the real registry: MTOM and inline, hash/size, errors passed through."""
from __future__ import annotations

import os

import pytest

from affinity_domain import ns
from tests.repository.pnr import REPOSITORY_UNIQUE_ID
from tests.repository.pnr import NS, mtom_message, post, provide, provide_body, retrieve, sha1, with_hash
from tests.xds import Doc, envelope, feed, new_patient


@pytest.fixture(scope="module")
def patient(registry_service):
    pid = new_patient()
    feed(registry_service, pid)
    return pid


def test_mtom_document_is_stored_registered_and_retrievable(repository, patient):
    data = b"a report\r\n" * 1000
    doc = with_hash(Doc(), data)
    a = provide(repository.url, patient, [(doc, data)])
    assert a.status == 200 and a.status_name == "Success", a.root
    got = retrieve(repository.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)])
    assert got.status_name == "Success"
    assert got.documents() == {doc.unique_id: ("text/plain", data)}


def test_inline_base64_is_accepted_and_hash_size_computed(repository, patient):
    data = os.urandom(5000)
    doc = Doc()      # the helper's hash/size are those of an empty document: drop them
    a = provide(repository.url, patient, [(doc, data)], xop=False, omit_slots=True)
    # size "0" was sent and is wrong, so the repository must refuse
    assert a.status_name == "Failure" and a.error_codes == ["XDSRepositoryMetadataError"]
    doc = with_hash(Doc(), data)
    a = provide(repository.url, patient, [(doc, data)], xop=False)
    assert a.status_name == "Success", a.error_codes
    assert retrieve(repository.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)]).documents()[doc.unique_id][1] == data


def test_repository_sets_hash_size_and_repository_id_in_the_registry(repository, registry_service, patient):
    from tests.xds import post as registry_post, stored_query, envelope as env
    data = b"no hash sent"
    doc = Doc()
    body, parts = provide_body(patient, [(doc, data)], omit_slots=True)
    body = body.replace('<rim:Slot name="size"><rim:ValueList><rim:Value>0</rim:Value></rim:ValueList></rim:Slot>', "")
    a = post(repository.url, *mtom_message(ns.PROVIDE_AND_REGISTER, body, parts))
    assert a.status_name == "Success", a.error_codes
    q = registry_post(registry_service.url, env(ns.STORED_QUERY, stored_query(
        "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4", {"$XDSDocumentEntryUniqueId": f"('{doc.unique_id}')"})))
    [entry] = q.objects("ExtrinsicObject")
    slots = {s.get("name"): s.findtext("rim:ValueList/rim:Value", namespaces=NS)
             for s in entry.iterfind("rim:Slot", NS)}
    assert slots["hash"] == sha1(data) and slots["size"] == str(len(data))
    assert slots["repositoryUniqueId"] == REPOSITORY_UNIQUE_ID


def test_uppercase_hash_is_accepted(repository, patient):
    data = b"upper"
    doc = with_hash(Doc(), data)
    doc.hash = doc.hash.upper()
    assert provide(repository.url, patient, [(doc, data)]).status_name == "Success"


@pytest.mark.parametrize("field", ["hash", "size"])
def test_wrong_hash_or_size_is_a_repository_metadata_error_and_nothing_is_kept(repository, patient, field):
    data = b"the real content"
    doc = with_hash(Doc(), data)
    setattr(doc, field, "0" * 40 if field == "hash" else "3")
    a = provide(repository.url, patient, [(doc, data)])
    assert a.status_name == "Failure" and a.error_codes == ["XDSRepositoryMetadataError"]
    r = retrieve(repository.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)])
    assert r.status_name == "Failure" and r.error_codes == ["XDSDocumentUniqueIdError"]


def test_metadata_without_document_and_document_without_metadata(repository, patient):
    doc = with_hash(Doc(), b"x")
    body, _ = provide_body(patient, [(doc, b"x")], xop=False)
    no_doc = body.replace(body[body.index("<xdsb:Document "):body.index("</xdsb:ProvideAndRegister")], "")
    a = post(repository.url, envelope(ns.PROVIDE_AND_REGISTER, no_doc), "application/soap+xml")
    assert a.error_codes == ["XDSMissingDocument"]
    extra = body.replace("</xdsb:ProvideAndRegisterDocumentSetRequest>",
                         '<xdsb:Document id="Stray">eHl6</xdsb:Document></xdsb:ProvideAndRegisterDocumentSetRequest>')
    a = post(repository.url, envelope(ns.PROVIDE_AND_REGISTER, extra), "application/soap+xml")
    assert a.error_codes == ["XDSMissingDocumentMetadata"]


def test_registry_errors_come_back_unchanged(repository, patient):
    data = b"unknown patient"
    a = provide(repository.url, new_patient(), [(with_hash(Doc(), data), data)])
    assert a.status_name == "Failure" and a.error_codes == ["XDSUnknownPatientId"]
    doc = with_hash(Doc(patient=new_patient()), data)
    a = provide(repository.url, patient, [(doc, data)])
    assert a.error_codes == ["XDSPatientIdDoesNotMatch"]


def test_two_documents_and_a_partial_retrieve(repository, patient):
    one, two = os.urandom(70_000), b"second"
    d1, d2 = with_hash(Doc(id="Document01"), one), with_hash(Doc(id="Document02"), two)
    a = provide(repository.url, patient, [(d1, one), (d2, two)])
    assert a.status_name == "Success", a.error_codes
    home = "urn:oid:1.3.6.1.4.1.21367.13.70.200"
    r = retrieve(repository.url, [(REPOSITORY_UNIQUE_ID, d1.unique_id), (REPOSITORY_UNIQUE_ID, "1.2.3.404"),
                                  (REPOSITORY_UNIQUE_ID, d2.unique_id)], home=home)
    assert r.content_type.startswith("multipart/related") and 'type="application/xop+xml"' in r.content_type
    assert r.status_name == "PartialSuccess" and r.error_codes == ["XDSDocumentUniqueIdError"]
    assert r.documents() == {d1.unique_id: ("text/plain", one), d2.unique_id: ("text/plain", two)}
    assert {h.text for h in r.payload.iterfind(".//xdsb:HomeCommunityId", NS)} == {home}
    assert r.root.findtext("s:Header/wsa:Action", namespaces=NS) == "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    r = retrieve(repository.url, [("1.2.3.4.5", d1.unique_id)], mtom=False)
    assert r.status_name == "Failure" and r.error_codes == ["XDSUnknownRepositoryId"]


def test_a_resubmitted_document_keeps_one_copy_of_its_bytes(repository, patient):
    data = os.urandom(20_000)
    for _ in range(2):
        a = provide(repository.url, patient, [(with_hash(Doc(), data), data)])
        assert a.status_name == "Success"
    copies = [p for p in repository.store.rglob(sha1(data))]
    assert len(copies) == 1


def test_xop_reference_to_a_missing_part_and_base64_garbage(repository, patient):
    data = b"content"
    doc = with_hash(Doc(), data)
    body, parts = provide_body(patient, [(doc, data)])
    a = post(repository.url, *mtom_message(ns.PROVIDE_AND_REGISTER, body, [("other@test", data)]))
    # The Document names a part that is not there; the part there is named by no Document.
    assert a.status == 200 and a.error_codes == ["XDSMissingDocument", "XDSMissingDocumentMetadata"]
    body, _ = provide_body(patient, [(doc, data)], xop=False)
    garbage = body.replace(body[body.index('<xdsb:Document id="Document01">') + 31:body.index("</xdsb:Document>")],
                           "@@not base64!!")
    a = post(repository.url, envelope(ns.PROVIDE_AND_REGISTER, garbage), "application/soap+xml")
    assert a.status == 200 and a.error_codes == ["XDSMissingDocument"]


def test_broken_multipart_bodies_get_soap_faults_and_the_service_keeps_serving(repository, patient):
    data = os.urandom(300_000)
    doc = with_hash(Doc(), data)
    body, parts = provide_body(patient, [(doc, data)])
    message, ctype = mtom_message(ns.PROVIDE_AND_REGISTER, body, parts)
    broken = {
        "truncated": (message[:len(message) // 2], ctype),
        "never closes": (message[:-len("--\r\n")] + b"\r\n", ctype),
        "no start part": (message, ctype.replace('start="<root@test>"', 'start="<nowhere@test>"')),
        "no boundary": (message, ctype.replace("boundary=", "x-boundary=")),
    }
    for name, (m, ct) in broken.items():
        a = post(repository.url, m, ct)
        assert a.status == 400, name
        assert a.payload.tag == "{http://www.w3.org/2003/05/soap-envelope}Fault", name
    spool = repository.store / "spool"
    assert not [f for d in spool.iterdir() for f in d.iterdir()], "spool files left behind"
    assert provide(repository.url, patient, [(doc, data)]).status_name == "Success"
