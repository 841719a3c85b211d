"""The Audit Record Repository over its real sockets: our sender's records over UDP, plain TCP and mutual TLS,
stored with their fields and found again by ITI-81 (FHIR AuditEvent search) and ``xdsi audit search``; hostile
input kept or refused without harm; a repository that is down loses nothing."""
from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import psycopg
import pytest
from dataclasses import replace

from affinity_domain import audit_codes as c
from affinity_domain import config as config_mod
from affinity_domain.audit import Recorder, events, syslog
from affinity_domain.audit.message import AuditSource, to_xml
from tests.audit.conftest import start_arr
from tests.services import ROOT


def recorder(tmp_path, destinations: list[str], pki=None, **settings) -> Recorder:
    env = {"XDSI_AUDIT_DESTINATIONS": json.dumps(destinations), "XDSI_AUDIT_RETRY_BASE_SECONDS": "0.2",
           "XDSI_AUDIT_RETRY_MAX_SECONDS": "0.5", "XDSI_AUDIT_SEND_TIMEOUT": "5",
           **{f"XDSI_AUDIT_{k.upper()}": str(v) for k, v in settings.items()}}
    if pki is not None:
        env.update(XDSI_TLS_CERT=str(pki.client_cert), XDSI_TLS_KEY=str(pki.client_key), XDSI_TLS_CA=str(pki.ca_cert))
    return Recorder(config_mod.load(None, tmp_path, environ=env), "tests")


def search(arr, query: str) -> dict:
    with urllib.request.urlopen(f"{arr.http}/AuditEvent?{query}", timeout=10, context=arr.context) as r:
        assert r.headers["Content-Type"] == "application/fhir+json"
        return json.load(r)


