"""Read a KOS manifest, pure: which instances to fetch, from where."""
from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import KeyObjectSelectionDocumentStorage

from affinity_domain import uids
from affinity_domain.exceptions import XdsiError


class NotAManifest(XdsiError):
    """The document is not a KOS manifest: retrying cannot help."""

    permanent = True

    def __str__(self) -> str:
        return f"the document is not a KOS manifest: {super().__str__()}"


@dataclass
class SeriesReference:
    series_uid: str
    retrieve_ae_title: str
    retrieve_location_uid: str
    instances: list[str]
    sop_classes: list[str] = field(default_factory=list)     # parallel to ``instances``


@dataclass
class Manifest:
    study_uid: str
    series: list[SeriesReference]
    accession: str = ""

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)

    @property
    def sop_classes(self) -> set[str]:
        return {c for s in self.series for c in s.sop_classes if c}

    def without(self, done: set[str]) -> list[SeriesReference]:
        """The series references still to fetch when ``done`` instances are already stored."""
        out = []
        for s in self.series:
            keep = [(u, c) for u, c in zip(s.instances, s.sop_classes or [""] * len(s.instances)) if u not in done]
            if keep:
                out.append(SeriesReference(s.series_uid, s.retrieve_ae_title, s.retrieve_location_uid,
                                           [u for u, _ in keep], [c for _, c in keep]))
        return out


def read(data: bytes) -> Manifest:
    try:
        ds = dcmread(BytesIO(data))
    except Exception as e:  # pydicom raises several types for garbage
        raise NotAManifest(f"not DICOM: {e}") from None
    if ds.get("SOPClassUID") != KeyObjectSelectionDocumentStorage:
        raise NotAManifest(f"SOP class {ds.get('SOPClassUID')} is not Key Object Selection")
    title = ds.get("ConceptNameCodeSequence")
    if not title or title[0].get("CodeValue") != "113030":
        raise NotAManifest("the document title is not (113030, DCM, Manifest)")
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence", [])
    if not evidence:
        raise NotAManifest("no Current Requested Procedure Evidence")
    if len(evidence) > 1:
        raise NotAManifest("evidence from more than one study")
    study = evidence[0]
    series = []
    for s in study.get("ReferencedSeriesSequence", []):
        refs = s.get("ReferencedSOPSequence", [])
        series.append(SeriesReference(
            str(s.SeriesInstanceUID), str(s.get("RetrieveAETitle", "") or "").strip(),
            str(s.get("RetrieveLocationUID", "") or ""),
            [str(i.ReferencedSOPInstanceUID) for i in refs], [str(i.get("ReferencedSOPClassUID", "")) for i in refs]))
    if not any(s.instances for s in series):
        raise NotAManifest("the manifest references no instance")
    parsed = Manifest(str(study.StudyInstanceUID), series, str(ds.get("AccessionNumber", "") or ""))
    _check_uids(parsed)
    return parsed


def _check_uids(m: Manifest) -> None:
    """Every UID the consumer will ask for, or keep an instance by, is a DICOM UID (PS3.5 9.1)."""
    named = [("Study Instance UID", m.study_uid)]
    for s in m.series:
        named.append(("Series Instance UID", s.series_uid))
        named += [("Referenced SOP Instance UID", u) for u in s.instances]
        named += [("Referenced SOP Class UID", c) for c in s.sop_classes if c]
    for what, value in named:
        if (problem := uids.uid_problem(value, what)) is not None:
            raise NotAManifest(problem)
