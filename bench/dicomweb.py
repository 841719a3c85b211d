"""DICOMweb benchmark: WADO-RS retrieval of a whole study (MB/s) and QIDO-RS study search (p50), ours
against Orthanc's DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``) holding the same study, and
against RAD-69 from the same source in the same run; then QIDO-RS p50 with many studies indexed.

    python -m bench.dicomweb [--instances 300] [--repeat 5] [--queries 200] [--studies 100000]

Starts PostgreSQL (embedded, or $XDSI_DATABASE_URL's server), a PIX stand-in and ``xdsi serve
imaging-source`` on free ports, and Orthanc on its own ports (skipped when /usr/sbin/Orthanc is not
installed). Both get the study by DCMTK's storescu; both are read by curl (WADO-RS, RAD-69) and by
one keep-alive HTTP connection (QIDO-RS). The extra studies for the last figure are rows written
straight into the source's index (publishing is held off), since C-STORE of 100,000 studies is not
what is measured.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from pydicom import dcmread

from affinity_domain import ns, soap
from bench.imaging_source import rad69_request
from tests import orthanc as orthanc_peer
from tests.imaging_source import source_dicom as dd
from tests.services import free_port, fresh_database, wait_for_port

ENV = dict(os.environ, TCP_NODELAY="1")
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def start(cmd, env, port, log) -> subprocess.Popen:
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=log, stderr=log)
    wait_for_port(port, proc, timeout=60)
    return proc


def curl_rate(url: str, repeat: int, *args: str) -> tuple[float, int]:
    """(best MB/s, bytes) of ``repeat`` downloads of ``url`` into nothing."""
    best, size = 0.0, 0
    for _ in range(repeat):
        out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                              *args, url], capture_output=True, text=True, check=True, timeout=600)
        got, seconds = out.stdout.split()
        size = int(got)
        best = max(best, size / 1e6 / float(seconds))
    return best, size


def p50(host: str, port: int, path: str, queries: int) -> float:
    """Median milliseconds of one QIDO-RS request on one kept-alive connection (after a warm-up)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    for n in range(queries + 10):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "application/dicom+json"})
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - t
        if response.status != 200 or not json.loads(body):
            raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
        if n >= 10:
            times.append(elapsed * 1e3)
    conn.close()
    return statistics.median(times)


