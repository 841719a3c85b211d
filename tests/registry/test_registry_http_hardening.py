"""The registry's HTTP door under hostile peers: bodies refused from their Content-Length (a SOAP fault,
413) before they are read, chunked ones when they cross the limit, hostile MTOM (a repeated Content-ID,
a part nothing names, too many parts, huge part headers) a SOAP fault; /health and /metrics correct
across its worker processes, and a dead worker process makes it unhealthy."""
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from lxml import etree

from affinity_domain import ns
from tests import hostile
from tests.services import start_registry, wait_until
from tests.xds import APPROVED, FIND_DOCUMENTS, Doc, envelope, feed, new_patient, post, stored_query, submission

SOAP = "application/soap+xml; charset=UTF-8"


@pytest.fixture(scope="module")
def registry(new_database, tmp_path_factory):
    r = start_registry(new_database(), tmp_path_factory.mktemp("registry-http"), max_mtom_parts=50,
                       max_mtom_header_bytes=2048)
    yield r
    r.stop()


def fault_reason(body: bytes) -> str:
    root = etree.fromstring(body)
    return root.findtext(f".//{{{ns.SOAP12}}}Fault/{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text")


def mtom(parts: list[tuple[str, bytes]], includes: list[str], header: str = "") -> tuple[bytes, str]:
    """An ITI-18 as MTOM with ``parts`` (Content-ID, bytes) and a Slot per ``includes`` naming a part."""
    body = stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{new_patient()}'"})
    refs = "".join(f'<x:Extra xmlns:x="urn:x"><xop:Include xmlns:xop="{ns.XOP}" href="cid:{cid}"/></x:Extra>'
                   for cid in includes)
    root = envelope(ns.STORED_QUERY, body).replace(b"</s:Header>", refs.encode() + b"</s:Header>")
    boundary = "b" + uuid.uuid4().hex
    out = [f'--{boundary}\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\n'
           f'Content-ID: <root@x>\r\n\r\n'.encode(), root]
    for cid, data in parts:
        out += [f"\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-ID: <{cid}>\r\n{header}\r\n".encode(), data]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out), (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
                           f'start="<root@x>"; start-info="application/soap+xml"')


def test_a_content_length_over_the_limit_is_a_413_fault_before_the_body_is_read(registry):
    """Reproduced: a request whose Content-Length said 200 MB was read in full, then got 413."""
    answer = hostile.head_only(registry.url, "POST", 200 * 1024 * 1024, SOAP)
    assert answer.status == 413 and "larger than" in fault_reason(answer.body)
    assert answer.headers["connection"] == "close"


def test_a_chunked_body_is_refused_when_it_crosses_the_limit(registry):
    answer, sent = hostile.chunked_past(registry.url, 20 * 1024 * 1024, SOAP, timeout=30)
    assert answer.status == 413 and "larger than" in fault_reason(answer.body)
    assert sent < 60 * 1024 * 1024


def test_an_ordinary_client_sending_a_refused_body_gets_the_fault(registry):
    status, body = hostile.curl(registry.url, "-H", f"Content-Type: {SOAP}", "--data-binary", "@-",
                                stdin=b"<x>" + b"a" * (25 * 1024 * 1024) + b"</x>")
    assert status == 413 and "larger than" in fault_reason(body)


@pytest.mark.parametrize("parts,includes,header,wanted", [
    ([("p1@x", b"one"), ("p1@x", b"two")], ["p1@x"], "", "two MIME parts have Content-ID <p1@x>"),
    ([("p1@x", b"one"), ("p2@x", b"two")], ["p1@x"], "", "MIME part <p2@x> is named by no xop:Include"),
    ([(f"p{n}@x", b"x") for n in range(60)], [f"p{n}@x" for n in range(60)], "", "more than 50 MIME parts"),
    ([("p1@x", b"one")], ["p1@x"], "X-Pad: " + "a" * 4000 + "\r\n", "longer than 2048 bytes"),
])
def test_hostile_mtom_is_a_fault(registry, parts, includes, header, wanted):
    data, ctype = mtom(parts, includes, header)
    r = post(registry.url, data, ctype)
    assert r.status == 400 and wanted in r.root.findtext(f".//{{{ns.SOAP12}}}Text")


def test_metrics_count_every_transaction_once_whichever_process_answered(registry):
    patient = new_patient()
    feed(registry, patient)                              # ITI-8, over MLLP
    query = stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{patient}'",
                                          "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    for _ in range(10):                                  # a connection each: both processes answer some
        assert post(registry.url, envelope(ns.STORED_QUERY, query)).response_status == "Success"
    assert post(registry.url, envelope(ns.REGISTER, submission(patient, [Doc()]))).response_status == "Success"
    unknown = post(registry.url, envelope(ns.REGISTER, submission(new_patient(), [Doc()])))
    assert unknown.error_codes == ["XDSUnknownPatientId"]
    for _ in range(4):
        status, text = hostile.curl(registry.url.replace("/registry", "/metrics"))
        text = text.decode()
        assert status == 200
        assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-18", outcome="success") == 10
        assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-42", outcome="success") == 1
        assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-42", outcome="failure",
                              code="XDSUnknownPatientId") == 1
        assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-8", outcome="success") == 1
        assert hostile.metric(text, "xdsi_request_seconds_count", transaction="ITI-18") == 10
        assert hostile.metric(text, "xdsi_worker_alive", process="main", worker="feed") == 1


def test_health_lists_every_process(registry):
    status, body = hostile.curl(registry.url.replace("/registry", "/health"))
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok" and report["problems"] == []
    assert set(report["processes"]) == {"main", "worker-1"}
    assert report["processes"]["main"]["workers"]["feed"]["alive"] is True


def test_a_dead_worker_process_makes_the_registry_unhealthy(new_database, tmp_path):
    registry = start_registry(new_database(), tmp_path)
    health = registry.url.replace("/registry", "/health")
    try:
        report = wait_until(lambda: (lambda r: r if "worker-1" in r["processes"] else None)(
            json.loads(hostile.curl(health)[1])), 10)
        os.kill(report["processes"]["worker-1"]["pid"], signal.SIGKILL)

        def unhealthy():
            status, body = hostile.curl(health)
            return status == 503 and json.loads(body)
        report = wait_until(unhealthy, 20, 0.5)
        assert report["status"] == "unhealthy" and any("worker-1" in p for p in report["problems"])
        said = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=registry.env,
                              capture_output=True, text=True, timeout=60).stdout
        line = next(line for line in said.splitlines() if line.startswith("registry"))
        assert "unhealthy" in line and "HTTP 503" in line and "worker-1" in line
    finally:
        registry.stop()
