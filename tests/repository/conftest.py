"""Fixtures for the repository: the registry and ``xdsi serve repository`` as real processes on
free ports, the repository pointed at that registry, both on a fresh PostgreSQL database."""
from __future__ import annotations


import pytest

from tests.services import start_registry, start_repository


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
