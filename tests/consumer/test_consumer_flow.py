"""Order -> PIX -> registry -> manifest -> images -> reconciled into the local PACS, every actor a real
process, DCMTK storescp as the PACS and dcmdump to check what it received."""
import json
import subprocess
import time
import urllib.request
import uuid

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from services import DCMTK_ENV, wait_until
from xds import ack_code, mllp_send

HOSP_A, HOSP_B = "1.3.6.1.4.1.21367.2005.13.20.3000", "1.3.6.1.4.1.21367.2005.13.20.2000"


def adt(pid, oid, family="Nakamura", given="Hiro", dob="19650202", sex="M"):
    return (f"MSH|^~\\&|ADT|H|PIX|X|{time.strftime('%Y%m%d%H%M%S')}||ADT^A01^ADT_A01|{uuid.uuid4().hex[:10]}|P|2.3.1\r"
            f"EVN|A01\rPID|||{pid}^^^&{oid}&ISO||{family}^{given}||{dob}|{sex}|||1 Bay St^^Toronto^ON^M5J2N8||4165550000\r"
            f"PV1||O\r").encode()


def order(pid, oid=HOSP_B):
    return (f"MSH|^~\\&|RIS|HOSPB|XDSI_CONSUMER|XDSI|{time.strftime('%Y%m%d%H%M%S')}||ORM^O01^ORM_O01|"
            f"{uuid.uuid4().hex[:10]}|P|2.3.1\rPID|||{pid}^^^&{oid}&ISO||Nakamura^Hiro\rORC|NW|O1\rOBR|1|O1\r").encode()


def send_study(chain, tmp_path, pid, oid, count=12, modality="CT", study_date="20260110", study=None):
    template = dcmread(get_testdata_file("CT_small.dcm"))
    study, series = study or generate_uid(), [generate_uid(), generate_uid()]
    files = []
    for i in range(count):
        ds = template.copy()
        ds.PatientID, ds.IssuerOfPatientID = pid, oid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % 2]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber, ds.Modality, ds.StudyDate = "ACC77", modality, study_date
        ds.SeriesNumber, ds.InstanceNumber = i % 2 + 1, i + 1
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    out = subprocess.run(["/usr/bin/storescu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(chain.source_dicom_port),
                          *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return study


def linked_patient(chain, count=12, **study):
    """A patient known at hospitals A and B (linked by PIX), with a study at hospital A."""
    a, b = f"A{uuid.uuid4().hex[:8]}", f"B{uuid.uuid4().hex[:8]}"
    family = "Nakamura" + uuid.uuid4().hex[:4]
    assert ack_code(mllp_send(chain.pix.mllp, adt(a, HOSP_A, family=family))) == "AA"
    assert ack_code(mllp_send(chain.pix.mllp, adt(b, HOSP_B, family=family))) == "AA"
    return a, b


def jobs(chain):
    return json.load(urllib.request.urlopen(f"{chain.consumer_http}/jobs"))


def stored_for(chain, b):
    return [j for j in jobs(chain) if j["local_patient"].startswith(b + "^")]


def wait_published(chain, study_uid, timeout=60):
    from xds import APPROVED, FIND_DOCUMENTS, QUERY, envelope, post, stored_query  # noqa: F401
    def published():
        q = urllib.request.urlopen(f"{chain.consumer_http}/health")  # the consumer is up
        return q.status == 200
    wait_until(published, timeout)


def test_order_brings_the_other_sites_study_reconciled(chain, tmp_path):
    a, b = linked_patient(chain)
    study = send_study(chain, tmp_path, a, HOSP_A)
    time.sleep(4)                                     # quiet period, then RAD-68 and ITI-42
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
    assert "XDSI RECONCILED" in dump                   # the outside-study marker
    # A second identical order stores nothing new.
    count = len(chain.pacs.files())
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    time.sleep(3)
    assert len(chain.pacs.files()) == count and len(stored_for(chain, b)) == 1


def test_own_site_studies_are_not_fetched(chain, tmp_path):
    a, b = linked_patient(chain)
    send_study(chain, tmp_path, b, HOSP_B)            # hospital B's own study, published by the source
    time.sleep(4)
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
    send_study(chain, tmp_path, a, HOSP_A, count=4, modality="MR")
    time.sleep(4)
    env = dict(os.environ, XDSI_CONSUMER_HTTP_PORT=chain.consumer_http.rsplit(":", 1)[1])
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


def test_an_updated_study_is_fetched_again_through_its_replacing_manifest(chain, tmp_path):
    """RPLC seen by the consumer: a series added after the first prefetch reaches the local PACS."""
    a, b = linked_patient(chain)
    first = tmp_path / "first"
    first.mkdir()
    study = send_study(chain, first, a, HOSP_A, count=4)
    time.sleep(4)
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    wait_until(lambda: [j for j in stored_for(chain, b) if j["state"] == "stored"], 90, 0.5)
    more = tmp_path / "more"
    more.mkdir()
    send_study(chain, more, a, HOSP_A, count=2, study=study)          # a new series in the same study
    time.sleep(4)                                                     # quiet, then the RPLC manifest
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    jobs_b = wait_until(lambda: [j for j in stored_for(chain, b) if j["state"] == "stored"]
                        if len([j for j in stored_for(chain, b) if j["state"] == "stored"]) == 2 else None, 90, 0.5)
    newest = max(jobs_b, key=lambda j: j["id"])
    assert newest["study_uid"] == study and newest["instances_total"] == 6
    received = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in chain.pacs.files()}
    sent = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in list(first.iterdir()) + list(more.iterdir())}
    assert sent <= received
