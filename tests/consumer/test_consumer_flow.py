"""Order -> PIX -> registry -> manifest -> images -> reconciled into the local PACS, every actor a real
process, DCMTK storescp as the PACS and dcmdump to check what it received."""
import json
import subprocess
import time
import urllib.request
import uuid


from tests.hospital import HOSP_A, HOSP_B, linked_patient, order, published, send_study, stored_for
from tests.services import TEST_TOKEN, wait_until
from tests.xds import ack_code, mllp_send


def test_order_brings_the_other_sites_study_reconciled(chain, tmp_path):
    a, b = linked_patient(chain)
    study = send_study(chain, tmp_path, a, HOSP_A)
    published(chain, study)                           # quiet period, then RAD-68 and ITI-42
    before = set(chain.pacs.files())
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    done = wait_until(lambda: [j for j in stored_for(chain, b) if j["state"] == "stored"], 90, 0.5)
    assert done[0]["instances_total"] == 12 and done[0]["study_uid"] == study
    states = [h.get("state") for h in done[0]["history"] if h.get("state")]
    assert states == ["found", "manifest", "retrieved", "stored"]
    new = sorted(set(chain.pacs.files()) - before)
    assert len(new) == 12
    dump = subprocess.run(["/usr/bin/dcmdump", str(new[0])], capture_output=True, text=True).stdout
    assert f"[{b}]" in dump and "(0010,0020)" in dump
    assert f"[{HOSP_B}]" in dump                       # Issuer of Patient ID: the local domain
    assert f"[{a}]" in dump                            # the original identity, in Other Patient IDs Sequence
    assert "[A-ACC77]" in dump                         # accession prefixed for the source site
    assert "(0008,0051)" not in dump                   # ... and so no issuer named
    assert "XDSI RECONCILED" in dump                   # the outside-study marker
    # A second identical order stores nothing new.
    count = len(chain.pacs.files())
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    time.sleep(3)
    assert len(chain.pacs.files()) == count and len(stored_for(chain, b)) == 1


def test_own_site_studies_are_not_fetched(chain, tmp_path):
    a, b = linked_patient(chain)
    published(chain, send_study(chain, tmp_path, b, HOSP_B))   # hospital B's own study, published by the source
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    fetch = wait_until(lambda: [f for f in json.load(urllib.request.urlopen(f"{chain.consumer_http}/fetches"))
                                if f["local_patient"].startswith(b + "^") and f["state"] != "new"], 30)
    assert fetch[0]["state"] == "searched" and stored_for(chain, b) == []


def test_unknown_patient_is_recorded_on_the_fetch(chain):
    ghost = f"G{uuid.uuid4().hex[:8]}"
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(ghost))) == "AA"
    fetch = wait_until(lambda: [f for f in json.load(urllib.request.urlopen(f"{chain.consumer_http}/fetches"))
                                if f["local_patient"].startswith(ghost + "^") and f["state"] != "new"], 30)
    assert fetch[0]["state"] == "failed" and "PIX" in fetch[0]["error"]


def test_non_order_messages_are_refused(chain):
    msg = order("X").replace(b"ORM^O01^ORM_O01", b"ADT^A01^ADT_A01")
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), msg)) == "AR"


def test_cli_fetch_with_modality_filter(chain, tmp_path):
    import os
    import sys
    a, b = linked_patient(chain)
    published(chain, send_study(chain, tmp_path, a, HOSP_A, count=4, modality="MR"))
    env = dict(os.environ, XDSI_CONSUMER_HTTP_PORT=chain.consumer_http.rsplit(":", 1)[1], XDSI_TOKEN=TEST_TOKEN)
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "consumer", "fetch", "--patient",
                          f"{b}^^^&{HOSP_B}&ISO", "--modality", "CT", "--timeout", "60"],
                         env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert stored_for(chain, b) == []                 # the MR study is not relevant to a CT-only fetch
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "consumer", "fetch", "--patient",
                          f"{b}^^^&{HOSP_B}&ISO", "--modality", "MR", "--timeout", "60"],
                         env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4/4 instances" in out.stdout
    assert [j["state"] for j in stored_for(chain, b)] == ["stored"]
