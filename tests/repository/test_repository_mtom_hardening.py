"""Hostile ITI-41 at the repository: a repeated Content-ID and too many parts or too long part headers are
SOAP faults; a MIME part no Document names is XDSMissingDocumentMetadata (ITI TF-3 Table 4.2.4.1-2); none
of them stores anything or leaves a spool file behind, nor does a client that hangs up mid-body. The
document limit, not the envelope's, applies to the SOAP path, refused from the Content-Length. ITI-41,
RAD-68 and ITI-43 are counted apart in /metrics; /health has the recovery worker."""
import json
import os
import socket

import pytest

from affinity_domain import ns
from tests import hostile
from tests.repository.pnr import (REPOSITORY_UNIQUE_ID, mtom_message, post, provide, provide_body, retrieve, sha1,
                                  with_hash)
from tests.services import start_repository
from tests.xds import Doc, feed, new_patient


@pytest.fixture(scope="module")
def repo(new_database, registry_service, tmp_path_factory):
    r = start_repository(new_database(), registry_service.url, tmp_path_factory.mktemp("repository-mtom"),
                         max_mtom_parts=5, max_mtom_header_bytes=2048, max_request_bytes=100_000,
                         max_document_bytes=2_000_000)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def patient(registry_service):
    pid = new_patient()
    feed(registry_service, pid)
    return pid


def spool_files(repo) -> list:
    return [f for d in (repo.store / "spool").iterdir() if d.is_dir() for f in d.iterdir()]


def stored(repo) -> list:
    return [p for p in repo.store.glob("[0-9a-f][0-9a-f]/**/*") if p.is_file()]


def hostile_provide(repo, patient, parts_of):
    """An ITI-41 of one document whose MIME parts ``parts_of(cid, data)`` makes."""
    data = os.urandom(300)
    doc = with_hash(Doc(), data)
    body, [(cid, _)] = provide_body(patient, [(doc, data)])
    return post(repo.url, *mtom_message(ns.PROVIDE_AND_REGISTER, body, parts_of(cid, data)))


def fault_text(answer) -> str:
    return answer.root.findtext(f".//{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text")


@pytest.mark.parametrize("parts_of,wanted", [
    (lambda cid, data: [(cid, data), (cid, b"other bytes")], "two MIME parts have Content-ID"),
    (lambda cid, data: [(cid, data), ("root@test", b"other")], "two MIME parts have Content-ID <root@test>"),
    (lambda cid, data: [(cid, data)] + [(f"more{n}@x", b"x") for n in range(6)], "more than 5 MIME parts"),
])
def test_hostile_mime_packages_are_faults_and_leave_no_spool_file(repo, patient, parts_of, wanted):
    """Reproduced: a repeated Content-ID left spool files behind until restart."""
    before = stored(repo)
    answer = hostile_provide(repo, patient, parts_of)
    assert answer.status == 400 and wanted in fault_text(answer)
    assert spool_files(repo) == [] and stored(repo) == before


def test_part_headers_over_the_cap_are_a_fault(repo, patient):
    data = os.urandom(300)
    doc = with_hash(Doc(), data)
    body, [(cid, _)] = provide_body(patient, [(doc, data)])
    message, ctype = mtom_message(ns.PROVIDE_AND_REGISTER, body, [(cid, data)])
    message = message.replace(f"Content-ID: <{cid}>".encode(), f"Content-ID: <{cid}>\r\nX-Pad: {'a' * 5000}".encode())
    answer = post(repo.url, message, ctype)
    assert answer.status == 400 and "longer than 2048 bytes" in fault_text(answer)
    assert spool_files(repo) == []


def test_a_part_no_document_names_is_missing_document_metadata(repo, patient):
    before = stored(repo)
    answer = hostile_provide(repo, patient, lambda cid, data: [(cid, data), ("stray@x", b"nobody's")])
    assert answer.status == 200 and answer.status_name == "Failure"
    assert answer.error_codes == ["XDSMissingDocumentMetadata"]
    assert spool_files(repo) == [] and stored(repo) == before


def test_a_client_that_hangs_up_mid_body_leaves_no_spool_file(repo, patient):
    data = os.urandom(1_500_000)
    body, parts = provide_body(patient, [(with_hash(Doc(), data), data)])
    message, ctype = mtom_message(ns.PROVIDE_AND_REGISTER, body, parts)
    host, port, path = hostile.where(repo.url)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(message)}\r\n\r\n".encode() + message[:len(message) // 2])
    ok = with_hash(Doc(), b"after")
    assert provide(repo.url, patient, [(ok, b"after")]).status_name == "Success"
    assert spool_files(repo) == []


def test_the_soap_path_takes_documents_up_to_the_document_limit(repo, patient):
    answer = hostile.head_only(repo.url, "POST", 3_000_000, 'multipart/related; boundary="b"')
    assert answer.status == 413 and b"larger than 2000000 bytes" in answer.body
    big = os.urandom(1_000_000)               # over max_request_bytes, within max_document_bytes
    doc = with_hash(Doc(), big)
    assert provide(repo.url, patient, [(doc, big)]).status_name == "Success"
    got = retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)]).documents()[doc.unique_id][1]
    assert sha1(got) == doc.hash
    assert hostile.head_only(repo.url.replace("/repository", "/health"), "GET", 3_000_000).status == 413


def test_metrics_tell_iti41_rad68_and_iti43_apart_and_health_has_recovery(repo, patient):
    def counted(transaction, outcome, **code):
        text = hostile.curl(repo.url.replace("/repository", "/metrics"))[1].decode()
        return hostile.metric(text, "xdsi_requests_total", transaction=transaction, outcome=outcome, **code)
    wanted = [("ITI-41", "success", {}), ("RAD-68", "success", {}), ("ITI-43", "success", {}),
              ("ITI-41", "failure", {"code": "XDSMissingDocumentMetadata"})]
    before = [counted(t, o, **c) for t, o, c in wanted]
    text_doc, kos = with_hash(Doc(), b"a report"), with_hash(Doc(mime_type="application/dicom"), b"DICM-ish")
    assert provide(repo.url, patient, [(text_doc, b"a report")]).status_name == "Success"
    assert provide(repo.url, patient, [(kos, b"DICM-ish")]).status_name == "Success"
    assert retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, kos.unique_id)]).status_name == "Success"
    assert hostile_provide(repo, patient, lambda cid, data: [(cid, data), ("stray@x", b"")]).status_name == "Failure"
    assert [counted(t, o, **c) for t, o, c in wanted] == [n + 1 for n in before]
    status, body = hostile.curl(repo.url.replace("/repository", "/health"))
    report = json.loads(body)
    assert status == 200 and report["processes"]["main"]["workers"]["recovery"]["alive"] is True
