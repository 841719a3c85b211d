"""Fixtures for the repository: the registry and ``xdsi serve repository`` as real processes on
free ports, the repository pointed at that registry, both on a fresh PostgreSQL database."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Two conftest.py files share the module name "conftest": load the top one by path, and give the
# name back to it once collection is done, for the tests that ``from conftest import SHARED``.
_spec = importlib.util.spec_from_file_location("xdsi_tests_conftest", Path(__file__).parents[1] / "conftest.py")
top = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = top
_spec.loader.exec_module(top)
ROOT, SHARED, free_port, start_registry, wait_for_port = (top.ROOT, top.SHARED, top.free_port,
                                                          top.start_registry, top.wait_for_port)
sys.path.insert(0, str(Path(__file__).parent))
REPOSITORY_UNIQUE_ID = "1.3.6.1.4.1.21367.13.40.301"


@dataclass
class Repository:
    url: str
    store: Path
    database_url: str
    process: subprocess.Popen
    env: dict
    port: int

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            self.process.wait(timeout=30)


def start_repository(database_url: str, registry_url: str, tmp: Path, port: int | None = None,
                     preexec_fn=None, **settings) -> Repository:
    port = port or free_port()
    store = tmp / "store"
    env = dict(os.environ, XDSI_DATABASE_URL=database_url, XDSI_DATA_DIR=str(tmp),
               XDSI_REPOSITORY_PORT=str(port), XDSI_REPOSITORY_REGISTRY_URL=registry_url,
               XDSI_REPOSITORY_STORE_DIR=str(store),
               **{f"XDSI_REPOSITORY_{k.upper()}": str(v) for k, v in settings.items()})
    log = open(tmp / f"repository-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", "repository"],
                            env=env, stdout=log, stderr=log, cwd=ROOT, preexec_fn=preexec_fn)
    wait_for_port(port, proc)
    return Repository(f"http://127.0.0.1:{port}/repository", store, database_url, proc, env, port)


@pytest.fixture(scope="session")
def domain(new_database, tmp_path_factory):
    """(registry, repository) sharing one database, as compose.yaml runs them."""
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("registry"))
    repository = start_repository(database, registry.url, tmp_path_factory.mktemp("repository"))
    yield registry, repository
    repository.stop()
    registry.stop()


@pytest.fixture(scope="session")
def repository(domain):
    return domain[1]


@pytest.fixture(scope="session")
def registry_service(domain):
    return domain[0]


def pytest_collection_finish(session):
    sys.modules["conftest"] = top     # see the top of this file
