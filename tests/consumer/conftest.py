"""The whole chain as real processes on free ports: registry, repository, PIX manager, imaging
source, consumer; DCMTK storescp as hospital B's local PACS."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services import start_chain

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def chain(new_database, tmp_path_factory):
    c = start_chain(new_database(), tmp_path_factory.mktemp)
    yield c
    c.stop()


sys.path.insert(0, str(Path(__file__).parents[1] / "repository"))


@pytest.fixture(scope="module")
def extra_consumer(chain, new_database, tmp_path_factory):
    """Start another consumer (its own database and local PACS) against the chain's actors, with
    ``settings`` overriding the chain's endpoints; stopped at the end of the module."""
    import consumer_side
    started = []

    def start(**settings):
        c = consumer_side.start_consumer(chain, new_database(), tmp_path_factory.mktemp, **settings)
        started.append(c)
        return c
    yield start
    for c in started:
        c.stop()
