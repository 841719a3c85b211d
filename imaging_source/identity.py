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

from affinity_domain.outside import mark_outside, outside_source  # noqa: F401
from affinity_domain.uids import is_oid


@dataclass(frozen=True)
class LocalIdentity:
    patient_id: str
    issuer: str          # assigning authority OID

    @property
    def cx(self) -> str:
        return f"{self.patient_id}^^^&{self.issuer}&ISO"


def issuer_of(ds: Dataset, calling_ae: str, by_ae: dict[str, str], default: str) -> str:
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    if qualifiers:
        q = qualifiers[0]
        uid = str(q.get("UniversalEntityID", "") or "")
        if uid and str(q.get("UniversalEntityIDType", "ISO") or "ISO").upper() == "ISO" and is_oid(uid):
            return uid
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if is_oid(issuer):
        return issuer
    return by_ae.get(calling_ae.strip(), default)


def local_identity(ds: Dataset, calling_ae: str, by_ae: dict[str, str], default: str) -> LocalIdentity:
    return LocalIdentity(str(ds.get("PatientID", "") or "").strip(), issuer_of(ds, calling_ae, by_ae, default))


def marked_outside(ds: Dataset) -> bool:
    """True when the consumer's reconciliation block is present."""
    return outside_source(ds) is not None
