"""Fixtures that run real services: a fresh PostgreSQL database per test run, and the registry
as its own process (``xdsi serve registry``) on free ports."""
from __future__ import annotations

import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests import shared
from tests.services import DOMAIN, ROOT, Service, free_port, start_registry, wait_for_port  # noqa: F401
from tests.services import TEST_TOKEN, create_database, database_server, drop_database


class _TestBearer(urllib.request.BaseHandler):
    """Every urllib request of the tests carries the test operator's token (services.TEST_TOKEN)
    unless it says otherwise: the JSON APIs authenticate every request."""

    def http_request(self, request):
        if not request.has_header("Authorization"):
            request.add_unredirected_header("Authorization", f"Bearer {TEST_TOKEN}")
        return request

    https_request = http_request


urllib.request.install_opener(urllib.request.build_opener(_TestBearer))


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
