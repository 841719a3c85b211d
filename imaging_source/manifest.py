"""The XDS-I.b manifest, pure: one Key Object Selection Document per study (highdicom), titled
(113030, DCM, "Manifest"), referencing every instance, with Retrieve AE Title and Retrieve
Location UID on every referenced series so that a consumer can fetch by C-MOVE or RAD-69.

highdicom builds the document from one instance per series (every module, template and code
as it writes them); the per-instance lists — the content items and each series' Referenced SOP
Sequence — are then written as encoded bytes of the same shape, because building 5,000 pydicom
items takes seconds and the manifest of a 5,000-instance study has to be out in less than two.
``build(..., fast=False)`` is the all-highdicom path the tests compare against."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from pydicom import dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code

MANIFEST_TITLE = Code("113030", "DCM", "Manifest")

# Patient and study attributes the manifest carries over unchanged from the images (beyond the
# ones highdicom copies).
COPIED = ("IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDsSequence",
          "StudyDescription", "IssuerOfAccessionNumberSequence", "PatientAge", "PatientWeight", "PatientSize")


@dataclass(frozen=True)
class Reference:
    series_uid: str
    sop_class: str
    sop_uid: str
    is_image: bool = True


@dataclass(frozen=True)
class Plan:
    sop_uid: str           # the KOS SOP Instance UID = the DocumentEntry uniqueId
    series_uid: str
    created: datetime      # content date/time, kept so that a retry builds the same bytes
    instance_number: int = 1
    series_number: int = 9999


def _evidence(header: Dataset, refs: list[Reference]) -> list[Dataset]:
    study_uid = header.StudyInstanceUID
    out = []
    for r in refs:
        ds = Dataset()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = r.series_uid
        ds.SOPClassUID = r.sop_class
        ds.SOPInstanceUID = r.sop_uid
        if r.is_image:
            ds.Rows = ds.Columns = 1     # only tells highdicom to make an IMAGE content item
        out.append(ds)
    # highdicom takes patient and study attributes from the first evidence item.
    first = out[0]
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName", "SpecificCharacterSet"):
        setattr(first, keyword, header.get(keyword, ""))
    return out


def _requested_procedure(header: Dataset) -> Dataset:
    """A Referenced Request Sequence item for the study's accession number (type 2 keys empty;
    the type 3 identifier sequences, which must not be empty, left out)."""
    item = Dataset()
    item.StudyInstanceUID = header.StudyInstanceUID
    item.ReferencedStudySequence = DicomSequence()
    item.AccessionNumber = header.AccessionNumber
    if "IssuerOfAccessionNumberSequence" in header:
        item.IssuerOfAccessionNumberSequence = header.IssuerOfAccessionNumberSequence
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.FillerOrderNumberImagingServiceRequest = ""
    item.RequestedProcedureID = header.get("RequestedProcedureID", "")
    item.RequestedProcedureDescription = header.get("RequestedProcedureDescription", "")
    item.RequestedProcedureCodeSequence = DicomSequence()
    return item


# ---------------------------------------------------------------- Explicit VR Little Endian bytes

def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _sequence(tag: int, items: bytes) -> bytes:
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"SQ", 0, len(items)) + items


def _raw_sequence(tag: int, items: bytes) -> RawDataElement:
    return RawDataElement(Tag(tag), "SQ", len(items), items, 0, False, True)


def _sop_item(r: Reference) -> bytes:
    return _item(_short(0x00081150, b"UI", r.sop_class.encode()) + _short(0x00081155, b"UI", r.sop_uid.encode()))


_CONCEPT_SOURCE = _sequence(0x0040A043, _item(_short(0x00080100, b"SH", b"260753009")
                                              + _short(0x00080102, b"SH", b"SCT")
                                              + _short(0x00080104, b"LO", b"Source")))
_CONTAINS = _short(0x0040A010, b"CS", b"CONTAINS")
_VALUE_TYPE = {True: _short(0x0040A040, b"CS", b"IMAGE"), False: _short(0x0040A040, b"CS", b"COMPOSITE")}


def _content_item(r: Reference) -> bytes:
    """What highdicom writes for an Image/Composite content item named (260753009, SCT, "Source")."""
    return _item(_sequence(0x00081199, _sop_item(r)) + _CONTAINS + _VALUE_TYPE[r.is_image] + _CONCEPT_SOURCE)


def _one_per_series(refs: list[Reference]) -> list[Reference]:
    seen, out = set(), []
    for r in refs:
        if r.series_uid not in seen:
            seen.add(r.series_uid)
            out.append(r)
    return out


def build(header: Dataset, refs: list[Reference], plan: Plan, retrieve_ae: str,
          retrieve_location_uid: str, institution: str = "", fast: bool = True) -> Dataset:
    """The manifest dataset. ``header``: one image's header (patient/study attributes);
    ``refs``: every instance of the study."""
    if not refs:
        raise ValueError("a manifest needs at least one instance")
    kos = _highdicom(header, _one_per_series(refs) if fast else refs, plan, retrieve_ae,
                     retrieve_location_uid, institution)
    if fast:
        by_series: dict[str, list[bytes]] = {}
        for r in refs:
            by_series.setdefault(r.series_uid, []).append(_sop_item(r))
        for study in kos.CurrentRequestedProcedureEvidenceSequence:
            for series in study.ReferencedSeriesSequence:
                series[0x00081199] = _raw_sequence(0x00081199, b"".join(by_series[series.SeriesInstanceUID]))
        kos[0x0040A730] = _raw_sequence(0x0040A730, b"".join(_content_item(r) for r in refs))
    return kos


def _highdicom(header: Dataset, refs: list[Reference], plan: Plan, retrieve_ae: str,
               retrieve_location_uid: str, institution: str) -> Dataset:
    evidence = _evidence(header, refs)
    content = hd.ko.KeyObjectSelection(document_title=MANIFEST_TITLE, referenced_objects=evidence)
    accession = str(header.get("AccessionNumber", "") or "")
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=evidence, content=content, series_instance_uid=plan.series_uid,
        series_number=plan.series_number, sop_instance_uid=plan.sop_uid,
        instance_number=plan.instance_number, manufacturer="xdsi",
        institution_name=institution or None,
        requested_procedures=[_requested_procedure(header)] if accession else None,
        content_date=plan.created.date(), content_time=plan.created.time(),
    )
    for keyword in COPIED:
        if keyword in header:
            setattr(kos, keyword, header[keyword].value)
    kos.ContentDate = plan.created.strftime("%Y%m%d")
    kos.ContentTime = plan.created.strftime("%H%M%S")
    kos.InstanceCreationDate, kos.InstanceCreationTime = kos.ContentDate, kos.ContentTime
    for equipment in kos.get("ContributingEquipmentSequence", []):
        equipment.ContributionDateTime = plan.created.strftime("%Y%m%d%H%M%S")   # same bytes on a retry
    for study in kos.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            series.RetrieveAETitle = retrieve_ae
            series.RetrieveLocationUID = retrieve_location_uid
    return kos


def _mark_encoded(ds: Dataset, charset) -> None:
    """Tell pydicom the dataset already is Explicit VR Little Endian, so that it writes the raw
    per-instance sequences as they are instead of decoding them to check for ambiguous VRs."""
    ds.set_original_encoding(False, True, charset)
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if not elem.is_raw and elem.VR == "SQ":
            for item in elem.value:
                _mark_encoded(item, charset)


def to_bytes(kos: Dataset) -> bytes:
    _mark_encoded(kos, kos._character_set)
    buffer = io.BytesIO()
    dcmwrite(buffer, kos, enforce_file_format=True)
    return buffer.getvalue()
