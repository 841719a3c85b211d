"""NIST XDS toolkit registry tests replayed against our registry: one case per test-plan section.

The data sets (12346, 12374, 12361) are registered once per session, before any case runs, into a
fresh registry of its own; the stored-query cases count what those left behind, so they need a
registry with no other data for those patients (12364 counts across all patients). Every request
carries an XUA assertion whose role that registry answers ITI-51 for.
"""
from __future__ import annotations

import datetime

import pytest

from tests.conformance import nist_kit as kit
from tests.conformance.nist_runner import Runner
from tests.services import start_registry
from tests.shared import KIT, skip_module_without
from tests.xua_idp import AUDIENCE, assertion, make_idp

skip_module_without(KIT)
CASES = [(test, name) for test in kit.ALL_TESTS for name in kit.section_names(test)]


ROLE = ("xdsi-population-health", "1.3.6.1.4.1.21367.2017.7", "Population health analyst")


@pytest.fixture(scope="session")
def nist_registry(new_database, tmp_path_factory):
    """A registry of its own that trusts a test IdP and answers ITI-51 (12364) for ``ROLE``."""
    idp = make_idp(tmp_path_factory.mktemp("nist-idp"), "nist-idp")
    service = start_registry(new_database(), tmp_path_factory.mktemp("nist-registry"),
                             xua_trusted_issuers=f'["{idp.cert_path}"]', xua_audience=AUDIENCE,
                             multi_patient_roles=f'["{ROLE[0]}"]')
    yield service, idp
    service.stop()


@pytest.fixture(scope="session")
def nist(nist_registry, tmp_path_factory):
    registry, idp = nist_registry
    runner = Runner(registry.url, tuple(registry.feed), tmp_path_factory.mktemp("nist-kit"),
                    assertion=lambda: assertion(idp, now=datetime.datetime.now(datetime.timezone.utc),
                                                roles=(ROLE,)))
    for test in kit.DATA_SETS:
        runner.run_test(test)         # their own cases report any failure
    return runner


@pytest.mark.parametrize(("test", "section"), CASES, ids=[f"{t}/{s}" for t, s in CASES])
def test_nist_section(nist, test, section):
    failed = [result for result in nist.run_section(test, section) if result.problems]
    assert not failed, "\n".join(result.describe() for result in failed)
