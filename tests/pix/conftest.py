"""Fixtures for the PIX manager: the registry and ``xdsi serve pix`` as real processes on free ports,
the PIX manager forwarding affinity-domain ids to that registry."""
from __future__ import annotations


import pytest

from tests.services import Hl7Receiver, start_pix, start_registry  # noqa: F401


@pytest.fixture(scope="module")
def subscriber():
    """An ITI-10 receiver."""
    s = Hl7Receiver()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def domain(new_database, tmp_path_factory, subscriber):
    """(registry, pix) sharing one database, the PIX forwarding to the registry and notifying a subscriber."""
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("registry"))
    pix = start_pix(database, tmp_path_factory.mktemp("pix"), registry_feed=f"127.0.0.1:{registry.feed[1]}",
                    subscribers=f'["127.0.0.1:{subscriber.port}"]',
                    facility_authorities='{ WARD = "1.2.840.9.7" }')
    yield registry, pix
    pix.stop()
    registry.stop()
