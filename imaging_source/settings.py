"""The imaging source's settings: ``[imaging_source]`` and ``[domain]``, typed and checked at start."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from affinity_domain import access

from affinity_domain.config import Count, DomainSettings, Natural, PduBytes, Port, Seconds, SoapSettings, address
from affinity_domain.dicom_limits import Limits

Code = tuple[str, str, str]             # code, coding scheme, display name
CODE_KEYS = ("class_code", "type_code", "confidentiality_code", "healthcare_facility_type_code",
             "practice_setting_code", "content_type_code")


@dataclass(frozen=True)
class ImagingSourceSettings(SoapSettings):
    SECTION: ClassVar[str] = "imaging_source"
    ae_title: str
    dicom_host: str
    dicom_port: Port
    host: str
    port: Port
    path: str
    assigning_authority: str            # the local ids' issuer when an instance names none
    calling_ae_authorities: dict[str, str]
    quiet_seconds: Natural
    move_destinations: dict[str, str]   # AE -> host:port (C-MOVE, and Storage Commitment reports)
    repository_unique_id: str
    repository_url: str
    repository_timeout: Seconds
    registry_url: str
    pix_host: str
    pix_port: Port
    pix_timeout: Seconds
    retry_seconds: Natural
    poll_seconds: Seconds
    store_dir: str                      # empty: <data dir>/imaging-source
    duplicate_policy: Literal["replace", "ignore", "reject"]
    source_id: str
    outside_calling_aes: tuple[str, ...]
    author_institution: str
    class_code: Code
    type_code: Code
    confidentiality_code: Code
    healthcare_facility_type_code: Code
    practice_setting_code: Code
    content_type_code: Code
    threads: Count
    max_request_bytes: Count
    max_associations: Count
    max_pdu_bytes: PduBytes
    network_timeout: Seconds
    dicom_max_connections: Count
    dicom_listen_backlog: Count
    dicom_max_associate_pdu_bytes: PduBytes
    max_query_results: Count
    dicomweb_max_results: Count
    dicomweb_base_url: str
    dicomweb_bulk_data_bytes: Count
    dicomweb_max_frames: Count
    durability: Literal["durable", "fast"]
    max_pending_commitments: Count
    commitment_attempts: Count
    commitment_retry_seconds: Seconds
    min_free_bytes: Natural
    spool_received: bool
    index_wait_seconds: Seconds
    study_patients_cached: Count
    study_patient_lookup_seconds: Seconds
    peers: dict[str, Any]
    loopback_roles: tuple[str, ...]
    domain: DomainSettings
    dicom_peers: tuple = field(init=False)                          # peers, checked (access.DicomPeer)
    loopback_grant: frozenset = field(init=False)
    destinations: dict[str, tuple[str, int]] = field(init=False)   # move_destinations, parsed

    def __post_init__(self):
        object.__setattr__(self, "dicom_peers", access.dicom_peers(self.peers, self.SECTION))
        object.__setattr__(self, "loopback_grant", access.loopback_roles(self.loopback_roles, self.SECTION))
        object.__setattr__(self, "destinations", {ae.strip(): address(where, f"[imaging_source] move_destinations.{ae}")
                                                  for ae, where in self.move_destinations.items()})

    @property
    def dicom_limits(self) -> Limits:
        return Limits(self.max_associations, self.dicom_max_connections, self.dicom_listen_backlog,
                      self.dicom_max_associate_pdu_bytes)

    @property
    def durable(self) -> bool:
        """fsync before answering, and index commits that wait for the WAL flush."""
        return self.durability == "durable"

    @property
    def codes(self) -> dict[str, Code]:
        """The DocumentEntry and SubmissionSet codes, by their keys."""
        return {key: getattr(self, key) for key in CODE_KEYS}

