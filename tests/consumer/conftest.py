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
