"""The repository's settings: ``[repository]`` and ``[domain]``, typed and checked at start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from affinity_domain.config import Count, DomainSettings, Natural, Port, Seconds, SoapSettings


@dataclass(frozen=True)
class RepositorySettings(SoapSettings):
    SECTION: ClassVar[str] = "repository"
    host: str
    port: Port
    path: str
    repository_unique_id: str
    registry_url: str
    registry_timeout: Seconds
    store_dir: str                  # empty: <data dir>/repository
    threads: Count
    workers: Count
    max_request_bytes: Count
    max_document_bytes: Count
    recovery_seconds: Natural
    pending_grace_seconds: Natural
    domain: DomainSettings
