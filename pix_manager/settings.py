"""The PIX manager's settings: ``[pix]`` and ``[domain]``, typed and checked at start, with what the
index matches by (thresholds, blocking keys) made from them once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from affinity_domain import access
from affinity_domain.config import ConfigError, Count, DomainSettings, HttpSettings, Port, Seconds

from . import blocking
from .domains import Domains
from .matching import Thresholds


@dataclass(frozen=True)
class PixSettings(HttpSettings):
    SECTION: ClassVar[str] = "pix"
    host: str
    port: Port
    http_host: str
    http_port: Port
    domains: tuple[str, ...]                    # OIDs (from OID or NS&OID&ISO entries); empty: open
    facility_authorities: dict[str, str]
    senders: dict[str, Any]
    loopback_senders: bool
    lower_threshold: float
    upper_threshold: float
    blocking_keys: tuple[str, ...]              # empty in the configuration: the built-in keys
    model_reload_seconds: Seconds               # how often a running manager looks for newly trained parameters
    affinity_prefix: str
    registry_feed: str                          # host:port; empty: not forwarded
    subscribers: tuple[str, ...]                # ITI-10 host:port
    max_message_bytes: Count
    workers: Count
    max_json_bytes: Count
    mllp_max_connections: Count
    mllp_threads: Count
    mllp_idle_seconds: Seconds
    mllp_message_seconds: Seconds
    mllp_backlog: Count
    domain: DomainSettings
    thresholds: Thresholds = field(init=False)
    hl7_senders: tuple = field(init=False)      # senders, checked (access.Hl7Sender)
    authorities: Domains = field(init=False)    # the domains with their namespaces

    def __post_init__(self):
        keys = self.blocking_keys or tuple(blocking.DEFAULT_KEYS)
        try:
            blocking.check(keys)
            authorities = Domains.parse(self.domains)
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
        if self.lower_threshold > self.upper_threshold:
            raise ConfigError("[pix] lower_threshold must not be above upper_threshold")
        object.__setattr__(self, "hl7_senders", access.hl7_senders(self.senders, self.SECTION))
        object.__setattr__(self, "blocking_keys", keys)
        object.__setattr__(self, "authorities", authorities)
        object.__setattr__(self, "domains", authorities.oids)
        object.__setattr__(self, "thresholds", Thresholds(self.lower_threshold, self.upper_threshold))

    @property
    def affinity_authority(self) -> str:
        return self.domain.assigning_authority
