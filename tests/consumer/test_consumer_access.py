"""Access control at the consumer's doors (issue 16): fetches and jobs (they list patient ids) need a
token, starting a fetch the role operator (curl is the client); its C-MOVE destination takes
configured peers, and from loopback any AE's C-STORE (DCMTK's echoscu and storescu)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests import hostile
from tests.hospital import HOSP_B
from tests.imaging_source import source_dicom as dd
from tests.services import free_port, launch, new_token, own_address


REMOTE = own_address()


@pytest.fixture(scope="module")
def consumer(new_database, tmp_path_factory):
    mllp, http, dicom, nobody = free_port(), free_port(), free_port(), free_port()
    database = new_database()
    peers = (f'{{ SOURCE = {{ ae_title = "REMOTE_SRC", hosts = ["{REMOTE or "192.0.2.254"}"], roles = ["store"] }}, '
             f'ECHO = {{ ae_title = "ECHO_ONLY", hosts = ["{REMOTE or "192.0.2.254"}"], roles = [] }} }}')
    proc, _ = launch("consumer", tmp_path_factory.mktemp("consumer-access"), database, {
        "mllp_port": mllp, "http_port": http, "dicom_host": "0.0.0.0", "dicom_port": dicom,
        "pix": f"127.0.0.1:{nobody}", "registry_url": f"http://127.0.0.1:{nobody}/registry",
        "local_pacs": f"LOCALPACS@127.0.0.1:{nobody}", "retry_base_seconds": 600, "peers": peers},
        [mllp, http, dicom], env={"XDSI_TLS_ALLOW_PLAINTEXT": "true"})
    proc.dicom_port = dicom
    yield f"http://127.0.0.1:{http}", database, dicom
    proc.terminate()
    proc.wait(timeout=30)


def fetch_body() -> str:
    return json.dumps({"patient": f"ACC1^^^&{HOSP_B}&ISO"})


def test_fetches_and_jobs_need_credentials(consumer):
    http, _, _ = consumer
    for path in ("/fetches", "/fetches/1", "/jobs", "/jobs/1", "/jobs?patient=X"):
        assert hostile.curl(f"{http}{path}", token="")[0] == 401, path
    assert hostile.curl(f"{http}/fetches", "--data-binary", fetch_body(), token="")[0] == 401
    assert hostile.curl(f"{http}/health", token="")[0] == 200
    assert hostile.curl(f"{http}/metrics", token="")[0] == 200


def test_a_reader_sees_fetches_and_only_an_operator_starts_one(consumer):
    http, database, _ = consumer
    reader = new_token(database, "ward.reader", "reader")
    reviewer = new_token(database, "ward.reviewer", "reviewer")
    assert hostile.curl(f"{http}/fetches", token=reader)[0] == 200
    assert hostile.curl(f"{http}/jobs", token=reader)[0] == 200
    for token in (reader, reviewer):
        status, body = hostile.curl(f"{http}/fetches", "--data-binary", fetch_body(), token=token)
        assert status == 403 and "operator" in json.loads(body)["error"], body
    status, body = hostile.curl(f"{http}/fetches", "--data-binary", fetch_body())    # the tests' operator
    assert status == 202, body


def _dcmtk(tool: str, calling: str, host: str, port: int, *files) -> str:
    done = subprocess.run([f"/usr/bin/{tool}", "-v", "-aet", calling, "-aec", "XDSI_CONSUMER", host, str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


@pytest.mark.skipif(REMOTE is None, reason="this machine has no non-loopback address")
def test_the_c_move_destination_takes_configured_peers_only(consumer, tmp_path):
    _, _, dicom = consumer
    stranger = _dcmtk("echoscu", "STRANGER", REMOTE, dicom)
    assert "Calling AE Title Not Recognized" in stranger, stranger
    assert "Association Accepted" in _dcmtk("echoscu", "REMOTE_SRC", REMOTE, dicom)
    study = dd.make_study(tmp_path, "P1", series=1, per_series=1)
    stored = _dcmtk("storescu", "REMOTE_SRC", REMOTE, dicom, *study.files)
    assert "Received Store Response (Success)" in stored, stored
    refused = _dcmtk("storescu", "ECHO_ONLY", REMOTE, dicom, *study.files)
    assert "0x124" in refused.lower() or "not authorized" in refused.lower(), refused
    # From loopback any AE may store (the imaging source of this host, under its own AE title).
    assert "Received Store Response (Success)" in _dcmtk("storescu", "ANY_SOURCE", "127.0.0.1", dicom, *study.files)
