"""NIST XDS toolkit registry tests replayed against our registry: one case per test-plan section.

The data sets (12346, 12374, 12361) are registered once per session, before any case runs, into the
fresh registry of the ``registry`` fixture; the stored-query cases count what those left behind, so
they need a registry with no other data for those patients (12364 counts across all patients).
"""
from __future__ import annotations

import pytest

from tests.conformance import nist_kit as kit
from tests.conformance.nist_runner import Runner
from tests.shared import KIT, skip_module_without

skip_module_without(KIT)
CASES = [(test, name) for test in kit.ALL_TESTS for name in kit.section_names(test)]


@pytest.fixture(scope="session")
def nist(registry, tmp_path_factory):
    runner = Runner(registry.url, tuple(registry.feed), tmp_path_factory.mktemp("nist-kit"))
    for test in kit.DATA_SETS:
        runner.run_test(test)         # their own cases report any failure
    return runner


@pytest.mark.parametrize(("test", "section"), CASES, ids=[f"{t}/{s}" for t, s in CASES])
def test_nist_section(nist, test, section):
    failed = [result for result in nist.run_section(test, section) if result.problems]
    assert not failed, "\n".join(result.describe() for result in failed)