def fill_index(database: str, studies: int) -> None:
    """``studies`` more studies (one patient each) in the source's index, written by SQL."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SET search_path TO imaging_source")
        conn.execute("INSERT INTO patient (patient_id, issuer, name, birth_date, sex) "
                     "SELECT 'P' || n, '1.2.3', 'Bench^' || n, '19700101', 'O' FROM generate_series(1, %s) n",
                     (studies,))
        conn.execute("INSERT INTO study (study_uid, patient, study_date, accession, description, published_version, "
                     "version) SELECT '1.2.999.' || p.id, p.id, '2020' || lpad((p.id % 12 + 1)::text, 2, '0') || '15', "
                     "'A' || p.id, 'bench', 1, 1 FROM patient p WHERE p.issuer = '1.2.3'")
        conn.execute("ANALYZE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=300, help="CT instances in the study retrieved")
    ap.add_argument("--repeat", type=int, default=5, help="retrievals per figure (the best is kept)")
    ap.add_argument("--queries", type=int, default=200, help="QIDO-RS requests per p50")
    ap.add_argument("--studies", type=int, default=100000, help="studies indexed for the last QIDO-RS figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xbdw", dir="/tmp"))
    log = open(work / "services.log", "ab")
    procs = []
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(fresh_database(work))
        try:
            dicom, http_port = free_port(), free_port()
            env = dict(ENV, XDSI_DATABASE_URL=database, XDSI_DATA_DIR=str(work),
                       XDSI_IMAGING_SOURCE_DICOM_PORT=str(dicom), XDSI_IMAGING_SOURCE_PORT=str(http_port),
                       XDSI_IMAGING_SOURCE_QUIET_SECONDS="86400", XDSI_IMAGING_SOURCE_STORE_DIR=str(work / "images"),
                       XDSI_IMAGING_SOURCE_MIN_FREE_BYTES="0", XDSI_IMAGING_SOURCE_PIX_PORT=str(free_port()))
            procs.append(start([sys.executable, "-m", "affinity_domain.cli", "serve", "imaging-source"], env, dicom,
                               log))
            wait_for_port(http_port, procs[-1])
            orthanc = orthanc_peer.available()
            if orthanc:
                peer = orthanc_peer.Orthanc.start(work / "orthanc", log=log)
                procs.append(peer.process)
                o_http, o_dicom = peer.http_port, peer.dicom_port

            study = dd.make_study(work / "study", f"B{uuid.uuid4().hex[:8]}", series=3,
                                  per_series=args.instances // 3)
            for port, aec in [(dicom, "XDSI_SOURCE")] + ([(o_dicom, "ORTHANC")] if orthanc else []):
                subprocess.run(["/usr/bin/storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, study.files)],
                               env=ENV, check=True, capture_output=True, timeout=600)
            n = len(study.files)
            ours_base = f"http://127.0.0.1:{http_port}/dicomweb"

            def line(label, ours, theirs, unit, what):
                print(f"{label:<58} ours {ours:>8.2f} {unit:<5} {what} {theirs:>8.2f} {unit:<5} "
                      f"ratio {ours / theirs:.3f}", flush=True)

            ours, size = curl_rate(f"{ours_base}/studies/{study.uid}", args.repeat, "-H", f"Accept: {AS_STORED}")
            print(f"study: {n} CT instances, {size / 1e6:.1f} MB of multipart", flush=True)
            # RAD-69 of the same study from the same source, read by curl too
            docs = [(d.SeriesInstanceUID, d.SOPInstanceUID)
                    for d in (dcmread(f, stop_before_pixels=True) for f in study.files)]
            envelope = work / "rad69.xml"
            envelope.write_bytes(soap.to_bytes(soap.envelope(
                rad69_request(study.uid, docs, "1.3.6.1.4.1.21367.13.40.302"), ns.RETRIEVE_IMAGING,
                to=f"http://127.0.0.1:{http_port}/imaging-source")))
            rad69, _ = curl_rate(f"http://127.0.0.1:{http_port}/imaging-source", args.repeat, "-H",
                                 f'Content-Type: application/soap+xml; charset=UTF-8; action="{ns.RETRIEVE_IMAGING}"',
                                 "--data-binary", f"@{envelope}")
            line(f"WADO-RS study retrieve, {n} instances (MB/s)", ours, rad69, "MB/s", "RAD-69 ")
            query = f"/studies?PatientID={study.patient_id}"
            ours_p50 = p50("127.0.0.1", http_port, "/dicomweb" + query, args.queries)
            if orthanc:
                theirs, _ = curl_rate(f"http://127.0.0.1:{o_http}/dicom-web/studies/{study.uid}", args.repeat,
                                      "-H", f"Accept: {AS_STORED}")
                line(f"WADO-RS study retrieve, {n} instances (MB/s)", ours, theirs, "MB/s", "Orthanc")
                theirs_p50 = p50("127.0.0.1", o_http, "/dicom-web" + query, args.queries)
                # lower is better: the ratio is theirs / ours, as for a rate
                print(f"{'QIDO-RS study search by PatientID, p50 (ms)':<58} ours {ours_p50:>8.2f} ms    Orthanc "
                      f"{theirs_p50:>8.2f} ms    ratio {theirs_p50 / ours_p50:.3f} (Orthanc's time / ours)",
                      flush=True)
            else:
                print(f"{'QIDO-RS study search by PatientID, p50 (ms)':<58} ours {ours_p50:>8.2f} ms "
                      "(Orthanc not installed)", flush=True)
            if args.studies:
                fill_index(database, args.studies)
                for label, q in (("by PatientID", "/studies?PatientID=P4242"),
                                 ("by AccessionNumber", "/studies?AccessionNumber=A4242"),
                                 ("by StudyDate range, limit 25", "/studies?StudyDate=20200301-20200331&limit=25"),
                                 ("by PatientName, fuzzy", "/studies?PatientName=bench&fuzzymatching=true&limit=25")):
                    ms = p50("127.0.0.1", http_port, "/dicomweb" + q, args.queries)
                    print(f"{f'QIDO-RS {label}, {args.studies} studies (p50 ms)':<58} ours {ms:>8.2f} ms    "
                          "target 20 ms", flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
