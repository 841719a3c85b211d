"""The whole chain as real processes on free ports: registry, repository, PIX manager, imaging
source, consumer; DCMTK storescp as hospital B's local PACS."""
from __future__ import annotations


import pytest

from tests.services import start_chain


@pytest.fixture(scope="module")
def chain(new_database, tmp_path_factory):
    c = start_chain(new_database(), tmp_path_factory.mktemp)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def extra_consumer(chain, new_database, tmp_path_factory):
    """Start another consumer (its own database and local PACS) against the chain's actors, with
    ``settings`` overriding the chain's endpoints; stopped at the end of the module."""
    from tests.consumer import consumer_side
    started = []

    def start(**settings):
        c = consumer_side.start_consumer(chain, new_database(), tmp_path_factory.mktemp, **settings)
        started.append(c)
        return c
    yield start
    for c in started:
        c.stop()
