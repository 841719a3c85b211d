"""NIST XDS toolkit repository tests, one case per test: every section's steps must meet its
testplan.xml's ExpectedStatus / ExpectedErrorCode / ExpectedErrorMessage / ExpectedContents, and
retrieved documents must be the bytes submitted.

PnrXop and PnrNoXop send messages captured at past connectathons, whose codes (classCode
``DEMO-Ext Summary``, …) belong to those events' code sets, not to this affinity domain's: they
run against a registry configured without code-set validation (``validate_codes = false``)."""
from __future__ import annotations

import pytest

from tests.services import start_registry, start_repository
from tests.repository.nist_repository import TESTS, Runner
from tests.shared import KIT, needs

pytestmark = needs(KIT)
CAPTURED = ("PnrXop", "PnrNoXop")


@pytest.fixture(scope="module")
def nist(domain):
    registry, repository = domain
    return Runner(registry, repository.url)


@pytest.fixture(scope="module")
def nist_open_codes(new_database, tmp_path_factory):
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("open-registry"), validate_codes="false")
    repository = start_repository(database, registry.url, tmp_path_factory.mktemp("open-repository"))
    yield Runner(registry, repository.url)
    repository.stop()
    registry.stop()


@pytest.mark.parametrize("test", [t for t in TESTS if t not in CAPTURED])
def test_nist_repository_case(nist, test):
    _passes(nist, test)


@pytest.mark.parametrize("test", CAPTURED)
def test_nist_repository_captured_message(nist_open_codes, test):
    _passes(nist_open_codes, test)


def _passes(runner, test):
    results = runner.run_test(test)
    assert results
    failed = [r for r in results if r.problems]
    assert not failed, "\n".join(f"{r.key} {r.step}: {r.problems}" for r in failed)
