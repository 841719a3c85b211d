"""Running our services as real processes for tests: free ports, waiting for a listener, the
registry and repository started as ``xdsi serve …``. Shared by every test folder (import ``services``)."""
from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from affinity_domain import db

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"


@contextlib.contextmanager
def database_server(work: Path):
    """The URL of $XDSI_DATABASE_URL's server, else of an embedded PostgreSQL under ``work`` (a short
    path: the server's Unix socket lives there), stopped on leaving."""
    url = os.environ.get("XDSI_DATABASE_URL")
    if url:
        yield url
        return
    try:
        yield db.embedded_url(work)
    finally:
        db.stop_embedded(work)


def create_database(server_url: str, prefix: str = "xdsi_test") -> str:
    """A new, empty database on that server (each run makes its own); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(work: Path, prefix: str = "xdsi_bench"):
    """A new database on $XDSI_DATABASE_URL's server, else on an embedded one under ``work``; dropped on leaving."""
    with database_server(work) as server:
        url = create_database(server, prefix)
        try:
            yield url
        finally:
            drop_database(server, url)


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_EPHEMERAL_LOW = int(_EPHEMERAL.read_text().split()[0]) if _EPHEMERAL.exists() else 32768
_handed_out: set[int] = set()


def own_address() -> str | None:
    """This machine's address on its network (not loopback), or None when it has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))          # no packet is sent: it picks the outgoing address
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def free_port() -> int:
    """A port for a service to listen on, from below the kernel's ephemeral range: a port the
    kernel lent (bind to 0) can be taken again as the local end of an outgoing connection before
    the service binds it."""
    for _ in range(1000):
        port = random.randrange(max(1024, _EPHEMERAL_LOW - 12000), _EPHEMERAL_LOW)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


@dataclass
class Running:
    """An actor running as its own process (``xdsi serve ACTOR``)."""

    process: subprocess.Popen
    env: dict

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            self.process.wait(timeout=30)


# The JSON APIs need a bearer token (affinity_domain.http_auth): every database an actor is launched
# on knows this operator's, which tests/conftest.py sends with every urllib request and
# hostile.curl with every curl; XDSI_TOKEN gives it to the xdsi commands.
TEST_TOKEN = "xdsi_tests-operator-token-not-secret"
TEST_TOKEN_NAME = "tester"


def grant_test_token(database_url: str) -> None:
    from affinity_domain import db
    from affinity_domain.tokens import SCHEMA, digest
    db.migrate(database_url, SCHEMA, "affinity_domain")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.token (name, role, sha256) VALUES (%s, 'operator', %s) "
                     "ON CONFLICT DO NOTHING", (TEST_TOKEN_NAME, digest(TEST_TOKEN)))


def new_token(database_url: str, name: str, role: str) -> str:
    """A token of ``name`` with ``role``, made as ``xdsi token add`` makes one."""
    from affinity_domain.tokens import TokenStore
    store = TokenStore(database_url)
    try:
        return store.add(name, role)
    finally:
        store.close()


def launch(actor: str, tmp: Path, database_url: str, settings: dict, ports: list[int],
           preexec_fn=None, env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """Start ``xdsi serve ACTOR`` with ``settings`` as ``XDSI_<SECTION>_<KEY>`` and wait for its ports."""
    prefix = "XDSI_" + actor.replace("-", "_").upper() + "_"
    grant_test_token(database_url)
    # No audit records to the machine's default ARR port unless the test names a destination.
    env = dict(os.environ, **(env or {}), XDSI_DATABASE_URL=database_url, XDSI_DATA_DIR=str(tmp),
               XDSI_TOKEN=TEST_TOKEN, XDSI_AUDIT_DESTINATIONS=os.environ.get("XDSI_AUDIT_DESTINATIONS", "[]"),
               **{prefix + k.upper(): str(v) for k, v in settings.items()})
    log = open(tmp / f"{actor}-{ports[0]}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", actor],
                            env=env, stdout=log, stderr=log, cwd=ROOT, preexec_fn=preexec_fn)
    for port in ports:
        wait_for_port(port, proc)
    return proc, env


@dataclass
class Service(Running):
    url: str = ""
    feed: tuple[str, int] = ("", 0)
    database_url: str = ""


def start_registry(database_url: str, tmp: Path, **settings) -> Service:
    settings = {"port": free_port(), "feed_port": free_port(), **settings}
    port, feed_port = int(settings["port"]), int(settings["feed_port"])
    proc, env = launch("registry", tmp, database_url, settings, [port, feed_port])
    return Service(proc, env, f"http://127.0.0.1:{port}/registry", ("127.0.0.1", feed_port), database_url)


@dataclass
class Repository(Running):
    url: str = ""
    store: Path = Path()
    database_url: str = ""
    port: int = 0


def start_repository(database_url: str, registry_url: str, tmp: Path, port: int | None = None,
                     preexec_fn=None, **settings) -> Repository:
    port = port or free_port()
    store = tmp / "store"
    proc, env = launch("repository", tmp, database_url,
                       {"port": port, "registry_url": registry_url, "store_dir": store, **settings},
                       [port], preexec_fn)
    return Repository(proc, env, f"http://127.0.0.1:{port}/repository", store, database_url, port)


@dataclass
class Pix(Running):
    mllp: tuple[str, int] = ("", 0)
    http: str = ""
    database_url: str = ""


def start_pix(database_url: str, tmp: Path, **settings) -> Pix:
    port, http_port = free_port(), free_port()
    proc, env = launch("pix", tmp, database_url, {"port": port, "http_port": http_port, **settings},
                       [port, http_port])
    return Pix(proc, env, ("127.0.0.1", port), f"http://127.0.0.1:{http_port}", database_url)


# DICOM peers nobody here wrote: DCMTK, with TCP_NODELAY (it reads the variable).
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


class StoreScp:
    def __init__(self, proc, port, directory):
        self.process, self.port, self.directory = proc, port, directory

    @classmethod
    def start(cls, directory: Path, ae: str, *options: str) -> "StoreScp":
        port = free_port()
        proc = subprocess.Popen(["/usr/bin/storescp", "-aet", ae, "+uf", *options, "-od", str(directory), str(port)],
                                env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, proc)
        return cls(proc, port, directory)

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def read_http_message(conn: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP request or answer with a Content-Length, read off a bare socket:
    for the tests' stand-ins (proxies, peers that misbehave), which use none of our HTTP code."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def wait_until(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


SOURCE_RUID = "1.3.6.1.4.1.21367.13.40.302"
# The imaging source's configured DICOM peers for tests that query, retrieve or reject (access.py):
# DCMTK's findscu, movescu and getscu under their default AE titles, the tests' modality, and the
# consumer, each from loopback.
SOURCE_PEERS = ('{ QR = { ae_title = "FINDSCU", roles = ["query"] }, '
                'MOVER = { ae_title = "MOVESCU", roles = ["retrieve"] }, '
                'GETTER = { ae_title = "GETSCU", roles = ["retrieve"] }, '
                'MODALITY = { ae_title = "MODALITY", roles = ["store", "reject"] }, '
                'CONSUMER = { ae_title = "XDSI_CONSUMER", roles = ["query", "retrieve"] } }')


@dataclass
class Chain:
    registry: object
    repository: object
    pix: object
    source_dicom_port: int
    source_url: str
    consumer_mllp: int
    consumer_http: str
    pacs: StoreScp
    processes: list
    consumer_dicom: int = 0

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
            p.wait(timeout=30)
        self.pacs.stop()
        self.pix.stop()
        self.repository.stop()
        self.registry.stop()


def start_chain(database: str, mktemp, pacs_options: tuple = (), consumer: dict | None = None) -> Chain:
    """The whole domain on free ports, every actor a process, DCMTK storescp as hospital B's PACS
    (with ``pacs_options``); ``consumer``: more consumer settings."""
    tmp = mktemp("chain")
    registry = start_registry(database, tmp)
    repository = start_repository(database, registry.url, mktemp("repository"))
    pix = start_pix(database, mktemp("pix"), registry_feed=f"127.0.0.1:{registry.feed[1]}")
    pacs = StoreScp.start(mktemp("localpacs"), "LOCALPACS", *pacs_options)
    dicom_port, rad69_port, consumer_dicom = free_port(), free_port(), free_port()
    source_tmp = mktemp("source")
    source, _ = launch("imaging-source", source_tmp, database, {
        "dicom_port": dicom_port, "port": rad69_port, "quiet_seconds": 1, "retry_seconds": 1, "poll_seconds": 0.2,
        "repository_url": repository.url, "registry_url": registry.url, "pix_port": pix.mllp[1],
        "store_dir": source_tmp / "images",
        "min_free_bytes": 0, "move_destinations": f'{{ XDSI_CONSUMER = "127.0.0.1:{consumer_dicom}" }}',
        "peers": SOURCE_PEERS},
        [dicom_port, rad69_port])
    source_url = f"http://127.0.0.1:{rad69_port}/imaging-source"
    mllp_port, http_port = free_port(), free_port()
    consumer, _ = launch("consumer", mktemp("consumer"), database, {
        "mllp_port": mllp_port, "http_port": http_port, "pix": f"127.0.0.1:{pix.mllp[1]}",
        "registry_url": registry.url, "repositories": f'{{ "1.3.6.1.4.1.21367.13.40.301" = "{repository.url}" }}',
        "sources": f'{{ "{SOURCE_RUID}" = "{source_url}" }}', "local_pacs": f"LOCALPACS@127.0.0.1:{pacs.port}",
        "accession_prefix": "A-", "max_attempts": 3, "dicom_port": consumer_dicom,
        "dicom_sources": f'{{ XDSI_SOURCE = "127.0.0.1:{dicom_port}" }}', **(consumer or {})},
        [mllp_port, http_port, consumer_dicom])
    return Chain(registry, repository, pix, dicom_port, source_url, mllp_port, f"http://127.0.0.1:{http_port}",
                 pacs, [consumer, source], consumer_dicom)


def domain_on_free_ports() -> tuple[dict[str, str], list[int]]:
    """Environment that moves every actor of ``xdsi up`` / ``xdsi demo`` off the default ports,
    the addresses each actor has of the others included; and the ports the actors listen on."""
    keys = ("registry", "feed", "repository", "pix", "pix_http", "source_dicom", "source", "consumer_mllp",
            "consumer_http", "consumer_dicom", "pacs", "audit_tls", "audit_udp", "audit_http")
    p = {key: free_port() for key in keys}
    at = "127.0.0.1"
    registry, repository = f"http://{at}:{p['registry']}/registry", f"http://{at}:{p['repository']}/repository"
    source = f"http://{at}:{p['source']}/imaging-source"
    env = {
        "XDSI_REGISTRY_PORT": p["registry"], "XDSI_REGISTRY_FEED_PORT": p["feed"],
        "XDSI_REPOSITORY_PORT": p["repository"], "XDSI_REPOSITORY_REGISTRY_URL": registry,
        "XDSI_PIX_PORT": p["pix"], "XDSI_PIX_HTTP_PORT": p["pix_http"], "XDSI_PIX_REGISTRY_FEED": f"{at}:{p['feed']}",
        "XDSI_IMAGING_SOURCE_DICOM_PORT": p["source_dicom"], "XDSI_IMAGING_SOURCE_PORT": p["source"],
        "XDSI_IMAGING_SOURCE_REPOSITORY_URL": repository, "XDSI_IMAGING_SOURCE_REGISTRY_URL": registry,
        "XDSI_IMAGING_SOURCE_PIX_PORT": p["pix"], "XDSI_IMAGING_SOURCE_PEERS": SOURCE_PEERS,
        "XDSI_CONSUMER_MLLP_PORT": p["consumer_mllp"], "XDSI_CONSUMER_HTTP_PORT": p["consumer_http"],
        "XDSI_CONSUMER_DICOM_PORT": p["consumer_dicom"], "XDSI_CONSUMER_PIX": f"{at}:{p['pix']}",
        "XDSI_CONSUMER_REGISTRY_URL": registry,
        "XDSI_CONSUMER_REPOSITORIES": f'{{ "1.3.6.1.4.1.21367.13.40.301" = "{repository}" }}',
        "XDSI_CONSUMER_SOURCES": f'{{ "{SOURCE_RUID}" = "{source}" }}',
        "XDSI_CONSUMER_DICOM_SOURCES": f'{{ XDSI_SOURCE = "{at}:{p["source_dicom"]}" }}',
        "XDSI_CONSUMER_LOCAL_PACS": f"LOCALPACS@{at}:{p['pacs']}",
        "XDSI_AUDIT_TLS_PORT": p["audit_tls"], "XDSI_AUDIT_UDP_PORT": p["audit_udp"],
        "XDSI_AUDIT_HTTP_PORT": p["audit_http"], "XDSI_AUDIT_DESTINATIONS": f'["tls://{at}:{p["audit_tls"]}"]',
    }
    listeners = [port for key, port in p.items() if key not in ("pacs", "audit_udp")]
    return {k: str(v) for k, v in env.items()}, listeners


class Hl7Receiver(threading.Thread):
    """An HL7 v2 receiver over MLLP on a bare socket (none of the project's MLLP code): an ITI-10
    subscriber, a PACS order interface, an ORU receiver. ACKs every message and keeps it, with
    the time it arrived. ``code``: the MSA-1 it answers (AR: a receiver that rejects every message)."""

    def __init__(self, code: str = "AA"):
        super().__init__(daemon=True)
        self.code = code
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.messages: list[str] = []
        self.arrived: list[float] = []
        self.received = threading.Condition()
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while True:
                    while b"\x1c\x0d" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if b"\x1c\x0d" not in data:
                        break
                    frame, _, data = data.partition(b"\x1c\x0d")
                    text = frame.strip(b"\x0b").decode("utf-8", "replace")
                    control = text.split("\r")[0].split("|")[9]
                    conn.sendall(f"\x0bMSH|^~\\&|RCV|RCV|X|X|20240101||ACK|1|P|2.5\rMSA|{self.code}|{control}\r\x1c\x0d".encode())
                    with self.received:
                        self.messages.append(text)
                        self.arrived.append(time.time())
                        self.received.notify_all()

    def wait_for(self, predicate, timeout: float = 15) -> str:
        with self.received:
            ok = self.received.wait_for(lambda: any(predicate(m) for m in self.messages), timeout)
            assert ok, self.messages
            return next(m for m in self.messages if predicate(m))

    def of_type(self, kind: str) -> list[tuple[float, list[str]]]:
        """(arrival, segments) of the messages whose MSH-9 starts with ``kind`` (ORM^O01, ORU^R01)."""
        with self.received:
            kept = list(zip(self.arrived, self.messages))
        return [(at, segments) for at, text in kept
                if (segments := [s for s in text.split("\r") if s])[0].split("|")[8].startswith(kind)]

    def stop(self) -> None:
        self.sock.close()
