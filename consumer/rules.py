"""Relevancy rules (which outside studies to prefetch) and reconciliation to the local site, pure."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from affinity_domain import uids
from affinity_domain.outside import mark_outside

from .entries import ManifestEntry


@dataclass
class Relevancy:
    modalities: list[str] = field(default_factory=list)      # empty: any
    body_parts: list[str] = field(default_factory=list)      # anatomic region codes (SNOMED CT); empty: any
    lookback_days: int = 0                                   # 0: no limit
    max_studies: int = 0                                     # 0: no limit


def window_start(rules: Relevancy, today: dt.date | None = None) -> str:
    """ITI-18 $XDSDocumentEntryServiceStartTimeFrom for the look-back window ('' when unlimited)."""
    if not rules.lookback_days:
        return ""
    return ((today or dt.date.today()) - dt.timedelta(days=rules.lookback_days)).strftime("%Y%m%d")


def own_site(entry: ManifestEntry, local_authority: str) -> bool:
    """A study this site published itself: its source patient id is in our own domain."""
    return f"&{local_authority}&" in entry.source_patient_id


def select(entries: list[ManifestEntry], rules: Relevancy, local_authority: str,
           today: dt.date | None = None) -> list[ManifestEntry]:
    today = today or dt.date.today()
    chosen = []
    for e in entries:
        if own_site(e, local_authority):
            continue
        codes = {c.split("^^")[0] for c in e.event_codes}
        if rules.modalities and not codes & set(rules.modalities):
            continue
        if rules.body_parts and not codes & set(rules.body_parts):
            continue
        if rules.lookback_days and e.service_start[:8]:
            start = dt.datetime.strptime(e.service_start[:8], "%Y%m%d").date()
            if (today - start).days > rules.lookback_days:
                continue
        chosen.append(e)
    chosen.sort(key=lambda e: e.service_start, reverse=True)     # most recent priors first
    return chosen[:rules.max_studies] if rules.max_studies else chosen


@dataclass
class Reconciliation:
    local_patient_id: str
    local_authority: str
    accession_prefix: str = ""
    procedure_codes: dict[str, str] = field(default_factory=dict)   # outside code -> local code
    source_uid: str = ""
    accession_issuer: str = ""      # set: keep the accession, name its issuer (when the instance names none)


def names_an_issuer(ds: Dataset) -> bool:
    """Whether ``ds`` (an instance, or a request item) names the issuer of its accession number."""
    items = ds.get("IssuerOfAccessionNumberSequence") or []
    return any(i.get("LocalNamespaceEntityID") or i.get("UniversalEntityID") for i in items)


def issuer_of_accession(issuer: str) -> Sequence:
    """Issuer of Accession Number Sequence (0008,0051) naming ``issuer``: an OID as its Universal
    Entity ID (type ISO), and always as its Local Namespace Entity ID."""
    item = Dataset()
    item.LocalNamespaceEntityID = issuer[:64]
    if uids.is_oid(issuer):
        item.UniversalEntityID, item.UniversalEntityIDType = issuer, "ISO"
    return Sequence([item])


# Where a procedure code may sit in an image's header.
PROCEDURE_SEQUENCES = ("ProcedureCodeSequence", "RequestedProcedureCodeSequence")


def reconcile(ds: Dataset, r: Reconciliation) -> Dataset:
    """The outside instance as the local PACS should see it; the original identity is kept."""
    original = Dataset()
    original.PatientID = ds.get("PatientID", "")
    original.IssuerOfPatientID = ds.get("IssuerOfPatientID", "")
    original.TypeOfPatientID = "TEXT"
    others = list(ds.get("OtherPatientIDsSequence", []))
    already_local = (original.PatientID, original.IssuerOfPatientID) == (r.local_patient_id, r.local_authority)
    if not already_local and not any(o.get("PatientID") == original.PatientID for o in others):
        others.append(original)
    ds.OtherPatientIDsSequence = Sequence(others)
    ds.PatientID, ds.IssuerOfPatientID = r.local_patient_id, r.local_authority
    if "IssuerOfPatientIDQualifiersSequence" in ds:
        del ds.IssuerOfPatientIDQualifiersSequence
    accession = ds.get("AccessionNumber", "")
    if accession and r.accession_issuer:
        if not names_an_issuer(ds):          # one the outside site named is kept: it is apart already
            ds.IssuerOfAccessionNumberSequence = issuer_of_accession(r.accession_issuer)
    elif accession and r.accession_prefix and not accession.startswith(r.accession_prefix):
        ds.AccessionNumber = (r.accession_prefix + accession)[:16]
    for keyword in PROCEDURE_SEQUENCES:
        for item in ds.get(keyword, []):
            if item.get("CodeValue") in r.procedure_codes:
                item.CodeValue = r.procedure_codes[item.CodeValue]
    for item in ds.get("RequestAttributesSequence", []):
        if "AccessionNumber" in item and ds.get("AccessionNumber"):
            item.AccessionNumber = ds.AccessionNumber      # the request follows the study's accession
    mark_outside(ds, r.source_uid)
    return ds
