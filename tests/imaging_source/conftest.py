"""Fixtures for the imaging source: registry, repository, a PIX manager and ``xdsi serve
imaging-source`` as real processes on free ports, DCMTK as the modality/PACS peers.

The PIX manager: the real one (``xdsi serve pix``) when the project has it, else a minimal
stand-in that answers ITI-8 and ITI-9 over MLLP. ``XDSI_TEST_PIX=real|standin|auto`` (auto by
default) picks; ``pix.kind`` says which one ran.
"""
from __future__ import annotations

import importlib.util
import os
import uuid

import pytest

from tests.services import SOURCE_PEERS, free_port, launch, start_registry, start_repository

from tests.imaging_source import source_dicom as dicom_data  # noqa: E402
from tests.imaging_source import source_pix as pix_standin  # noqa: E402


def _real_pix_available() -> bool:
    from importlib.metadata import entry_points
    return importlib.util.find_spec("pix_manager") is not None and \
        importlib.util.find_spec("pix_manager.cli") is not None and \
        any(ep.name in ("pix", "pix-manager") for ep in entry_points(group="xdsi.actors"))


@pytest.fixture(scope="session")
def pix(new_database, tmp_path_factory):
    wanted = os.environ.get("XDSI_TEST_PIX", "auto")
    if wanted == "real" or (wanted == "auto" and _real_pix_available()):
        handle = pix_standin.RealPix.start(new_database(), tmp_path_factory.mktemp("pix"))
    else:
        handle = pix_standin.StandIn.start()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def domain(new_database, tmp_path_factory, pix):
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("registry"))
    repository = start_repository(database, registry.url, tmp_path_factory.mktemp("repository"))
    yield registry, repository
    repository.stop()
    registry.stop()


class Source:
    def __init__(self, proc, env, dicom_port, url, store, tmp, database_url, move_port):
        self.process, self.env, self.dicom_port, self.url = proc, env, dicom_port, url
        self.store, self.tmp, self.database_url, self.move_port = store, tmp, database_url, move_port

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def storescp(tmp_path_factory):
    """A DCMTK storescp as the C-MOVE destination (AE MOVEDEST)."""
    directory = tmp_path_factory.mktemp("movedest")
    peer = dicom_data.StoreScp.start(directory, "MOVEDEST")
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def implicit_storescp(tmp_path_factory):
    """A DCMTK storescp that accepts implicit VR little endian only (AE IMPLICITDEST)."""
    peer = dicom_data.StoreScp.start(tmp_path_factory.mktemp("implicitdest"), "IMPLICITDEST", "+xi")
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def source(new_database, tmp_path_factory, domain, pix, storescp, implicit_storescp):
    registry, repository = domain
    tmp = tmp_path_factory.mktemp("source")
    dicom_port, http_port = free_port(), free_port()
    database = new_database()
    settings = {"dicom_port": dicom_port, "port": http_port, "quiet_seconds": 1, "retry_seconds": 1,
                "poll_seconds": 0.2, "repository_url": repository.url, "registry_url": registry.url,
                "pix_host": "127.0.0.1",
                "pix_port": pix.port, "store_dir": tmp / "images", "min_free_bytes": 0,
                "move_destinations": f'{{ MOVEDEST = "127.0.0.1:{storescp.port}", '
                                     f'IMPLICITDEST = "127.0.0.1:{implicit_storescp.port}" }}',
                "outside_calling_aes": '["OUTSIDE_PACS"]', "peers": SOURCE_PEERS}
    proc, env = launch("imaging-source", tmp, database, settings, [dicom_port, http_port])
    s = Source(proc, env, dicom_port, f"http://127.0.0.1:{http_port}/imaging-source", tmp / "images", tmp,
               database, storescp.port)
    yield s
    s.stop()


@pytest.fixture
def patient(pix, domain):
    """A new local patient known to PIX, its affinity-domain id fed to the registry."""
    registry, _ = domain
    local = f"L{uuid.uuid4().hex[:8]}"
    domain_id = pix.register(local, dicom_data.LOCAL_ISSUER)
    pix_standin.feed_registry(registry, domain_id)
    return local, domain_id
