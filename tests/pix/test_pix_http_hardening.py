"""The PIX manager's HTTP door under hostile peers: a flood of idle connections, bodies refused from their
Content-Length, bad JSON and parameters answered 400/404/405 with a JSON error (never 500), stalled
requests closed; and /health and /metrics (ITI-8 and ITI-9 counted across its MLLP worker processes)."""
import json
import socket
import time

import pytest

from tests import hostile
from tests.pix.pixmsg import HOSP_A, ack, adt, cx, new_id, query
from tests.services import TEST_TOKEN, start_pix


@pytest.fixture(scope="module")
def pix(new_database, tmp_path_factory):
    """The PIX manager alone (no registry feed), with its default HTTP limits and two MLLP processes."""
    p = start_pix(new_database(), tmp_path_factory.mktemp("pix-http"), registry_feed="")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def impatient_pix(new_database, tmp_path_factory):
    """One whose connections must send a request head within 1 s, a whole request within 2 s, and are
    closed after 1 s idle."""
    p = start_pix(new_database(), tmp_path_factory.mktemp("pix-impatient"), registry_feed="",
                  http_header_seconds=1, http_request_seconds=2, http_idle_seconds=1)
    yield p
    p.stop()


def test_a_flood_of_idle_connections_does_not_keep_a_request_out(pix):
    """Reproduced: 110 idle connections stopped the port from answering /health."""
    idle = hostile.flood(pix.http, 200)
    try:
        status, body = hostile.curl(f"{pix.http}/health", max_time=1)
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = hostile.curl(f"{pix.http}/review", max_time=1)
        assert status == 200 and isinstance(json.loads(body), list)
    finally:
        hostile.close_all(idle)


@pytest.mark.parametrize("query_string,wanted", [
    ("domain=%00&pid=X", "control characters"),         # reproduced: HTTP 500
    ("domain=1.2.3", "domain=OID&pid=ID"),
    ("domain=%FF&pid=X", "UTF-8"),
])
def test_bad_person_parameters_are_400_with_what_is_wrong(pix, query_string, wanted):
    status, body = hostile.curl(f"{pix.http}/persons?{query_string}")
    assert status == 400 and wanted in json.loads(body)["error"]


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/review/1/link", "[]", 400),
    ("POST", "/review/1/link", '"x"', 400),
    ("POST", "/review/1/link", "{not json", 400),
    ("POST", "/review/abc/link", '{"by": "x"}', 400),
    ("POST", "/review/99999999999999999999/break", '{"by": "x"}', 400),
    ("POST", "/review/999999/break", '{"by": "x"}', 404),
    ("POST", "/persons/unlink", '{"domain": 5, "pid": "X", "by": "x"}', 400),
    ("POST", "/persons/unlink", '{"pid": "X", "by": "x"}', 400),
    ("GET", "/review?status=bogus", "", 400),
    ("GET", "/review/abc", "", 400),
    ("GET", "/nothing/here", "", 404),
])
def test_bad_requests_get_a_json_error_never_500(pix, method, path, body, status):
    got, answer = hostile.curl(f"{pix.http}{path}", "-X", method, *(["--data-binary", body] if body else []))
    assert got == status and json.loads(answer)["error"]


@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/review", "GET"), ("DELETE", "/persons", "GET"), ("GET", "/persons/unlink", "POST"),
    ("GET", "/review/1/link", "POST"), ("POST", "/health", "GET"), ("PUT", "/metrics", "GET"),
])
def test_a_known_path_with_the_wrong_method_is_405_with_allow(pix, method, path, allowed):
    host, port, _ = hostile.where(pix.http)
    answer = hostile.request(pix.http, f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0")
    assert answer.status == 405 and answer.headers["allow"] == allowed and answer.json()["error"]


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(pix):
    answer = hostile.head_only(f"{pix.http}/persons/unlink", "POST", 200 * 1024 * 1024)
    assert answer.status == 413 and "65536" in answer.json()["error"]
    assert answer.headers["connection"] == "close"
    answer, sent = hostile.chunked_past(f"{pix.http}/persons/unlink", 65536, "application/json")
    assert answer.status == 413 and sent < 10 * 1024 * 1024


def test_a_client_that_sends_the_refused_body_anyway_gets_the_413(pix):
    status, body = hostile.curl(f"{pix.http}/persons/unlink", "-H", "Expect:", "-H", "Content-Type: application/json",
                                "--data-binary", "@-", stdin=b"[" + b"1," * 1_000_000 + b"1]")
    assert status == 413 and json.loads(body)["error"]


def test_a_client_done_sending_a_refused_body_before_the_answer_still_gets_it(pix):
    host, port, _ = hostile.where(pix.http)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"POST /persons/unlink HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
                  f"Authorization: Bearer {TEST_TOKEN}\r\n\r\n".encode()
                  + b"{" * 100000)
        s.shutdown(socket.SHUT_WR)
        assert hostile.read_answer(s).status == 413


def test_a_request_head_that_never_ends_is_closed(impatient_pix):
    host, port, _ = hostile.where(impatient_pix.http)
    with socket.create_connection((host, port), timeout=5) as s:
        started = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if hostile.closed_by_peer(s, 0.2):
                closed = True
                break
        assert closed and time.monotonic() - started < 8


def test_a_body_that_trickles_past_the_request_deadline_is_closed(impatient_pix):
    host, port, _ = hostile.where(impatient_pix.http)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"POST /persons/unlink HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n".encode())
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 15 and not closed:
            try:
                s.sendall(b" ")
            except OSError:
                break
            closed = hostile.closed_by_peer(s, 0.3)
        assert time.monotonic() - started < 10


def test_an_idle_connection_is_closed(impatient_pix):
    host, port, _ = hostile.where(impatient_pix.http)
    with socket.create_connection((host, port), timeout=5) as s:
        assert hostile.closed_by_peer(s, 8)


def test_health_reports_the_workers_and_metrics_count_iti8_and_iti9_of_every_process(pix):
    status, body = hostile.curl(f"{pix.http}/health")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok", report
    assert {"main", "worker-1"} <= set(report["processes"])
    assert report["processes"]["main"]["workers"]["outbox"]["alive"] is True
    assert report["processes"]["worker-1"]["workers"]["mllp"]["alive"] is True
    ids = [cx(new_id(), HOSP_A) for _ in range(8)]
    for pid in ids:        # a connection each: the kernel spreads them over both processes
        assert ack(pix, adt("A01", pid)) == "AA"
    for pid in ids[:3]:
        assert query(pix, pid)[0] == "AA"
    assert ack(pix, b"MSH|^~\\&|X|Y|Z|W|20240101||ADT^A01^ADT_A01|1|P|2.5\rPID|||\r") != "AA"
    status, body = hostile.curl(f"{pix.http}/metrics")
    text = body.decode()
    assert status == 200
    assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-8", outcome="success") == 8
    assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-8", outcome="failure") == 1
    assert hostile.metric(text, "xdsi_requests_total", transaction="ITI-9", outcome="success") == 3
    assert hostile.metric(text, "xdsi_request_seconds_count", transaction="ITI-8") == 9
    assert hostile.metric(text, "xdsi_worker_alive", worker="outbox") == 1
    assert hostile.metric(text, "xdsi_queue_depth", worker="outbox") == 0
    hostile.curl(f"{pix.http}/review")
    status, body = hostile.curl(f"{pix.http}/metrics")
    assert hostile.metric(body.decode(), "xdsi_requests_total", transaction="GET /review", code="200") >= 1
