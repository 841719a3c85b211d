"""ITI-20 for a whole ``xdsi demo``: every transaction of the story leaves its audit record in the Audit Record
Repository, as each end records it, read back over ITI-81; and the actors' plain JSON logs carry none of the
story's patient ids (the audit trail is where PHI access is recorded).

One domain (``xdsi up`` on free ports, an ITI-10 subscriber beside it) runs the demo once for the module."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.services import Hl7Receiver, domain_on_free_ports, wait_until

DCM, IHE = "http://dicom.nema.org/resources/ontology/DCM", "urn:ihe:event-type-code"
SOURCE_ROLE, DESTINATION_ROLE = "110153", "110152"

# (recorder, EventID, EventTypeCode or None, EventActionCode, what the record is, patient named)
EXPECTED = [
    ("pix", "110110", "ITI-8", None, "ITI-8 feed received from the hospitals' ADT", True),
    ("pix", "110110", "ITI-8", None, "ITI-8 forward sent to the registry", True),
    ("registry", "110110", "ITI-8", None, "ITI-8 forward received from the PIX manager", True),
    ("pix", "110110", "ITI-10", "U", "ITI-10 notification sent to the subscriber", True),
    ("pix", "110112", "ITI-9", "E", "ITI-9 answered", True),
    ("imaging-source", "110112", "ITI-9", "E", "ITI-9 asked by the imaging source", True),
    ("consumer", "110112", "ITI-9", "E", "ITI-9 asked by the consumer", True),
    ("pix", "110110", None, "R", "a patient's identities read from the PIX admin API", True),
    ("imaging-source", "110104", None, "C", "C-STORE of the study received", True),
    ("imaging-source", "110106", "RAD-68", "R", "RAD-68 manifest exported", True),
    ("repository", "110107", "RAD-68", "C", "RAD-68 manifest imported", True),
    ("repository", "110106", "ITI-42", "R", "ITI-42 registration exported", True),
    ("registry", "110107", "ITI-42", "C", "ITI-42 registration imported", True),
    ("registry", "110112", "ITI-18", "E", "ITI-18 answered", True),
    ("consumer", "110112", "ITI-18", "E", "ITI-18 asked by the consumer", True),
    ("repository", "110106", "ITI-43", "R", "ITI-43 manifest exported", True),
    ("consumer", "110107", "ITI-43", "C", "ITI-43 manifest imported", True),
    ("imaging-source", "110104", "RAD-69", "R", "RAD-69 images sent", True),
    ("consumer", "110104", "RAD-69", "C", "RAD-69 images received", True),
    ("consumer", "110104", None, "R", "C-STORE of the reconciled study into the local PACS", True),
    *[(actor, "110100", "110120", "E", f"{actor} Application Start", False)
      for actor in ("registry", "repository", "pix", "imaging-source", "consumer")],
]


def _code(coding) -> str:
    return coding.get("code", "")


def recorder(event) -> str:
    return event["source"]["observer"]["display"].split("@")[0]


def patients(event) -> list[str]:
    return [e["what"]["identifier"]["value"] for e in event.get("entity", [])
            if e.get("type", {}).get("code") == "1" and e.get("role", {}).get("code") == "1"]


def source_user(event) -> str:
    return next((a["who"]["identifier"]["value"] for a in event["agent"]
                 if _code(a.get("type", {}).get("coding", [{}])[0]) == SOURCE_ROLE), "")


def matches(event, actor, event_id, subtype, action, label) -> bool:
    if recorder(event) != actor or _code(event.get("type", {})) != event_id:
        return False
    if subtype is None:
        if event.get("subtype"):
            return False
    elif subtype not in [_code(s) for s in event.get("subtype", [])]:
        return False
    if action is not None and event.get("action") != action:
        return False
    if "feed received from the hospitals" in label:     # the demo's ADT sends as ADT|HOSP
        return source_user(event) == "ADT|HOSP"
    if "forward" in label:                              # the PIX manager sends as XDSI_PIX|XDSI
        return source_user(event).startswith("XDSI_PIX")
    return True


def search(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/AuditEvent?_count=1000", timeout=10) as r:
        return [e["resource"] for e in json.load(r).get("entry", [])]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, new_database):
    tmp = tmp_path_factory.mktemp("demo-audit")
    subscriber = Hl7Receiver()       # started by its constructor
    moved, ports = domain_on_free_ports()
    env = dict(os.environ, XDSI_DATA_DIR=str(tmp / "data"), XDSI_DATABASE_URL=new_database(), **moved,
               XDSI_PIX_SUBSCRIBERS=f'["127.0.0.1:{subscriber.port}"]', XDSI_IMAGING_SOURCE_QUIET_SECONDS="2")
    log_path = tmp / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "up"], env=env, cwd=tmp,
                              stdout=log, stderr=log, start_new_session=True)
    try:
        import socket

        def listening(port):
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return True
            except OSError:
                return False
        assert wait_until(lambda: all(listening(p) for p in ports), 120), log_path.read_text()[-3000:]
        out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "demo", "--instances", "12"],
                             env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        arr = int(moved["XDSI_AUDIT_HTTP_PORT"])
        found: list[dict] = []

        def all_there():
            found[:] = search(arr)
            return all(any(matches(e, *x[:5]) for e in found) for x in EXPECTED)
        try:
            wait_until(all_there, 60, 1.0)
        except TimeoutError:
            pass            # the test says which are missing
        yield {"events": found, "stdout": out.stdout, "log": log_path, "up": up}
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        subscriber.sock.close()


def test_every_transaction_of_the_demo_is_in_the_audit_repository(demo_run):
    events = demo_run["events"]
    missing = [x[4] for x in EXPECTED if not any(matches(e, *x[:5]) for e in events)]
    assert not missing, f"no audit record for: {missing}"
    for actor, event_id, subtype, action, label, named in EXPECTED:
        for e in [e for e in events if matches(e, actor, event_id, subtype, action, label)]:
            assert e.get("outcome") in ("0", "4", "8", "12"), (label, e)
            assert e["agent"] and all(a["who"]["identifier"]["value"] for a in e["agent"]), (label, e)
            if named:
                assert patients(e), (label, "names no patient", e)
                # the user or AE, with its peer's network address
                assert any(a.get("network", {}).get("address") for a in e["agent"]), (label, e)
    ok = [x for x in EXPECTED if any(matches(e, *x[:5]) and e["outcome"] == "0" for e in events)]
    assert len(ok) == len(EXPECTED), "every step of the demo succeeded, and its records say so"


def test_the_records_name_the_demo_patient(demo_run):
    mrn_a = re.search(r"ITI-8 (A\w+) ", demo_run["stdout"]).group(1)
    named = {p for e in demo_run["events"] for p in patients(e)}
    assert any(p.startswith(f"{mrn_a}^") for p in named)
    stored = [e for e in demo_run["events"] if recorder(e) == "imaging-source" and _code(e["type"]) == "110104"
              and not e.get("subtype")]
    assert any(p.startswith(f"{mrn_a}^") for e in stored for p in patients(e))


def test_the_actors_logs_carry_no_patient_id(demo_run):
    """The demo's three MRNs and the affinity-domain id the PIX manager gave them appear in no actor's log line."""
    stdout = demo_run["stdout"]
    ids = set(re.findall(r"ITI-8 ([ABC]\w+) ", stdout))
    affinity = re.search(r"one person \(([^)^]+)", stdout)
    assert len(ids) == 3 and affinity, stdout
    ids.add(affinity.group(1))
    time.sleep(0.5)
    lines = demo_run["log"].read_text(errors="replace").splitlines()
    assert len(lines) > 20          # the actors did log
    leaking = [line for line in lines if any(i in line for i in ids)]
    assert not leaking, leaking[:5]
