"""The Audit Record Repository's settings: its part of ``[audit]``, typed and checked at start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from affinity_domain.config import Count, Port, Seconds


@dataclass(frozen=True)
class ArrSettings:
    SECTION: ClassVar[str] = "audit"
    host: str
    tls_port: Port
    udp_port: Port
    http_port: Port
    max_message_bytes: Count
    udp_buffer_bytes: Count
    max_connections: Count
    idle_timeout: Seconds
    queue_records: Count
    insert_batch: Count
    writers: Count
    max_search_results: Count
