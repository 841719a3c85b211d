"""Kill -9 soak: the whole domain under load while a random actor is killed with SIGKILL and
restarted, again and again; then what was acknowledged is checked, over the wire and in the index.

    python -m bench.soak [--cycles 100] [--min-up 2] [--max-up 6] [--settle 180]

Load: 4 ITI-41 submitters (one document each, to the repository), a C-STORE stream (pynetdicom
SCU, one association per small batch) and a stream of orders to the consumer (MLLP). Each actor
runs as ``xdsi serve ACTOR`` in its own session; a kill is SIGKILL to that whole process group, so
its forked workers die with it. PostgreSQL ($XDSI_DATABASE_URL's server, else an embedded one) is
not killed. Counted at the end, each of which must be 0:

- accepted documents lost: an ITI-41 answered Success whose document the registry does not list
  or the repository does not return (ITI-43) with the same SHA-1;
- acknowledged instances lost: a C-STORE answered success whose instance the imaging source's
  index or content store lacks;
- registry entries without a document: a DocumentEntry of this repository that ITI-43 cannot return;
- half submissions: a repository document never settled (still pending), or registered at the
  repository but absent from the registry;
- jobs stuck: a consumer prefetch or job not finished (stored or failed) once the domain is quiet.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE

from affinity_domain.content import FileStore
from tests import xds
from tests.hospital import HOSP_A, HOSP_B, adt, order
from tests.repository import pnr
from tests.services import SOURCE_RUID, StoreScp, free_port, fresh_database, launch, wait_until

REPOSITORY_ID = pnr.REPOSITORY_UNIQUE_ID
ACTORS = ("registry", "repository", "pix", "imaging-source", "consumer")


@dataclass
class Actor:
    """One actor process, restartable with the same ports, data dir and settings."""

    name: str
    data: Path
    database: str
    settings: dict
    ports: list[int]
    process: object = None
    kills: int = 0

    def start(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:     # a killed actor's port may still be held for a moment
            try:
                self.process, _ = launch(self.name, self.data, self.database, self.settings, self.ports,
                                         preexec_fn=os.setsid)
                return
            except (RuntimeError, TimeoutError):
                self.stop_group(signal.SIGKILL)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        with contextlib.suppress(Exception):
            self.process.wait(timeout=30)

    def kill(self) -> None:
        self.kills += 1
        self.stop_group(signal.SIGKILL)


@dataclass
class Ledger:
    """What the domain acknowledged, and what went unanswered (allowed to be lost)."""

    documents: dict[str, str] = field(default_factory=dict)       # uniqueId -> sha1, answered Success
    instances: set[str] = field(default_factory=set)              # SOP Instance UIDs answered 0x0000
    orders: int = 0
    unanswered: dict[str, int] = field(default_factory=lambda: {"iti41": 0, "cstore": 0, "orders": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def miss(self, kind: str) -> None:
        with self.lock:
            self.unanswered[kind] += 1


def domain(tmp: Path, database: str) -> tuple[dict[str, Actor], StoreScp, dict]:
    ports = {k: free_port() for k in ("registry", "feed", "repository", "pix", "pix_http", "source_dicom",
                                      "source", "consumer_mllp", "consumer_http", "consumer_dicom")}
    registry_url = f"http://127.0.0.1:{ports['registry']}/registry"
    repository_url = f"http://127.0.0.1:{ports['repository']}/repository"
    source_url = f"http://127.0.0.1:{ports['source']}/imaging-source"
    pacs = StoreScp.start(_dir(tmp, "localpacs"), "LOCALPACS")
    actors = {
        "registry": Actor("registry", _dir(tmp, "registry"), database,
                          {"port": ports["registry"], "feed_port": ports["feed"]}, [ports["registry"], ports["feed"]]),
        "repository": Actor("repository", _dir(tmp, "repository"), database, {
            "port": ports["repository"], "registry_url": registry_url, "store_dir": tmp / "repository" / "store",
            "recovery_seconds": 2, "pending_grace_seconds": 30}, [ports["repository"]]),
        "pix": Actor("pix", _dir(tmp, "pix"), database, {
            "port": ports["pix"], "http_port": ports["pix_http"], "registry_feed": f"127.0.0.1:{ports['feed']}"},
            [ports["pix"], ports["pix_http"]]),
        "imaging-source": Actor("imaging-source", _dir(tmp, "source"), database, {
            "dicom_port": ports["source_dicom"], "port": ports["source"], "quiet_seconds": 1, "retry_seconds": 1,
            "poll_seconds": 0.2, "repository_url": repository_url, "pix_port": ports["pix"],
            "store_dir": tmp / "source" / "images", "min_free_bytes": 0,
            "move_destinations": f'{{ XDSI_CONSUMER = "127.0.0.1:{ports["consumer_dicom"]}" }}'},
            [ports["source_dicom"], ports["source"]]),
        "consumer": Actor("consumer", _dir(tmp, "consumer"), database, {
            "mllp_port": ports["consumer_mllp"], "http_port": ports["consumer_http"],
            "pix": f"127.0.0.1:{ports['pix']}",
            "registry_url": registry_url, "repositories": f'{{ "{REPOSITORY_ID}" = "{repository_url}" }}',
            "sources": f'{{ "{SOURCE_RUID}" = "{source_url}" }}', "local_pacs": f"LOCALPACS@127.0.0.1:{pacs.port}",
            "accession_prefix": "A-", "max_attempts": 6, "retry_base_seconds": 0.2,
            "dicom_port": ports["consumer_dicom"],
            "dicom_sources": f'{{ XDSI_SOURCE = "127.0.0.1:{ports["source_dicom"]}" }}'},
            [ports["consumer_mllp"], ports["consumer_http"], ports["consumer_dicom"]]),
    }
    return actors, pacs, ports


def _dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def retrying(call, attempts: int = 120, pause: float = 0.5):
    """Set-up steps must happen despite kills; the load itself never retries."""
    for n in range(attempts):
        try:
            return call()
        except Exception:
            if n == attempts - 1:
                raise
            time.sleep(pause)


# ---------------------------------------------------------------- load

def submitter(registry, repository_url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    patient = xds.new_patient()
    retrying(lambda: xds.feed(registry, patient))
    rng = random.Random(seed)
    while not stop.is_set():
        data = rng.randbytes(rng.randrange(2_000, 12_000))
        doc = pnr.with_hash(xds.Doc(), data)
        try:
            answer = pnr.provide(repository_url, patient, [(doc, data)])
            ok = answer.status == 200 and answer.status_name == "Success"
        except Exception:
            ok = None
        if ok:
            with ledger.lock:
                ledger.documents[doc.unique_id] = doc.hash
        elif ok is None:
            ledger.miss("iti41")
        time.sleep(0.02)


def instances_for(patient: str, studies: int = 3, per_study: int = 400):
    template = dcmread(get_testdata_file("CT_small.dcm"))
    for s in range(studies):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            ds = template.copy()
            ds.PatientID, ds.IssuerOfPatientID = patient, HOSP_A
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.AccessionNumber, ds.StudyDate, ds.InstanceNumber = f"SOAK{s}", "20260110", i + 1
            yield ds


def cstore_stream(port: int, patient: str, ledger: Ledger, stop: threading.Event) -> None:
    ae = AE(ae_title="SOAK_MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    datasets = instances_for(patient)
    batch = []
    while not stop.is_set():
        batch = batch or [ds for _, ds in zip(range(10), datasets)]
        if not batch:
            return
        assoc = ae.associate("127.0.0.1", port, ae_title="XDSI_SOURCE")
        if not assoc.is_established:
            ledger.miss("cstore")
            time.sleep(0.5)
            continue
        try:
            while batch and not stop.is_set():
                status = assoc.send_c_store(batch[0])
                if not status or "Status" not in status:
                    ledger.miss("cstore")
                    break
                if status.Status == 0x0000:
                    with ledger.lock:
                        ledger.instances.add(batch[0].SOPInstanceUID)
                batch.pop(0)
        finally:
            if assoc.is_established:
                assoc.release()
        time.sleep(0.05)


def order_stream(pix_mllp, consumer_mllp, ledger: Ledger, stop: threading.Event, linked: list[str]) -> None:
    while not stop.is_set():
        try:
            ack = xds.mllp_send(consumer_mllp, order(random.choice(linked)), timeout=15)
            if xds.ack_code(ack) == "AA":
                with ledger.lock:
                    ledger.orders += 1
        except Exception:
            ledger.miss("orders")
        stop.wait(random.uniform(1, 3))


# ---------------------------------------------------------------- checks

def quiet(database: str) -> bool:
    """Nothing left in flight: pending submissions settled, studies published, fetches finished."""
    with psycopg.connect(database) as conn:
        pending = conn.execute("SELECT count(*) FROM repository.document WHERE state = 'pending'").fetchone()[0]
        unpublished = conn.execute(
            "SELECT count(*) FROM imaging_source.study WHERE version > published_version").fetchone()[0]
        fetches = conn.execute("SELECT count(*) FROM consumer.prefetch WHERE state = 'new'").fetchone()[0]
        jobs = conn.execute("SELECT count(*) FROM consumer.job WHERE state NOT IN ('stored', 'failed')").fetchone()[0]
    return pending + unpublished + fetches + jobs == 0


def retrievable(repository_url: str, unique_ids: list[str]) -> dict[str, str]:
    """uniqueId -> SHA-1 of what ITI-43 returns, in batches."""
    out = {}
    for n in range(0, len(unique_ids), 50):
        answer = pnr.retrieve(repository_url, [(REPOSITORY_ID, u) for u in unique_ids[n:n + 50]])
        out.update({u: hashlib.sha1(data).hexdigest() for u, (_, data) in answer.documents().items()})
    return out


def count_losses(database: str, repository_url: str, source_store: Path, ledger: Ledger) -> dict[str, int]:
    with psycopg.connect(database) as conn:
        registered = {u: h for u, h in conn.execute(
            "SELECT unique_id, hash FROM registry.document_entry WHERE repository_unique_id = %s",
            (REPOSITORY_ID,))}
        at_repository = {u: s for u, s in conn.execute("SELECT unique_id, state FROM repository.document")}
        indexed = {u: h for u, h in conn.execute("SELECT sop_uid, sha1 FROM imaging_source.instance")}
        jobs = conn.execute("SELECT count(*) FROM consumer.job WHERE state NOT IN ('stored', 'failed')").fetchone()[0]
        fetches = conn.execute("SELECT count(*) FROM consumer.prefetch WHERE state = 'new'").fetchone()[0]
    returned = retrievable(repository_url, sorted(registered))
    store = FileStore(source_store)
    return {
        "accepted documents lost": [u for u, h in ledger.documents.items()
                                    if u not in registered or returned.get(u) != h],
        "acknowledged instances lost": [u for u in ledger.instances
                                        if u not in indexed or not store.path(indexed[u]).is_file()],
        "registry entries without a document": [u for u in registered if u not in returned],
        "half submissions": [f"{u} ({s})" for u, s in at_repository.items()
                             if s == "pending" or (s == "registered" and u not in registered)],
        "jobs stuck": [f"{jobs} jobs"] * bool(jobs) + [f"{fetches} fetches"] * bool(fetches),
    }


# ---------------------------------------------------------------- the run

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--min-up", type=float, default=2.0, help="least seconds between kills")
    p.add_argument("--max-up", type=float, default=6.0, help="most seconds between kills")
    p.add_argument("--settle", type=float, default=240.0, help="longest wait for the domain to go quiet")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="xs") as work, fresh_database(Path(work) / "pg", "xdsi_soak") as database:
        tmp = Path(work)
        actors, pacs, ports = domain(tmp, database)
        for actor in actors.values():
            actor.start()
        registry = type("Registry", (), {"feed": ("127.0.0.1", ports["feed"])})()
        repository_url = f"http://127.0.0.1:{ports['repository']}/repository"
        pix_mllp, consumer_mllp = ("127.0.0.1", ports["pix"]), ("127.0.0.1", ports["consumer_mllp"])
        ledger, stop = Ledger(), threading.Event()
        try:
            a, b = "SOAKA" + generate_uid()[-6:], "SOAKB" + generate_uid()[-6:]
            for pid, oid in ((a, HOSP_A), (b, HOSP_B)):
                retrying(lambda: xds.ack_code(xds.mllp_send(pix_mllp, adt(pid, oid, family="Soakmann"))) == "AA"
                         or (_ for _ in ()).throw(RuntimeError("no AA")))
            threads = [threading.Thread(target=submitter, args=(registry, repository_url, ledger, stop, n))
                       for n in range(4)]
            threads.append(threading.Thread(target=cstore_stream, args=(ports["source_dicom"], a, ledger, stop)))
            threads.append(threading.Thread(target=order_stream, args=(pix_mllp, consumer_mllp, ledger, stop, [b])))
            for t in threads:
                t.start()
            started = time.monotonic()
            for cycle in range(args.cycles):
                time.sleep(random.uniform(args.min_up, args.max_up))
                victim = actors[random.choice(ACTORS)]
                victim.kill()
                victim.start()
                print(f"cycle {cycle + 1}/{args.cycles}: killed and restarted {victim.name}", flush=True)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            loaded = time.monotonic() - started
            print("load stopped; waiting for the domain to go quiet", flush=True)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: quiet(database), args.settle, interval=1)
            counts = count_losses(database, repository_url, tmp / "source" / "images", ledger)
        finally:
            stop.set()
            for actor in actors.values():
                actor.stop_group(signal.SIGTERM)
            pacs.stop()
    kills = ", ".join(f"{a.name} {a.kills}" for a in actors.values())
    print(f"\n{args.cycles} kills in {loaded:.0f} s ({kills})")
    print(f"acknowledged: {len(ledger.documents)} documents, {len(ledger.instances)} instances, "
          f"{ledger.orders} orders; unanswered (allowed to be lost): " +
          ", ".join(f"{k} {v}" for k, v in ledger.unanswered.items()))
    for name, found in counts.items():
        print(f"{name:40s} {len(found) if name != 'jobs stuck' else jobs_stuck(found)}"
              + (f"   e.g. {', '.join(found[:3])}" if found else ""))
    return 1 if any(counts.values()) else 0


def jobs_stuck(found: list[str]) -> int:
    return sum(int(f.split()[0]) for f in found)


if __name__ == "__main__":
    sys.exit(main())
