"""Fixtures that run real services: a fresh PostgreSQL database per test run, and the registry
as its own process (``xdsi serve registry``) on free ports."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests import shared
from tests.services import DOMAIN, ROOT, Service, free_port, start_registry, wait_for_port  # noqa: F401
from tests.services import create_database, database_server, drop_database


def pytest_terminal_summary(terminalreporter):
    """One line for every test skipped for want of the kit or IHE's files, not one per test."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if shared.SKIPPED in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(shared.summary(len(skipped)), yellow=True)


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server tests run against: $XDSI_DATABASE_URL, else an embedded one."""
    with tempfile.TemporaryDirectory(prefix="xpg", dir="/tmp") as d, database_server(Path(d)) as url:
        yield url


@pytest.fixture(scope="session")
def new_database(server_url):
    """A factory of fresh databases on the test server, dropped at the end of the run."""
    created = []

    def make() -> str:
        created.append(create_database(server_url))
        return created[-1]

    yield make
    for url in created:
        drop_database(server_url, url)


@pytest.fixture(scope="session")
def registry(new_database, tmp_path_factory):
    service = start_registry(new_database(), tmp_path_factory.mktemp("registry"))
    yield service
    service.stop()
