"""The consumer's settings, typed: ``[consumer]`` and ``[domain]`` read once (by ``cli.settings``);
every default is the one ``affinity_domain.config`` documents for its key."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from affinity_domain.config import DEFAULTS

from .rules import Relevancy

_C, _D = DEFAULTS["consumer"], DEFAULTS["domain"]
RETRIEVE_METHODS = ("rad69", "c-move", "c-get")


def address(value: str) -> tuple[str, int] | None:
    """``host:port`` (host defaults to 127.0.0.1); None for an empty value."""
    if not value:
        return None
    host, _, port = str(value).rpartition(":")
    return host or "127.0.0.1", int(port)


def _table(key: str):
    """A table's default, read-only: a frozen Settings keeps what it was built with."""
    return field(default_factory=lambda: MappingProxyType(dict(_C[key])))


@dataclass(frozen=True)
class Settings:
    # where it listens
    host: str = _C["host"]
    mllp_port: int = _C["mllp_port"]
    http_host: str = _C["http_host"]
    http_port: int = _C["http_port"]
    dicom_host: str = _C["dicom_host"]
    dicom_port: int = _C["dicom_port"]
    calling_ae: str = _C["ae_title"]                   # also the C-MOVE destination
    workers: int = _C["workers"]
    processes: int = _C["processes"]
    # its peers
    local_authority: str = _C["local_assigning_authority"]
    affinity_authority: str = _D["assigning_authority"]
    pix: tuple[str, int] = address(_C["pix"])
    registry_url: str = _C["registry_url"]
    repositories: Mapping[str, str] = _table("repositories")       # repositoryUniqueId -> ITI-43 URL
    sources: Mapping[str, str] = _table("sources")                 # Retrieve Location UID -> RAD-69 URL
    dicom_sources: Mapping[str, tuple[str, int]] = field(default_factory=lambda: MappingProxyType(
        {ae: address(v) for ae, v in _C["dicom_sources"].items()}))     # Retrieve AE Title -> host, port
    local_pacs: tuple[str, str, int] = (_C["local_pacs"].split("@")[0], *address(_C["local_pacs"].split("@")[1]))
    report_oru: tuple[str, int] | None = address(_C["report_oru"])
    pacs_orders: tuple[str, int] | None = address(_C["pacs_orders"])   # ORM^O01 before the images, if the PACS needs
    # what it fetches, and how
    relevancy: Relevancy = field(default_factory=lambda: Relevancy(
        [m.upper() for m in _C["modalities"]], list(_C["body_parts"]), _C["lookback_days"], _C["max_studies"]))
    retrieve_order: tuple[str, ...] = tuple(_C["retrieve_order"])
    reports: str = _C["reports"]                                        # skip | store | oru
    accession_prefix: str = _C["accession_prefix"]
    accession_prefixes: Mapping[str, str] = _table("accession_prefixes")
    accession_issuer: bool = _C["accession_mode"] == "issuer"          # name the source as issuer, not a prefix
    procedure_codes: Mapping[str, str] = _table("procedure_codes")
    spool: Path = Path(".xdsi", "consumer")                             # spool_dir; empty: <data dir>/consumer
    timeout: float = _C["timeout"]
    max_attempts: int = _C["max_attempts"]
    retry_base: float = _C["retry_base_seconds"]
    # Bytes of a study's RAD-69 answer held in memory until stored; past it, instances are spooled
    # to files in ``spool``. Making a file costs more than a small instance's bytes do.
    held_per_study: int = int(_C["held_mb_per_study"] * 1024 * 1024)

    @property
    def incoming(self) -> Path:
        return self.spool / "incoming"
