"""Consumer benchmark: one order brings N outside studies of M instances into the local PACS, timed
from the order to the last instance stored, beside DCMTK's raw C-MOVE of the same instances
(dcmqrscp -> storescp) in the same run.

    python -m bench.consumer [--studies 20] [--instances 200] [--workers 4] [--processes 2]

Every actor runs as ``xdsi serve`` (registry, repository, PIX manager, imaging source, consumer) on
PostgreSQL ($XDSI_DATABASE_URL's server, else an embedded one); the local PACS is DCMTK storescp.
"""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

from pydicom import dcmread  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from affinity_domain import ns  # noqa: E402
from tests.consumer import consumer_side  # noqa: E402
from tests.hospital import HOSP_A, HOSP_B, adt, order  # noqa: E402
from tests.services import (DCMTK_ENV, StoreScp, create_database, database_server, free_port,  # noqa: E402
                            start_chain, wait_for_port, wait_until)
from tests.xds import ack_code, mllp_send  # noqa: E402


def make_studies(root: Path, patient: str, studies: int, instances: int) -> list[Path]:
    template = dcmread(get_testdata_file("CT_small.dcm"))
    dirs = []
    for n in range(studies):
        d = root / f"study{n:03d}"
        d.mkdir(parents=True)
        study, series = generate_uid(), [generate_uid(), generate_uid()]
        for i in range(instances):
            ds = template.copy()
            ds.PatientID, ds.IssuerOfPatientID = patient, HOSP_A
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % 2]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.AccessionNumber, ds.StudyDate, ds.InstanceNumber = f"ACC{n}", "20260110", i + 1
            ds.save_as(d / f"{i:05d}.dcm", enforce_file_format=True)
        dirs.append(d)
    return dirs


def storescu(port: int, ae: str, directory: Path) -> None:
    out = subprocess.run(["/usr/bin/storescu", "-aec", ae, "+sd", "127.0.0.1", str(port), str(directory)],
                         env=DCMTK_ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])


def raw_cmove(tmp: Path, dirs: list[Path], parallel: int) -> float:
    """Seconds for DCMTK dcmqrscp to C-MOVE every study to DCMTK storescp, ``parallel`` studies at once."""
    (tmp / "raw-pacs").mkdir()
    store, port, dest = tmp / "qr", free_port(), StoreScp.start(tmp / "raw-pacs", "MOVEDEST")
    store.mkdir()
    cfg = tmp / "dcmqrscp.cfg"
    cfg.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 32\n"
                   f"HostTable BEGIN\nmovedest = (MOVEDEST, 127.0.0.1, {dest.port})\nHostTable END\n"
                   f"VendorTable BEGIN\nVendorTable END\nAETable BEGIN\nDCMQR {store} RW (100000, 4096mb) ANY\n"
                   f"AETable END\n")
    qr = subprocess.Popen(["/usr/bin/dcmqrscp", "-c", str(cfg)], env=DCMTK_ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, qr)
        for d in dirs:
            storescu(port, "DCMQR", d)
        uids = [dcmread(next(d.iterdir()), stop_before_pixels=True).StudyInstanceUID for d in dirs]

        def move(uid):
            out = subprocess.run(["/usr/bin/movescu", "-S", "-aec", "DCMQR", "-aem", "MOVEDEST", "-k",
                                  "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(port)],
                                 env=DCMTK_ENV, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-1000:])
        t = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(move, uids))
        elapsed = time.perf_counter() - t
        expected = sum(len(list(d.iterdir())) for d in dirs)
        assert len(dest.files()) == expected, (len(dest.files()), expected)
        return elapsed
    finally:
        qr.terminate()
        dest.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--instances", type=int, default=200, help="per study")
    ap.add_argument("--workers", type=int, default=4, help="consumer threads per process (studies at once)")
    ap.add_argument("--processes", type=int, default=2, help="consumer worker processes")
    ap.add_argument("--retrieve", default="rad69", help="rad69 | c-move | c-get")
    args = ap.parse_args()
    total = args.studies * args.instances
    with tempfile.TemporaryDirectory(prefix="xcb", dir="/tmp") as t:
        tmp = Path(t)
        database_in_use = contextlib.ExitStack()
        url = database_in_use.enter_context(database_server(tmp))

        def new_database() -> str:
            return create_database(url, "xdsi_bench")

        made = []

        def mktemp(name: str) -> Path:
            made.append(name)
            d = tmp / f"{name}{len(made)}"
            d.mkdir()
            return d
        print(f"consumer benchmark: {args.studies} studies x {args.instances} CT instances ({total}), "
              f"{args.processes} processes x {args.workers} workers, retrieval by {args.retrieve}")
        chain = start_chain(new_database(), mktemp)
        consumer = None
        try:
            a, b = f"A{uuid.uuid4().hex[:8]}", f"B{uuid.uuid4().hex[:8]}"
            for pid, oid in ((a, HOSP_A), (b, HOSP_B)):
                assert ack_code(mllp_send(chain.pix.mllp, adt(pid, oid, family="Benchmark"))) == "AA"
            dirs = make_studies(tmp / "studies", a, args.studies, args.instances)
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda d: storescu(chain.source_dicom_port, "XDSI_SOURCE", d), dirs))
            print(f"  intake into the imaging source: {time.perf_counter() - t:.1f} s")
            affinity = consumer_side.affinity_id(chain, b, HOSP_B)
            from affinity_domain.soap_client import SoapClient
            from consumer import entries

            def published():
                r = SoapClient(chain.registry.url).call(ns.STORED_QUERY,
                                                       entries.find_documents(affinity))
                return len(entries.read_entries(r.body)) == args.studies
            wait_until(published, 600, 1.0)
            # The chain's own consumer stays idle; this one has the sizes asked for and its own PACS.
            extra = {}
            if args.retrieve == "c-move":
                # The source moves to XDSI_CONSUMER at the chain consumer's port: this one takes it over.
                chain.processes[0].terminate()
                chain.processes[0].wait(30)
                extra["dicom_port"] = chain.consumer_dicom
            consumer = consumer_side.start_consumer(chain, new_database(), mktemp, workers=args.workers,
                                                    processes=args.processes, retrieve_order=f'["{args.retrieve}"]',
                                                    **extra)
            t = time.perf_counter()
            assert ack_code(mllp_send(("127.0.0.1", consumer.mllp), order(b))) == "AA"
            fetch = wait_until(lambda: (lambda f: f if f["progress"]["finished"] else None)(consumer.status(1)),
                               3600, 0.1)
            ours = time.perf_counter() - t
            stored = len(consumer.pacs.files())
            failed = [j for j in fetch["jobs"] if j["state"] != "stored"]
            if failed or stored != total:
                print(f"  FAILED: {len(failed)} studies not stored, {stored}/{total} instances: "
                      f"{failed[0]['last_error'] if failed else ''}")
                return 1
            raw = raw_cmove(tmp, dirs, args.workers)
            print(f"  order -> last instance stored (consumer):   {ours:7.1f} s   {total / ours:7.0f} instances/s")
            print(f"  DCMTK dcmqrscp -> storescp raw C-MOVE:       {raw:7.1f} s   {total / raw:7.0f} instances/s "
                  f"({args.workers} studies at once)")
            print(f"  ratio (consumer / raw C-MOVE):               {raw / ours:7.2f}   (aim >= 0.5)")
            return 0
        finally:
            if consumer:
                consumer.stop()
            chain.stop()
            for p in chain.processes:
                if p.poll() is None:
                    p.kill()
            database_in_use.close()


if __name__ == "__main__":
    sys.exit(main())
