"""Registry benchmark: load DocumentEntries through the ITI-42 validation code, then measure over HTTP.

    python -m bench.registry [--documents 1000000] [--patients 100000] [--queries 3000] [--xua] [--audit]

Prints: load rate, FindDocuments (by patient, ~10 entries, LeafClass) p50/p99 latency with one
client and queries/s with 4 concurrent clients, single-document ITI-42 registrations/s, and the
database size. Uses $XDSI_DATABASE_URL's server if set, else an embedded PostgreSQL.
With ``--xua``, FindDocuments again with a signed SAML assertion (a test IdP, tests/xua_idp.py) in
``wsse:Security`` on every request, checked by the registry (ITI-40), and its ratio to the plain run.

``--audit``: FindDocuments is measured twice, by a registry without audit destinations and by one that records
every query (ITI-20: spool, then a sender thread per process) to a syslog TCP sink of this bench that reads and
counts the records; prints both and the ratio (the cost of audit on the request path).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from lxml import etree

from affinity_domain import ebrim, mllp, ns
from affinity_domain.db import migrate
from affinity_domain.ebrim import parse_object_list
from registry import codes, submission
from registry.store import Store
from tests.services import ROOT, free_port, fresh_database, wait_for_port

DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"
MODALITIES = ["CT", "MR", "CR", "US", "NM", "PT", "XA", "MG", "DX", "RF"]


def patient_id(n: int) -> str:
    return f"BP{n:08d}^^^&{DOMAIN}&ISO"


def _slot(name, *values):
    return f'<rim:Slot name="{name}"><rim:ValueList>' + "".join(
        f"<rim:Value>{v}</rim:Value>" for v in values) + "</rim:ValueList></rim:Slot>"


def _code(scheme, obj, code, coding):
    return (f'<rim:Classification classificationScheme="{scheme}" classifiedObject="{obj}" '
            f'id="{obj}c{scheme[-4:]}{code}" '
            f'nodeRepresentation="{code}">{_slot("codingScheme", coding)}'
            f'<rim:Name><rim:LocalizedString value="{code}"/></rim:Name></rim:Classification>')


def document_xml(i: int, pid: str, rng: random.Random) -> str:
    d = f"Doc{i}"
    year = rng.randint(2005, 2024)
    when = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}"
    pid_x = pid.replace("&", "&amp;")
    return (f'<rim:ExtrinsicObject id="{d}" mimeType="application/dicom" objectType="{ebrim.STABLE}">'
            f'{_slot("creationTime", when)}{_slot("languageCode", "en-US")}{_slot("serviceStartTime", when)}'
            f'{_slot("sourcePatientId", f"L{i}^^^&amp;1.2.3.4&amp;ISO")}{_slot("hash", "%040x" % rng.getrandbits(160))}'
            f'{_slot("size", str(rng.randint(1000, 99999)))}'
            f'{_slot("repositoryUniqueId", "1.3.6.1.4.1.21367.13.40.301")}'
            f'<rim:Name><rim:LocalizedString value="Study {i}"/></rim:Name>'
            f'<rim:Classification classificationScheme="{ebrim.DE_AUTHOR}" classifiedObject="{d}" id="{d}a" '
            f'nodeRepresentation="">{_slot("authorPerson", "^Welby^Marcus^^^Dr")}</rim:Classification>'
            + _code(ebrim.DE_CLASS_CODE, d, "REPORTS", "1.3.6.1.4.1.19376.1.2.6.1")
            + _code(ebrim.DE_CONFIDENTIALITY, d, "N", "2.16.840.1.113883.5.25")
            + _code(ebrim.DE_EVENT_CODE, d, rng.choice(MODALITIES), "1.2.840.10008.2.16.4")
            + _code(ebrim.DE_FORMAT_CODE, d, "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1")
            + _code(ebrim.DE_HCFT_CODE, d, "22232009", "2.16.840.1.113883.6.96")
            + _code(ebrim.DE_PRACTICE_SETTING, d, "225728007", "2.16.840.1.113883.6.96")
            + _code(ebrim.DE_TYPE_CODE, d, "57055-6", "2.16.840.1.113883.6.1")
            + f'<rim:ExternalIdentifier id="{d}p" registryObject="{d}" identificationScheme="{ebrim.DE_PATIENT_ID}" '
              f'value="{pid_x}"/>'
            + f'<rim:ExternalIdentifier id="{d}u" registryObject="{d}" identificationScheme="{ebrim.DE_UNIQUE_ID}" '
              f'value="2.25.{uuid.UUID(int=rng.getrandbits(128)).int}"/></rim:ExtrinsicObject>'
            + f'<rim:Association id="{d}m" associationType="{ebrim.HAS_MEMBER}" sourceObject="SS" targetObject="{d}">'
              f'{_slot("SubmissionSetStatus", "Original")}</rim:Association>')


def submission_xml(pid: str, docs: int, rng: random.Random, first: int = 0) -> str:
    pid_x = pid.replace("&", "&amp;")
    ss = (f'<rim:RegistryPackage id="SS">{_slot("submissionTime", "20240102030405")}'
          + _code(ebrim.SS_CONTENT_TYPE, "SS", "225728007", "2.16.840.1.113883.6.96")
          + f'<rim:ExternalIdentifier id="SSu" registryObject="SS" identificationScheme="{ebrim.SS_UNIQUE_ID}" '
            f'value="2.25.{uuid.UUID(int=rng.getrandbits(128)).int}"/>'
          + f'<rim:ExternalIdentifier id="SSs" registryObject="SS" identificationScheme="{ebrim.SS_SOURCE_ID}" '
            f'value="1.3.6.1.4.1.21367.4"/>'
          + f'<rim:ExternalIdentifier id="SSp" registryObject="SS" identificationScheme="{ebrim.SS_PATIENT_ID}" '
            f'value="{pid_x}"/>'
          + '</rim:RegistryPackage>'
          + f'<rim:Classification id="SSc" classifiedObject="SS" classificationNode="{ebrim.SUBMISSION_SET_NODE}"/>')
    body = ss + "".join(document_xml(first + i, pid, rng) for i in range(docs))
    return (f'<lcm:SubmitObjectsRequest xmlns:lcm="{ebrim.LCM}" xmlns:rim="{ns.RIM}"><rim:RegistryObjectList>'
            f'{body}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>')


# ---------------------------------------------------------------- loading

def _load_worker(args) -> int:
    url, patients, docs_per_patient, seed = args
    rng = random.Random(seed)
    code_sets = codes.from_config(True)
    from affinity_domain.db import open_pool
    pool = open_pool(url, "registry", max_size=1)
    store = Store(pool)
    loaded = 0
    batch = []
    for p in patients:
        pid = patient_id(p)
        request = etree.fromstring(submission_xml(pid, docs_per_patient, rng, p * docs_per_patient).encode())
        objects = parse_object_list(request.find(ebrim.q(ns.RIM, "RegistryObjectList")))
        errors = submission.validate(objects, code_sets, DOMAIN)
        assert not errors, errors
        submission.plan(objects, "20240102030405")
        batch.append(objects)
        loaded += docs_per_patient
        if len(batch) >= 200:
            store.bulk_load(batch, "20240102030405")
            batch = []
    if batch:
        store.bulk_load(batch, "20240102030405")
    pool.close()
    return loaded


def load(url: str, documents: int, patients: int, workers: int = 2) -> float:
    per = max(1, documents // patients)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path = registry")
        with conn.cursor().copy("COPY patient (id) FROM STDIN") as copy:
            for p in range(patients):
                copy.write_row((patient_id(p),))
    chunks = [(url, range(w, patients, workers), per, w) for w in range(workers)]
    started = time.perf_counter()
    with mp.Pool(workers) as pool:
        total = sum(pool.map(_load_worker, chunks))
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE registry.document_entry; ANALYZE registry.association; ANALYZE registry.submission_set")
    print(f"loaded {total:,} DocumentEntries for {patients:,} patients through ITI-42 validation "
          f"in {elapsed:.0f} s ({total / elapsed:,.0f} entries/s)")
    return elapsed


# ---------------------------------------------------------------- HTTP load

FIND = (f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}" '
        f'xmlns:rim="{ns.RIM}"><query:ResponseOption returnType="LeafClass" '
        'returnComposedObjects="true"/><rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">'
        "<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{pid}'</rim:Value>"
        "</rim:ValueList></rim:Slot>"
        "<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList>"
        "<rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
        "</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>")


def envelope(action: str, body: str, security: str = "") -> bytes:
    return (f'<s:Envelope xmlns:s="{ns.SOAP12}" xmlns:a="{ns.WSA}">'
            f'<s:Header><a:Action>{action}</a:Action><a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>{security}'
            f'</s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


def _query_worker(args) -> list[float]:
    port, patients, count, seed, *rest = args
    security = (rest[0] if rest else "") or ""     # one assertion per client, sent on each request
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(count):
        pid = patient_id(rng.randrange(patients)).replace("&", "&amp;")
        body = envelope(ns.STORED_QUERY, FIND.format(pid=pid), security)
        t = time.perf_counter()
        conn.request("POST", "/registry", body, {"Content-Type": "application/soap+xml"})
        data = conn.getresponse().read()
        times.append(time.perf_counter() - t)
        assert b"ResponseStatusType:Success" in data and data.count(b"<rim:ExtrinsicObject") >= 1, data[:500]
    return times


def _register_worker(args) -> int:
    port, feed_port, count, seed = args
    rng = random.Random(seed)
    pid = f"NEW{seed}{uuid.uuid4().hex[:6]}^^^&{DOMAIN}&ISO"
    mllp.send("127.0.0.1", feed_port, (f"MSH|^~\\&|B|B|R|R|20240101||ADT^A01^ADT_A01|{seed}|P|2.3.1\r"
                                       f"PID|||{pid}||Doe^J\r").encode())
    conn = http.client.HTTPConnection("127.0.0.1", port)
    bodies = [envelope(ns.REGISTER, submission_xml(pid, 1, rng, i)) for i in range(count)]
    for body in bodies:
        conn.request("POST", "/registry", body, {"Content-Type": "application/soap+xml"})
        data = conn.getresponse().read()
        assert b"ResponseStatusType:Success" in data, data[:800]
    return count


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--registrations", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="registry worker processes")
    parser.add_argument("--xua", action="store_true", help="FindDocuments again with an XUA assertion on each request")
    parser.add_argument("--audit", action="store_true", help="FindDocuments without and with ITI-20 audit")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xbench", dir="/tmp") as t, fresh_database(Path(t)) as url:
        measure(url, Path(t), args)


class SyslogSink(threading.Thread):
    """A TCP syslog destination that reads everything and counts the audit records (their MSGID)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records = 0
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        tail = b""
        with conn:
            while chunk := conn.recv(1 << 20):
                data = tail + chunk
                self.records += data.count(b" IHE+RFC-3881 ")
                tail = data[-13:]      # shorter than the marker: none is counted twice


