"""Connectathon-style scenarios run on the whole domain as real processes (see services.start_chain)."""
import pytest

from tests.services import start_chain


@pytest.fixture(scope="module")
def chain(new_database, tmp_path_factory):
    c = start_chain(new_database(), tmp_path_factory.mktemp)
    yield c
    c.stop()
