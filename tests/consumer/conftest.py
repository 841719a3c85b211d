"""The whole chain as real processes on free ports: registry, repository, PIX manager, imaging
source, consumer; DCMTK storescp as hospital B's local PACS."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from services import StoreScp, free_port, launch, start_pix, start_registry, start_repository

sys.path.insert(0, str(Path(__file__).parent))
SOURCE_RUID = "1.3.6.1.4.1.21367.13.40.302"


@dataclass
class Chain:
    registry: object
    repository: object
    pix: object
    source_dicom_port: int
    source_url: str
    consumer_mllp: int
    consumer_http: str
    pacs: StoreScp
    processes: list


@pytest.fixture(scope="module")
def chain(new_database, tmp_path_factory):
    database = new_database()
    tmp = tmp_path_factory.mktemp("chain")
    registry = start_registry(database, tmp)
    repository = start_repository(database, registry.url, tmp_path_factory.mktemp("repository"))
    pix = start_pix(database, tmp_path_factory.mktemp("pix"), registry_feed=f"127.0.0.1:{registry.feed[1]}")
    pacs = StoreScp.start(tmp_path_factory.mktemp("localpacs"), "LOCALPACS")
    dicom_port, rad69_port = free_port(), free_port()
    source_tmp = tmp_path_factory.mktemp("source")
    source, _ = launch("imaging-source", source_tmp, database, {
        "dicom_port": dicom_port, "port": rad69_port, "quiet_seconds": 1, "retry_seconds": 1, "poll_seconds": 0.2,
        "repository_url": repository.url, "pix_port": pix.mllp[1], "store_dir": source_tmp / "images",
        "min_free_bytes": 0}, [dicom_port, rad69_port])
    source_url = f"http://127.0.0.1:{rad69_port}/imaging-source"
    mllp_port, http_port = free_port(), free_port()
    consumer, _ = launch("consumer", tmp_path_factory.mktemp("consumer"), database, {
        "mllp_port": mllp_port, "http_port": http_port, "pix": f"127.0.0.1:{pix.mllp[1]}",
        "registry_url": registry.url, "repositories": f'{{ "1.3.6.1.4.1.21367.13.40.301" = "{repository.url}" }}',
        "sources": f'{{ "{SOURCE_RUID}" = "{source_url}" }}', "local_pacs": f"LOCALPACS@127.0.0.1:{pacs.port}",
        "accession_prefix": "A-", "max_attempts": 3}, [mllp_port, http_port])
    c = Chain(registry, repository, pix, dicom_port, source_url, mllp_port, f"http://127.0.0.1:{http_port}", pacs,
              [consumer, source])
    yield c
    for p in c.processes:
        p.terminate()
        p.wait(timeout=30)
    pacs.stop()
    pix.stop()
    repository.stop()
    registry.stop()
