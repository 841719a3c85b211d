"""The registry's settings: ``[registry]`` and ``[domain]``, typed and checked at start."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from affinity_domain import access
from affinity_domain.config import Count, DomainSettings, Port, Seconds, SoapSettings


@dataclass(frozen=True)
class RegistrySettings(SoapSettings):
    SECTION: ClassVar[str] = "registry"
    host: str
    port: Port
    path: str
    feed_host: str
    feed_port: Port
    feed_max_connections: Count
    feed_threads: Count
    feed_idle_seconds: Seconds
    feed_message_seconds: Seconds
    feed_backlog: Count
    feed_senders: dict[str, Any]
    feed_loopback_senders: bool
    threads: Count
    workers: Count
    max_request_bytes: Count
    max_query_results: Count
    codes_file: str
    validate_codes: bool
    multi_patient_roles: tuple[str, ...]
    domain: DomainSettings
    hl7_senders: tuple = field(init=False)      # feed_senders, checked (access.Hl7Sender)

    def __post_init__(self):
        object.__setattr__(self, "hl7_senders", access.hl7_senders(self.feed_senders, self.SECTION, "feed_senders"))
