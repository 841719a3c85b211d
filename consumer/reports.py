"""What the local side gets for a report registered beside an outside study, pure: a DICOM
Encapsulated PDF or Basic Text SR in the study, or the text for an HL7 ORU."""
from __future__ import annotations

import datetime as dt

from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import BasicTextSRStorage, EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

# Copied from the study's instances so that the report files under the same patient and study.
STUDY_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
              "OtherPatientIDsSequence", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
              "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def text_of(data: bytes, mime: str) -> str:
    """Readable text of a text or CDA report (the narrative, tags dropped)."""
    if "xml" in mime:
        try:
            root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
            return "\n".join(t.strip() for t in root.itertext() if t.strip())
        except etree.XMLSyntaxError:
            pass
    return data.decode("utf-8", "replace")


def _base(study: Dataset, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    for keyword in STUDY_KEYS:
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = modality, generate_uid(), 9901, 1
    ds.SeriesDescription = "Outside report"
    now = dt.datetime.now()
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer = "xdsi"
    ds.SpecificCharacterSet = "ISO_IR 192"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def as_dicom(data: bytes, mime: str, study: Dataset) -> Dataset:
    """A PDF as Encapsulated PDF; anything else as a Basic Text SR holding its text."""
    if mime == "application/pdf":
        ds = _base(study, EncapsulatedPDFStorage, "DOC")
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
        ds.DocumentTitle = "Outside report"
        ds.BurnedInAnnotation, ds.ConversionType = "YES", "WSD"
        return ds
    ds = _base(study, BasicTextSRStorage, "SR")
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", text_of(data, mime)
    finding = Dataset()
    finding.CodeValue, finding.CodingSchemeDesignator, finding.CodeMeaning = "121071", "DCM", "Finding"
    text.ConceptNameCodeSequence = Sequence([finding])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([title])
    ds.ContentSequence = Sequence([text])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    return ds
