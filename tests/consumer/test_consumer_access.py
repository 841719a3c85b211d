"""Access control at the consumer's JSON door (issue 16): fetches and jobs (they list patient ids) need
a token; starting a fetch needs the role operator. curl is the client."""
from __future__ import annotations

import json

import pytest

from tests import hostile
from tests.hospital import HOSP_B
from tests.services import free_port, launch, new_token


@pytest.fixture(scope="module")
def consumer(new_database, tmp_path_factory):
    mllp, http, dicom, nobody = free_port(), free_port(), free_port(), free_port()
    database = new_database()
    proc, _ = launch("consumer", tmp_path_factory.mktemp("consumer-access"), database, {
        "mllp_port": mllp, "http_port": http, "dicom_port": dicom, "pix": f"127.0.0.1:{nobody}",
        "registry_url": f"http://127.0.0.1:{nobody}/registry", "local_pacs": f"LOCALPACS@127.0.0.1:{nobody}",
        "retry_base_seconds": 600}, [mllp, http, dicom])
    yield f"http://127.0.0.1:{http}", database
    proc.terminate()
    proc.wait(timeout=30)


def fetch_body() -> str:
    return json.dumps({"patient": f"ACC1^^^&{HOSP_B}&ISO"})


def test_fetches_and_jobs_need_credentials(consumer):
    http, _ = consumer
    for path in ("/fetches", "/fetches/1", "/jobs", "/jobs/1", "/jobs?patient=X"):
        assert hostile.curl(f"{http}{path}", token="")[0] == 401, path
    assert hostile.curl(f"{http}/fetches", "--data-binary", fetch_body(), token="")[0] == 401
    assert hostile.curl(f"{http}/health", token="")[0] == 200
    assert hostile.curl(f"{http}/metrics", token="")[0] == 200


def test_a_reader_sees_fetches_and_only_an_operator_starts_one(consumer):
    http, database = consumer
    reader = new_token(database, "ward.reader", "reader")
    reviewer = new_token(database, "ward.reviewer", "reviewer")
    assert hostile.curl(f"{http}/fetches", token=reader)[0] == 200
    assert hostile.curl(f"{http}/jobs", token=reader)[0] == 200
    for token in (reader, reviewer):
        status, body = hostile.curl(f"{http}/fetches", "--data-binary", fetch_body(), token=token)
        assert status == 403 and "operator" in json.loads(body)["error"], body
    status, body = hostile.curl(f"{http}/fetches", "--data-binary", fetch_body())    # the tests' operator
    assert status == 202, body
