"""``xdsi demo`` end to end: the whole domain as real processes (moved off the default ports, so
the test runs beside anything); the demo exits 0 only if every step happened, and what it says it
stored is checked here too."""
import os
import re
import subprocess
import sys

import pytest
from pydicom import dcmread

from tests.services import domain_on_free_ports


@pytest.mark.parametrize("tls", [(), ("--tls",)], ids=["plain", "tls"])
def test_demo_exits_0_and_its_summary_is_true(new_database, tmp_path, tls):
    moved, _ = domain_on_free_ports()
    env = dict(os.environ, XDSI_DATA_DIR=str(tmp_path / "data"), XDSI_DATABASE_URL=new_database(), **moved)
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "demo", "--instances", "120", *tls],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "xdsi demo: every step happened." in out.stdout
    if tls:
        assert "mutual TLS with a test PKI" in out.stdout
        log = (tmp_path / "data" / "demo-domain.log").read_text()
        assert "without TLS" not in log.lower() and "https://" in log
    m = re.search(r"(\d+) instances in hospital B's PACS under (B\w+)", out.stdout)
    assert m and m.group(1) == "120"
    mrn_b = m.group(2)
    [pacs] = list((tmp_path / "data").glob("local-pacs-*"))
    files = list(pacs.iterdir())
    assert len(files) == 120
    ds = dcmread(files[0])
    assert ds.PatientID == mrn_b and ds.IssuerOfPatientID == "1.3.6.1.4.1.21367.2005.13.20.2000"
    assert mrn_b.replace("B", "A", 1) in [o.PatientID for o in ds.OtherPatientIDsSequence]
    assert re.search(r"score \d+\.\d", out.stdout) and "near miss held for review" in out.stdout
