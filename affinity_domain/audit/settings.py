"""What an actor's audit sender reads from ``[audit]`` (and ``[tls] allow_plaintext``), typed and checked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from ..config import ConfigError, Count, Range, Seconds


@dataclass(frozen=True)
class AuditSenderSettings:
    SECTION: ClassVar[str] = "audit"
    destinations: tuple[str, ...]
    spool_dir: str
    send_batch: Count
    send_timeout: Seconds
    retry_base_seconds: Seconds
    retry_max_seconds: Seconds
    segment_bytes: Count
    max_record_bytes: Annotated[int, Range(2048)]
    source_id: str
    enterprise_site_id: str

    def __post_init__(self):
        from .sender import parse_destination
        for url in self.destinations:
            parse_destination(url)
        if len(set(self.destinations)) != len(self.destinations):
            raise ConfigError("[audit] destinations: a destination is named twice")
