"""Who an instance belongs to, and whether it is an outside study — read from its header, pure.

Patient identity is PatientID with its issuer: the ISO Universal Entity ID of Issuer of Patient
ID Qualifiers, else Issuer of Patient ID when it is an OID, else the assigning authority
configured for the calling AE, else the source's own ``assigning_authority``.

**The outside-study marker.** The consumer writes, into every instance it reconciles into a
local PACS, a private block in group 0009 with Private Creator ``XDSI RECONCILED`` and, at
element xx01, the uid of the source it came from (LO). A study any of whose instances carries
that block — or that arrives from a calling AE listed in ``outside_calling_aes`` — is an outside
study: indexed and served, never published.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from affinity_domain.exceptions import XdsiError
from affinity_domain.outside import mark_outside, outside_source  # noqa: F401
from affinity_domain.uids import is_oid


@dataclass(frozen=True)
class LocalIdentity:
    patient_id: str
    issuer: str          # assigning authority OID

    @property
    def cx(self) -> str:
        return f"{self.patient_id}^^^&{self.issuer}&ISO"


class PatientConflict(XdsiError):
    """An instance of one patient for a study (or series) that belongs to another."""

    permanent = True

    def __init__(self, patient: LocalIdentity, study_patient: LocalIdentity, study_uid: str):
        super().__init__(f"study {study_uid} belongs to {study_patient.cx}, not to {patient.cx}")
        self.patient, self.study_patient, self.study_uid = patient, study_patient, study_uid


def text(value) -> str:
    """A header value as index text: stripped, without NUL bytes (PostgreSQL text cannot hold them;
    some modalities pad with them). The stored instance keeps its bytes as sent."""
    return "" if value is None else str(value).replace("\0", "").strip()


def issuer_of(ds: Dataset, calling_ae: str, by_ae: dict[str, str], default: str) -> str:
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    if qualifiers:
        q = qualifiers[0]
        uid = text(q.get("UniversalEntityID", ""))
        if uid and (text(q.get("UniversalEntityIDType", "ISO")) or "ISO").upper() == "ISO" and is_oid(uid):
            return uid
    issuer = text(ds.get("IssuerOfPatientID", ""))
    if is_oid(issuer):
        return issuer
    return by_ae.get(calling_ae.strip(), default)


def local_identity(ds: Dataset, calling_ae: str, by_ae: dict[str, str], default: str) -> LocalIdentity:
    return LocalIdentity(text(ds.get("PatientID", "")), issuer_of(ds, calling_ae, by_ae, default))


def marked_outside(ds: Dataset) -> bool:
    """True when the consumer's reconciliation block is present."""
    return outside_source(ds) is not None
