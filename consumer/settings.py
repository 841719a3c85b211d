"""The consumer's settings: ``[consumer]`` and ``[domain]``, typed and checked at start, with the
addresses and rules its keys spell made from them once."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from affinity_domain import access

from affinity_domain.config import (ConfigError, Count, DomainSettings, HttpSettings, Natural, PduBytes, Port, Range,
                                    Seconds, address)
from affinity_domain.dicom_limits import Limits

from .rules import Relevancy

RETRIEVE_METHODS = ("rad69", "c-move", "c-get")
Megabytes = Annotated[float, Range(0)]


@dataclass(frozen=True)
class ConsumerSettings(HttpSettings):
    SECTION: ClassVar[str] = "consumer"
    # where it listens
    host: str
    mllp_port: Port
    mllp_max_connections: Count
    mllp_threads: Count
    mllp_idle_seconds: Seconds
    mllp_message_seconds: Seconds
    mllp_backlog: Count
    http_host: str
    http_port: Port
    ae_title: str                               # also the C-MOVE destination
    # its peers
    local_assigning_authority: str
    local_pacs: str                             # AE@host:port
    accession_prefix: str
    accession_prefixes: dict[str, str]          # source repositoryUniqueId -> accession prefix
    procedure_codes: dict[str, str]
    pix: str                                    # host:port
    registry_url: str
    repositories: dict[str, str]                # repositoryUniqueId -> ITI-43 URL
    sources: dict[str, str]                     # Retrieve Location UID -> RAD-69 URL
    # what it fetches, and how
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    lookback_days: Natural
    max_studies: Natural
    max_attempts: Count
    timeout: Seconds
    workers: Count
    spool_dir: str                              # empty: <data dir>/consumer (resolved by cli.settings)
    held_mb_per_study: Megabytes
    dicom_host: str
    dicom_port: Port
    dicom_sources: dict[str, str]               # Retrieve AE Title -> host:port
    dicom_max_associations: Count
    dicom_max_connections: Count
    dicom_listen_backlog: Count
    dicom_max_pdu_bytes: PduBytes
    dicom_max_associate_pdu_bytes: PduBytes
    dicom_network_timeout: Seconds
    peers: dict[str, Any]
    order_senders: dict[str, Any]
    order_loopback_senders: bool
    loopback_roles: tuple[str, ...]
    retrieve_order: tuple[str, ...]
    accession_mode: Literal["auto", "prefix", "issuer"]
    accession_issuers: dict[str, str]           # source (Retrieve Location UID or AE title) -> issuer OID
    reports: Literal["skip", "store", "oru"]
    report_oru: str                             # host:port; empty: none
    pacs_orders: str                            # host:port; empty: the PACS needs no order
    retry_base_seconds: Seconds
    processes: Count
    max_json_bytes: Count
    domain: DomainSettings
    hl7_senders: tuple = field(init=False)                             # order_senders, checked
    dicom_peers: tuple = field(init=False)                             # peers, checked (access.DicomPeer)
    loopback_grant: frozenset = field(init=False)
    pix_address: tuple[str, int] = field(init=False)
    pacs: tuple[str, str, int] = field(init=False)                     # local_pacs: AE, host, port
    dicom_addresses: dict[str, tuple[str, int]] = field(init=False)    # dicom_sources, parsed
    report_oru_address: tuple[str, int] | None = field(init=False)
    pacs_orders_address: tuple[str, int] | None = field(init=False)
    relevancy: Relevancy = field(init=False)
    # Bytes of a study's RAD-69 answer held in memory until stored; past it, instances are spooled
    # to files in ``spool``. Making a file costs more than a small instance's bytes do.
    held_per_study: int = field(init=False)
    spool: Path = field(init=False)

    def __post_init__(self):
        order = tuple(m.lower() for m in self.retrieve_order)
        unknown = [m for m in order if m not in RETRIEVE_METHODS]
        if unknown or not order:
            raise ConfigError(f"[consumer] retrieve_order: {unknown or 'empty'}; use some of {list(RETRIEVE_METHODS)}")
        pacs_ae, at, pacs_where = self.local_pacs.partition("@")
        if not at:
            raise ConfigError(f"[consumer] local_pacs = {self.local_pacs!r}: expected AE@host:port")
        derived = {
            "dicom_peers": access.dicom_peers(self.peers, self.SECTION),
            "hl7_senders": access.hl7_senders(self.order_senders, self.SECTION, "order_senders"),
            "loopback_grant": access.loopback_roles(self.loopback_roles, self.SECTION),
            "retrieve_order": order,
            "pix_address": address(self.pix, "[consumer] pix"),
            "pacs": (pacs_ae, *address(pacs_where, "[consumer] local_pacs")),
            "dicom_addresses": {ae: address(where, f"[consumer] dicom_sources.{ae}")
                                for ae, where in self.dicom_sources.items()},
            "report_oru_address": _optional(self.report_oru, "report_oru"),
            "pacs_orders_address": _optional(self.pacs_orders, "pacs_orders"),
            "relevancy": Relevancy([m.upper() for m in self.modalities], list(self.body_parts), self.lookback_days,
                                   self.max_studies),
            "held_per_study": int(self.held_mb_per_study * 1024 * 1024),
            "spool": Path(self.spool_dir).resolve()}
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def dicom_limits(self) -> Limits:
        return Limits(self.dicom_max_associations, self.dicom_max_connections, self.dicom_listen_backlog,
                      self.dicom_max_associate_pdu_bytes)

    @property
    def incoming(self) -> Path:
        return self.spool / "incoming"


def _optional(where: str, key: str) -> tuple[str, int] | None:
    return address(where, f"[consumer] {key}") if where else None
