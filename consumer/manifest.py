"""Read a KOS manifest, pure: which instances to fetch, from where."""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


class NotAManifest(ValueError):
    pass


@dataclass
class SeriesReference:
    series_uid: str
    retrieve_ae_title: str
    retrieve_location_uid: str
    instances: list[str]


@dataclass
class Manifest:
    study_uid: str
    series: list[SeriesReference]

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)


def read(data: bytes) -> Manifest:
    try:
        ds = dcmread(BytesIO(data))
    except (InvalidDicomError, Exception) as e:  # pydicom raises several types for garbage
        raise NotAManifest(f"not DICOM: {e}") from None
    if ds.get("SOPClassUID") != KOS_SOP_CLASS:
        raise NotAManifest(f"SOP class {ds.get('SOPClassUID')} is not Key Object Selection")
    title = ds.get("ConceptNameCodeSequence")
    if not title or title[0].get("CodeValue") != "113030":
        raise NotAManifest("the document title is not (113030, DCM, Manifest)")
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence", [])
    if not evidence:
        raise NotAManifest("no Current Requested Procedure Evidence")
    study = evidence[0]
    series = [SeriesReference(str(s.SeriesInstanceUID), str(s.get("RetrieveAETitle", "")),
                              str(s.get("RetrieveLocationUID", "")),
                              [str(i.ReferencedSOPInstanceUID) for i in s.get("ReferencedSOPSequence", [])])
              for s in study.get("ReferencedSeriesSequence", [])]
    return Manifest(str(study.StudyInstanceUID), series)
