"""The consumer's JSON door under bad input: 400 with a JSON error that says what is wrong (never 500), 404,
405 with Allow, 413 from the Content-Length; /health with its job workers and queues, /metrics with its
orders (MLLP) and API requests. The consumer runs alone: its peers are unreachable, which these need not."""
import json

import pytest

from tests import hostile
from tests.hospital import HOSP_B, order
from tests.services import free_port, launch
from tests.xds import ack_code, mllp_send

PATIENT = f"LOCAL1^^^&{HOSP_B}&ISO"


@pytest.fixture(scope="module")
def consumer(new_database, tmp_path_factory):
    mllp, http, dicom, nobody = free_port(), free_port(), free_port(), free_port()
    proc, _ = launch("consumer", tmp_path_factory.mktemp("consumer-http"), new_database(), {
        "mllp_port": mllp, "http_port": http, "dicom_port": dicom, "pix": f"127.0.0.1:{nobody}",
        "registry_url": f"http://127.0.0.1:{nobody}/registry", "local_pacs": f"LOCALPACS@127.0.0.1:{nobody}",
        "retry_base_seconds": 600}, [mllp, http, dicom])
    yield f"http://127.0.0.1:{http}", ("127.0.0.1", mllp)
    proc.terminate()
    proc.wait(timeout=30)


def post(url: str, body: str) -> tuple[int, dict]:
    status, answer = hostile.curl(url, "-H", "Content-Type: application/json", "--data-binary", body)
    return status, json.loads(answer)


@pytest.mark.parametrize("body,wanted", [
    ("[]", "JSON object, not a list"),             # reproduced: HTTP 500
    ('"x"', "JSON object, not a string"),          # reproduced: HTTP 500
    ('{"patient": 5}', "patient must be a string, not a number"),   # reproduced: HTTP 500
    ("{}", "patient is required"),
    ("{oops", "not JSON"),
    ('{"patient": "X1^^^&1.2.3&ISO"}', "an id of this site's domain"),
    ('{"patient": "^^^&%s&ISO"}' % HOSP_B, "an id of this site's domain"),
    ('{"patient": "X1\\u0000^^^&%s&ISO"}' % HOSP_B, "control characters"),
    ('{"patient": "%s", "modalities": "CT"}' % PATIENT, "modalities must be a list of strings"),
    ('{"patient": "%s", "modalities": [1]}' % PATIENT, "modalities must be a list of strings"),
    ('{"patient": "%s", "since": "yesterday"}' % PATIENT, "since must be an HL7 DTM"),
    ('{"patient": "%s", "since": 2024}' % PATIENT, "since must be a string"),
])
def test_a_bad_fetch_is_400_with_what_is_wrong(consumer, body, wanted):
    http, _ = consumer
    status, answer = post(f"{http}/fetches", body)
    assert status == 400 and wanted in answer["error"], answer


@pytest.mark.parametrize("path,status,wanted", [
    ("/jobs?fetch=abc", 400, "fetch must be a whole number"),        # reproduced: HTTP 500
    ("/jobs?fetch=99999999999999999999", 400, "fetch must be a whole number"),
    ("/jobs?patient=%00", 400, "control characters"),
    ("/jobs?patient=%C3", 400, "UTF-8"),
    ("/fetches/abc", 400, "whole number"),
    ("/fetches/99999999999999999999", 400, "whole number"),
    ("/jobs/-1", 400, "whole number"),
    ("/fetches/987654321", 404, "no such fetch"),
    ("/jobs/987654321", 404, "no such job"),
    ("/nowhere", 404, "nothing at /nowhere"),
])
def test_bad_parameters_are_400_and_unknown_things_404(consumer, path, status, wanted):
    http, _ = consumer
    got, answer = hostile.curl(f"{http}{path}")
    assert got == status and wanted in json.loads(answer)["error"]


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/fetches", "GET, POST"), ("POST", "/jobs", "GET"), ("DELETE", "/jobs/1", "GET"),
    ("POST", "/fetches/1", "GET"), ("POST", "/health", "GET"),
])
def test_the_wrong_method_is_405_with_allow(consumer, method, path, allowed):
    http, _ = consumer
    host, port, _ = hostile.where(http)
    answer = hostile.request(http, f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0")
    assert answer.status == 405 and answer.headers["allow"] == allowed and answer.json()["error"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(consumer):
    http, _ = consumer
    answer = hostile.head_only(f"{http}/fetches", "POST", 200 * 1024 * 1024)
    assert answer.status == 413 and "65536" in answer.json()["error"]


def test_a_good_fetch_is_accepted_and_the_api_counted(consumer):
    http, _ = consumer

    def counted(**labels):
        return hostile.metric(hostile.curl(f"{http}/metrics")[1].decode(), "xdsi_requests_total", **labels)
    before = counted(transaction="POST /fetches", code="400")
    assert post(f"{http}/fetches", "[]")[0] == 400
    status, answer = post(f"{http}/fetches", json.dumps({"patient": PATIENT, "since": "20240101",
                                                         "modalities": ["CT"]}))
    assert status == 202
    got, body = hostile.curl(f"{http}/fetches/{answer['fetch']}")
    assert got == 200 and json.loads(body)["local_patient"] == PATIENT
    got, body = hostile.curl(f"{http}/jobs?fetch={answer['fetch']}")
    assert got == 200 and json.loads(body) == []
    assert counted(transaction="POST /fetches", outcome="success", code="202") == 1
    assert counted(transaction="POST /fetches", outcome="failure", code="400") == before + 1
    assert counted(transaction="GET /fetches/<id>", code="200") == 1


def test_health_reports_workers_and_queues_and_metrics_count_orders(consumer):
    http, mllp = consumer
    assert ack_code(mllp_send(mllp, order("ORDERED1"))) == "AA"
    assert ack_code(mllp_send(mllp, order("X").replace(b"ORM^O01^ORM_O01", b"ADT^A01^ADT_A01"))) == "AR"
    status, body = hostile.curl(f"{http}/health")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok", report
    workers = report["processes"]["main"]["workers"]
    assert workers["orders"]["alive"] and workers["jobs"]["alive"]
    assert workers["fetch-queue"]["queue"] >= 0 and workers["job-queue"]["queue"] == 0
    _, text = hostile.curl(f"{http}/metrics")
    text = text.decode()
    assert hostile.metric(text, "xdsi_requests_total", transaction="orders", outcome="success") == 1
    assert hostile.metric(text, "xdsi_requests_total", transaction="orders", outcome="failure", code="AR/200") == 1
    assert hostile.metric(text, "xdsi_worker_alive", worker="jobs") == 1
    assert 'xdsi_queue_depth{process="main",worker="job-queue"} 0.0' in text
