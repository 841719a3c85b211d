"""Fixtures that run real services: a fresh PostgreSQL database per test run, and the registry
as its own process (``xdsi serve registry``) on free ports."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server tests run against: $XDSI_DATABASE_URL, else an embedded one."""
    url = os.environ.get("XDSI_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver
    # pgserver's Unix socket path must stay short.
    with tempfile.TemporaryDirectory(prefix="xpg", dir="/tmp") as d:
        server = pgserver.get_server(d, cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def new_database(server_url):
    """A factory of fresh databases on the test server, dropped at the end of the run."""
    created = []

    def make() -> str:
        name = f"xdsi_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_database(server_url, name)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    url: str
    feed: tuple[str, int]
    database_url: str
    process: subprocess.Popen
    env: dict

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            self.process.wait(timeout=30)


def start_registry(database_url: str, tmp: Path, **settings) -> Service:
    port, feed_port = free_port(), free_port()
    env = dict(os.environ, XDSI_DATABASE_URL=database_url, XDSI_DATA_DIR=str(tmp),
               XDSI_REGISTRY_PORT=str(port), XDSI_REGISTRY_FEED_PORT=str(feed_port),
               **{f"XDSI_REGISTRY_{k.upper()}": str(v) for k, v in settings.items()})
    log = open(tmp / f"registry-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", "registry"],
                            env=env, stdout=log, stderr=log, cwd=ROOT)
    wait_for_port(port, proc)
    wait_for_port(feed_port, proc)
    return Service(f"http://127.0.0.1:{port}/registry", ("127.0.0.1", feed_port), database_url, proc, env)


@pytest.fixture(scope="session")
def registry(new_database, tmp_path_factory):
    service = start_registry(new_database(), tmp_path_factory.mktemp("registry"))
    yield service
    service.stop()
