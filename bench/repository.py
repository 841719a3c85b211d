"""Repository benchmark: ITI-41 rate, ITI-43 throughput and a large document in and out, each
beside the same transfer as a plain HTTP upload/download (the physical limit of this machine).

    python -m bench.repository [--submissions 400] [--clients 4] [--doc-kb 10]
                               [--retrieve-mb 100] [--big-mb 512]

Starts PostgreSQL (embedded, or $XDSI_DATABASE_URL's server), the registry and the repository as
``xdsi serve`` processes, and a plain waitress file server for the baselines. Clients use the
project's SOAP client (MTOM, streamed from and to files). Peak RSS is each repository process's
VmHWM from /proc.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

from affinity_domain import ns
from affinity_domain import mtom
from affinity_domain.soap_client import SoapClient

from tests import xds  # the tests' ebRIM builders
from tests.services import ROOT, free_port, fresh_database, wait_for_port

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.40.301"


# ---------------------------------------------------------------- plain HTTP baseline

def plain_server(port: int, directory: str) -> None:
    """PUT stores the body in a file, GET sends a file: what any web server does."""
    import waitress

    def app(environ, start_response):
        path = Path(directory) / environ["PATH_INFO"].strip("/")
        if environ["REQUEST_METHOD"] == "PUT":
            left = int(environ.get("CONTENT_LENGTH") or 0)
            with open(path, "wb") as f:
                while left:
                    chunk = environ["wsgi.input"].read(min(left, 1 << 20))
                    if not chunk:
                        break
                    f.write(chunk)
                    left -= len(chunk)
            start_response("201 Created", [("Content-Length", "0")])
            return [b""]
        f = open(path, "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(path.stat().st_size))])
        return environ["wsgi.file_wrapper"](f, 1 << 20)

    waitress.serve(app, host="127.0.0.1", port=port, threads=8, _quiet=True,
                   max_request_body_size=1 << 40)


def http_put(port: int, name: str, source: Path | bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = source if isinstance(source, bytes) else open(source, "rb")
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    conn.request("PUT", f"/{name}", body=body, headers={"Content-Length": str(size)})
    conn.getresponse().read()
    conn.close()


def http_get(port: int, name: str, target: Path) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", f"/{name}")
    r = conn.getresponse()
    n = 0
    with open(target, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
            n += len(chunk)
    conn.close()
    return n


# ---------------------------------------------------------------- XDS clients

def provide_request(patient: str, doc: xds.Doc) -> etree._Element:
    metadata = xds.submission(patient, [doc])
    return etree.fromstring(
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{ns.XDSB}">{metadata}'
        f'<xdsb:Document id="{doc.id}"><xop:Include xmlns:xop="{ns.XOP}" href="cid:doc@bench"/>'
        f'</xdsb:Document></xdsb:ProvideAndRegisterDocumentSetRequest>')


def provide(url: str, patient: str, path: Path, timeout: float = 600) -> str:
    doc = xds.Doc()
    data_hash = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            data_hash.update(chunk)
    doc.hash, doc.size = data_hash.hexdigest(), str(path.stat().st_size)
    answer = SoapClient(url, timeout).call(ns.PROVIDE_AND_REGISTER, provide_request(patient, doc),
                                           [mtom.OutPart("doc@bench", "application/octet-stream", path=path)])
    status = answer.body.get("status", "")
    if not status.endswith("Success"):
        raise RuntimeError(etree.tostring(answer.body)[:800])
    return doc.unique_id


def retrieve(url: str, unique_id: str, spool: Path) -> int:
    request = etree.fromstring(
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{ns.XDSB}"><xdsb:DocumentRequest>'
        f'<xdsb:RepositoryUniqueId>{REPOSITORY_ID}</xdsb:RepositoryUniqueId>'
        f'<xdsb:DocumentUniqueId>{unique_id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>'
        f'</xdsb:RetrieveDocumentSetRequest>')
    answer = SoapClient(url, 600, spool).call(ns.RETRIEVE, request, use_mtom=True)
    try:
        [part] = answer.attachments.values()
        return part.size
    finally:
        answer.discard()


def _provide_worker(args):
    url, patient, path, count = args
    for _ in range(count):
        provide(url, patient, Path(path), timeout=60)
    return count


def _put_worker(args):
    port, data, count = args
    for i in range(count):
        http_put(port, f"small-{os.getpid()}-{i}", data)
    return count


# ---------------------------------------------------------------- running the services

def vm_hwm(pid: int) -> int:
    """Peak RSS (kB) of a process and its children."""
    total = 0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                total = max(total, int(line.split()[1]))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submissions", type=int, default=400)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--doc-kb", type=int, default=10)
    ap.add_argument("--retrieve-mb", type=int, default=100)
    ap.add_argument("--retrieves", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=512, help="the large document (the issue asks 2048)")
    ap.add_argument("--plain-server", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_server:
        plain_server(int(args.plain_server[0]), args.plain_server[1])
        return 0

    with tempfile.TemporaryDirectory(prefix="xbench", dir="/tmp") as t, fresh_database(Path(t)) as db:
        return measure(Path(t), db, args)


def measure(work: Path, db: str, args) -> int:
    procs = []
    try:
        reg_port, feed_port, repo_port, plain_port = free_port(), free_port(), free_port(), free_port()
        env = dict(os.environ, XDSI_DATABASE_URL=db, XDSI_DATA_DIR=str(work),
                   XDSI_REGISTRY_PORT=str(reg_port), XDSI_REGISTRY_FEED_PORT=str(feed_port),
                   XDSI_REPOSITORY_PORT=str(repo_port), XDSI_REPOSITORY_STORE_DIR=str(work / "store"),
                   XDSI_REPOSITORY_REGISTRY_URL=f"http://127.0.0.1:{reg_port}/registry")
        log = open(work / "services.log", "ab")
        for actor, port in (("registry", reg_port), ("repository", repo_port)):
            p = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", actor],
                                 env=env, stdout=log, stderr=log, cwd=ROOT)
            procs.append(p)
            wait_for_port(port, p)
        (work / "plain").mkdir()
        plain = subprocess.Popen([sys.executable, "-m", "bench.repository", "--plain-server", str(plain_port),
                                  str(work / "plain")], cwd=ROOT)
        procs.append(plain)
        wait_for_port(plain_port, plain)
        repo_pid = procs[1].pid
        repo_url = f"http://127.0.0.1:{repo_port}/repository"

        class Reg:
            feed = ("127.0.0.1", feed_port)
        patient = xds.new_patient()
        xds.feed(Reg, patient)
        spool = work / "client-spool"
        spool.mkdir()

        def line(label, ours, plain_value, unit):
            print(f"{label:<46} {ours:>10.1f} {unit:<6} plain HTTP {plain_value:>10.1f} {unit:<6} "
                  f"ratio {ours / plain_value:.3f}", flush=True)

        # 1. ITI-41, small documents, concurrent clients, registration included
        small = work / "small.bin"
        small.write_bytes(os.urandom(args.doc_kb * 1024))
        provide(repo_url, patient, small)       # warm up
        per = args.submissions // args.clients
        with mp.Pool(args.clients) as pool:
            t = time.perf_counter()
            n = sum(pool.map(_provide_worker, [(repo_url, patient, str(small), per)] * args.clients))
            ours = n / (time.perf_counter() - t)
            t = time.perf_counter()
            m = sum(pool.map(_put_worker, [(plain_port, small.read_bytes(), per)] * args.clients))
            base = m / (time.perf_counter() - t)
        line(f"ITI-41 {args.doc_kb} KB, {args.clients} clients (submissions/s)", ours, base, "/s")

        # 2. ITI-43 of one large document
        medium = work / "medium.bin"
        with open(medium, "wb") as f:
            for _ in range(args.retrieve_mb):
                f.write(os.urandom(1 << 20))
        uid = provide(repo_url, patient, medium)
        http_put(plain_port, "medium", medium)
        best_ours = best_plain = 0.0
        for _ in range(args.retrieves):
            t = time.perf_counter()
            size = retrieve(repo_url, uid, spool)
            best_ours = max(best_ours, size / (1 << 20) / (time.perf_counter() - t))
            t = time.perf_counter()
            size = http_get(plain_port, "medium", work / "medium.out")
            best_plain = max(best_plain, size / (1 << 20) / (time.perf_counter() - t))
        line(f"ITI-43 {args.retrieve_mb} MB (MB/s, best of {args.retrieves})", best_ours, best_plain, "MB/s")

        # 3. a large document in and out, bounded memory
        big = work / "big.bin"
        with open(big, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.big_mb):
                f.write(block)
        t = time.perf_counter()
        uid = provide(repo_url, patient, big)
        up = args.big_mb / (time.perf_counter() - t)
        t = time.perf_counter()
        size = retrieve(repo_url, uid, spool)
        down = args.big_mb / (time.perf_counter() - t)
        assert size == args.big_mb << 20
        t = time.perf_counter()
        http_put(plain_port, "big", big)
        plain_up = args.big_mb / (time.perf_counter() - t)
        t = time.perf_counter()
        http_get(plain_port, "big", work / "big.out")
        plain_down = args.big_mb / (time.perf_counter() - t)
        line(f"ITI-41 {args.big_mb} MB document in (MB/s)", up, plain_up, "MB/s")
        line(f"ITI-43 {args.big_mb} MB document out (MB/s)", down, plain_down, "MB/s")
        print(f"{'repository peak RSS, any process (MB)':<46} {vm_hwm(repo_pid) / 1024:>10.1f} MB     "
              f"plain HTTP server {vm_hwm(plain.pid) / 1024:.1f} MB", flush=True)
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