def wait_found(arr, query: str, count: int = 1, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e["resource"] for e in search(arr, query)["entry"]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def a_query(patient: str, outcome: int = c.SUCCESS, user: str = "http://example.org/consumer"):
    return events.iti18_registry_stored_query(
        consumer=events.source(user, host="127.0.0.1"), registry=events.destination("http://127.0.0.1:8010/registry"),
        query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", request=b"<AdhocQueryRequest/>", patient=patient,
        outcome=outcome)


def new_patient() -> str:
    return f"P{uuid.uuid4().hex[:10]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def test_udp_record_is_stored_and_found_by_iti81(arr, tmp_path):
    r = recorder(tmp_path, [f"udp://127.0.0.1:{arr.udp_port}"]).start()
    patient = new_patient()
    r.record(a_query(patient))
    [event] = wait_found(arr, f"patient={patient.split('^')[0]}")
    r.stop()
    assert event["type"] == {"system": c.FHIR_DCM, "code": "110112", "display": "Query"}
    assert event["subtype"] == [{"system": c.FHIR_IHE_EVENT_TYPE, "code": "ITI-18", "display": "Registry Stored Query"}]
    assert event["action"] == "E" and event["outcome"] == "0"
    assert event["source"]["observer"]["display"].startswith("tests@")
    [patient_entity] = [e for e in event["entity"] if e.get("role", {}).get("code") == "1"]
    assert patient_entity["what"]["identifier"]["value"] == patient
    [query] = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    assert base64.b64decode(query["query"]) == b"<AdhocQueryRequest/>"
    assert {a["who"]["identifier"]["value"] for a in event["agent"]} == {"http://example.org/consumer",
                                                                         "http://127.0.0.1:8010/registry"}


def test_tcp_octet_counting_and_search_criteria(arr, tmp_path):
    """No [tls]: the sender reaches the loopback ARR over plain TCP (RFC 6587), and ITI-81 narrows by patient,
    type, user, outcome and date."""
    r = recorder(tmp_path, [f"tls://127.0.0.1:{arr.tls_port}"]).start()
    patient, other = new_patient(), new_patient()
    r.record(a_query(patient))
    r.record(a_query(patient, outcome=c.SERIOUS_FAILURE, user="mallory"))
    r.record(events.patient_record(action=c.UPDATE, user=events.Participant("reviewer:bob", True),
                                   patients=[patient], transaction=c.ITI_8))
    r.record(a_query(other))
    assert len(wait_found(arr, f"patient={quote(patient)}", 3)) == 3
    r.stop()
    pid = patient.split("^")[0]
    assert len(search(arr, f"patient={pid}&type=ITI-18")["entry"]) == 2
    assert len(search(arr, f"patient={pid}&type=110110")["entry"]) == 1
    assert len(search(arr, f"patient={pid}&subtype=urn:ihe:event-type-code|ITI-8")["entry"]) == 1
    assert len(search(arr, f"patient={pid}&outcome=8")["entry"]) == 1
    assert len(search(arr, f"patient={pid}&user=mallory")["entry"]) == 1
    assert len(search(arr, f"patient.identifier=urn:oid:1.3.6.1.4.1.21367.2005.13.20.1000%7C{pid}")["entry"]) == 3
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(search(arr, f"patient={pid}&date=ge{today}")["entry"]) == 3
    assert len(search(arr, f"patient={pid}&date=lt{today}")["entry"]) == 0
    assert len(search(arr, f"patient={pid}&_count=2")["entry"]) == 2
    # newest first; one record read by id
    first = search(arr, f"patient={pid}")["entry"][0]["resource"]
    with urllib.request.urlopen(f"{arr.http}/AuditEvent/{first['id']}", timeout=10) as resp:
        assert json.load(resp) == first


def test_iti81_refuses_what_it_cannot_answer(arr):
    for query in ("pateint=X", "date=yesterday", "outcome=3", "_count=0"):
        with pytest.raises(urllib.error.HTTPError) as e:
            search(arr, query)
        assert e.value.code == 400
        assert json.load(e.value)["resourceType"] == "OperationOutcome"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{arr.http}/AuditEvent/999999999", timeout=10)
    assert e.value.code == 404


def test_mutual_tls(tls_arr, pki, tmp_path):
    r = recorder(tmp_path, [f"tls://127.0.0.1:{tls_arr.tls_port}"], pki=pki).start()
    patient = new_patient()
    r.record(a_query(patient))
    assert len(wait_found(tls_arr, f"patient={quote(patient)}")) == 1
    r.stop()
    # port probes (the fixture's wait for the port) are not Security Alerts...
    assert search(tls_arr, "type=110113")["entry"] == []
    # ...but a client whose certificate another CA signed is refused at the handshake, and that is audited
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.rogue_cert, pki.rogue_key)
    with socket.create_connection(("127.0.0.1", tls_arr.tls_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(syslog.octet_frame(b"<85>1 - - - - - - hello"))
                tls.recv(1)     # TLS 1.3: the refusal of the client certificate arrives after the handshake
    alerts = wait_found(tls_arr, "type=110113")
    assert alerts and alerts[0]["subtype"][0]["code"] == "110126"
    # and a plain TCP client gets nothing stored
    with socket.create_connection(("127.0.0.1", tls_arr.tls_port), timeout=5) as raw:
        raw.sendall(syslog.octet_frame(b"<85>1 - - - - - - plain"))
    time.sleep(0.5)
    with psycopg.connect(tls_arr.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit.record WHERE message LIKE '%plain'").fetchone()[0] == 0


def test_a_repository_that_is_down_loses_nothing(new_database, tmp_path_factory, tmp_path):
    """Records made while the ARR is stopped wait in the spool and arrive when it is back; so do the records a
    killed process left in its spool, sent by the next one."""
    database = new_database()
    arr = start_arr(database, tmp_path_factory.mktemp("arr-down"))
    port, udp, http = arr.tls_port, arr.udp_port, arr.http.rsplit(":", 1)[1]
    arr.stop()
    r = recorder(tmp_path, [f"tcp://127.0.0.1:{port}"]).start()
    patient = new_patient()
    for _ in range(50):
        r.record(a_query(patient))
    time.sleep(1.0)
    assert r.senders[0].failures >= 1
    # a process that recorded and was killed before it could send
    script = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from tests.audit.test_arr_wire import *; "
              f"r = recorder(__import__('pathlib').Path({str(tmp_path)!r}), ['tcp://127.0.0.1:{port}']).start(); "
              f"[r.record(a_query({patient!r})) for _ in range(7)]; import os; os._exit(9)")
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60).returncode == 9
    arr = start_arr(database, arr.tmp, tls_port=port, udp_port=udp, http_port=http)
    try:
        assert len(wait_found(arr, f"patient={quote(patient)}&_count=1000", 57, timeout=30)) == 57
        r.stop()
        assert r.spool.backlog() == 0
    finally:
        arr.stop()


def test_hostile_input_is_kept_or_refused_without_harm(arr):
    """A frame that is not a DICOM audit message is stored as received, with its problem; the connection goes
    on. A frame over max_message_bytes closes that connection only."""
    patient = new_patient()
    good = syslog.format_message(b"<?xml version='1.0'?>" + a_query_xml(patient), hostname="h", app_name="a",
                                 procid="1", time=dt.datetime.now(dt.timezone.utc))
    bad = [b"not syslog at all", b"<85>1 - - - - - - <AuditMessage><unclosed>",
           b'<85>1 - - - - - - <!DOCTYPE x [<!ENTITY e "boom">]><AuditMessage>&e;</AuditMessage>']
    with socket.create_connection(("127.0.0.1", arr.tls_port), timeout=5) as s:
        s.sendall(b"".join(syslog.octet_frame(m) for m in [*bad, good]))
        assert len(wait_found(arr, f"patient={quote(patient)}")) == 1
        s.sendall(b"99999999 " + b"x" * 100)
        s.settimeout(5)
        assert s.recv(10) == b""         # closed by the repository
    with psycopg.connect(arr.database_url) as conn:
        rows = conn.execute("SELECT problem, message FROM audit.record WHERE message = ANY(%s)", (bad,)).fetchall()
    assert sorted(bytes(m) for _, m in rows) == sorted(bad)
    assert all(p for p, _ in rows)
    # still serving
    with socket.create_connection(("127.0.0.1", arr.tls_port), timeout=5) as s:
        patient2 = new_patient()
        same_but_patient = good.replace(patient.split("^")[0].encode(), patient2.split("^")[0].encode())
        s.sendall(syslog.octet_frame(same_but_patient) + b"\n")
        assert len(wait_found(arr, f"patient={quote(patient2)}")) == 1


def a_query_xml(patient: str) -> bytes:
    return to_xml(replace(a_query(patient), source=AuditSource("hostile-test"))).split(b"?>", 1)[1]


def test_a_record_sent_twice_is_stored_once(arr):
    patient = new_patient()
    frame = syslog.format_message(a_query_xml(patient), hostname="h", app_name="a", procid="1",
                                  time=dt.datetime.now(dt.timezone.utc))
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(frame, ("127.0.0.1", arr.udp_port))
    with socket.create_connection(("127.0.0.1", arr.tls_port), timeout=5) as s:
        s.sendall(syslog.octet_frame(frame))
    wait_found(arr, f"patient={quote(patient)}")
    time.sleep(1.0)
    assert len(search(arr, f"patient={quote(patient)}")["entry"]) == 1


def test_command_line_search(arr, tmp_path):
    r = recorder(tmp_path, [f"udp://127.0.0.1:{arr.udp_port}"]).start()
    patient = new_patient()
    r.record(a_query(patient))
    r.record(events.patient_record(action=c.CREATE, user=events.Participant("pix", True), patients=[patient]))
    wait_found(arr, f"patient={quote(patient)}", 2)
    r.stop()
    env = dict(arr.env)
    run = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "audit", "search", "--patient",
                          patient.split("^")[0], "--since", time.strftime("%Y-%m-%d"), "--type", "ITI-18"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "1 record(s)" and "110112,ITI-18" in lines[0] and patient in lines[0]
    run = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "audit", "search", "--patient", patient,
                          "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    events_found = [json.loads(line) for line in run.stdout.splitlines()[:-1]]
    assert {e["type"]["code"] for e in events_found} == {"110112", "110110"}
    # reading the trail is itself audited: each search, by ITI-81 or on the command line, is an Audit Log Used
    used = [e["resource"] for e in search(arr, "type=110101&_count=1000")["entry"]]
    assert any(e["entity"][0]["what"]["identifier"]["value"].startswith("xdsi audit search --patient")
               for e in used)
    assert any("/AuditEvent?patient=" in e["entity"][0]["what"]["identifier"]["value"] for e in used)


def test_an_actor_records_in_one_line_and_its_forked_workers_too(arr, tmp_path):
    """The actors' API: ``audit.start`` (Application Start), ``audit.record`` in the parent and in a worker
    forked after start (its own segment; a worker that exits at once has its records sent by the parent), and
    ``audit.stop`` (Application Stop)."""
    patient = new_patient()
    script = f"""
import os, sys, json
sys.path.insert(0, {str(ROOT)!r})
from affinity_domain import audit, config
from tests.audit.test_arr_wire import a_query
cfg = config.load(None, {str(tmp_path)!r}, environ={{"XDSI_AUDIT_DESTINATIONS": '["udp://127.0.0.1:{arr.udp_port}"]'}})
audit.start(cfg, "worker-test")
child = os.fork()
if child == 0:
    audit.record(a_query({patient!r}, user="child"))
    os._exit(0)
os.waitpid(child, 0)
audit.record(a_query({patient!r}, user="parent"))
audit.stop(timeout=10)
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    found = wait_found(arr, f"patient={quote(patient)}", 2)
    assert {a["who"]["identifier"]["value"] for e in found for a in e["agent"]} >= {"child", "parent"}
    activity = [e["resource"] for e in search(arr, "type=110100&_count=1000")["entry"]
                if any(a["who"]["identifier"]["value"] == "xdsi-worker-test" for a in e["resource"]["agent"])]
    assert sorted(e["subtype"][0]["code"] for e in activity) == ["110120", "110121"]