def _serve(url: str, tmp: Path, args, audit_to: str = "", env: dict | None = None) -> tuple[subprocess.Popen, int, int]:
    port, feed_port = free_port(), free_port()
    env = dict(os.environ, XDSI_DATABASE_URL=url, XDSI_DATA_DIR=str(tmp), XDSI_REGISTRY_PORT=str(port),
               XDSI_REGISTRY_FEED_PORT=str(feed_port), XDSI_REGISTRY_WORKERS=str(args.workers),
               XDSI_AUDIT_DESTINATIONS=f'["{audit_to}"]' if audit_to else "[]",
               XDSI_AUDIT_SPOOL_DIR=str(tmp / f"audit-spool-{port}"), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", "registry"], env=env,
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, port, feed_port


def _find_documents(port: int, args, label: str = "", headers: list | None = None) -> float:
    """FindDocuments with 1 and 4 clients (``headers``: a SOAP header for each); returns the 4-client queries/s."""
    h = headers or [None] * 4
    _query_worker((port, args.patients, 200, 99, h[0]))  # warm up
    times = _query_worker((port, args.patients, args.queries, 1, h[0]))
    print(f"FindDocuments{label}, 1 client:  p50 {percentile(times, .5) * 1000:.1f} ms   "
          f"p99 {percentile(times, .99) * 1000:.1f} ms   ({len(times) / sum(times):.0f} queries/s)")
    with mp.Pool(4) as pool:
        started = time.perf_counter()
        results = pool.map(_query_worker, [(port, args.patients, args.queries // 4, s, h[s]) for s in range(4)])
        elapsed = time.perf_counter() - started
    flat = [t for r in results for t in r]
    print(f"FindDocuments{label}, 4 clients: {len(flat) / elapsed:.0f} queries/s   "
          f"p50 {percentile(flat, .5) * 1000:.1f} ms   p99 {percentile(flat, .99) * 1000:.1f} ms")
    return len(flat) / elapsed


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def measure_audit(url: str, tmp: Path, args) -> None:
    """The same queries against a registry without audit, then with it, alternately, twice each (the machine
    is shared: alternating keeps a neighbour's load from landing on one side only)."""
    sink = SyslogSink()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for audited in (False, True, False, True):
        proc, port, _ = _serve(url, tmp, args, f"tcp://127.0.0.1:{sink.port}" if audited else "")
        try:
            rates[audited].append(_find_documents(port, args, " with audit" if audited else " without audit"))
        finally:
            _stop(proc)
    off, on = max(rates[False]), max(rates[True])
    expected = 2 * (200 + args.queries + (args.queries // 4) * 4)
    wait_until = time.monotonic() + 30
    while sink.records < expected and time.monotonic() < wait_until:
        time.sleep(0.2)
    print(f"audit: {sink.records:,} ITI-18 records received by the syslog sink of {expected:,} queries audited "
          f"(+ Application Start/Stop)")
    print(f"FindDocuments 4 clients, with audit / without: {on:.0f} / {off:.0f} queries/s = {on / off:.3f} "
          f"(audit costs {100 * (1 - on / off):.1f}%)")


def measure(url: str, tmp: Path, args) -> None:
    migrate(url, "registry", "registry")
    load(url, args.documents, args.patients)
    if args.audit:
        measure_audit(url, tmp, args)
        return
    xua_env, headers = {}, []
    if args.xua:
        from tests.xua_idp import AUDIENCE, assertion, make_idp, security_header
        idp = make_idp(tmp, "bench-idp")
        xua_env = dict(XDSI_XUA_TRUSTED_ISSUERS=f'["{idp.cert_path}"]', XDSI_XUA_AUDIENCE=AUDIENCE)
        now = datetime.datetime.now(datetime.timezone.utc)
        headers = [security_header(assertion(idp, now=now, not_on_or_after=3600)) for _ in range(4)]
    proc, port, feed_port = _serve(url, tmp, args, env=xua_env)
    try:
        plain = _find_documents(port, args)
        if headers:
            with_xua = _find_documents(port, args, " + XUA", headers)
            print(f"FindDocuments 4 clients, with XUA / without: {with_xua:.0f} / {plain:.0f} queries/s "
                  f"= {with_xua / plain:.2f}")
        started = time.perf_counter()
        n = _register_worker((port, feed_port, args.registrations, 7))
        elapsed = time.perf_counter() - started
        print(f"ITI-42 single document, 1 client:  {n / elapsed:.0f} registrations/s")
        with mp.Pool(4) as pool:
            started = time.perf_counter()
            n = sum(pool.map(_register_worker, [(port, feed_port, args.registrations // 4, 100 + s)
                                                for s in range(4)]))
            elapsed = time.perf_counter() - started
        print(f"ITI-42 single document, 4 clients: {n / elapsed:.0f} registrations/s")
    finally:
        _stop(proc)
    with psycopg.connect(url) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        entries = conn.execute("SELECT count(*) FROM registry.document_entry").fetchone()[0]
    print(f"database: {size} for {entries:,} DocumentEntries")


if __name__ == "__main__":
    main()
