"""The imaging source's pure cores: identity, intake decisions, C-FIND planning, the manifest,
the RAD-68 metadata, RAD-69 planning, publication decisions."""
from __future__ import annotations

from datetime import datetime

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import KeyObjectSelectionDocumentStorage, generate_uid

from tests.imaging_source import source_dicom as dd
from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain.dicom_status import DATA_SET_DOES_NOT_MATCH_SOP_CLASS
from imaging_source import identity, indexer, intake, manifest, metadata, publish, query, rad69
from imaging_source.store import StudySnapshot

DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"


def header(**changes) -> Dataset:
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds


# ---------------------------------------------------------------- identity and intake

def test_issuer_comes_from_qualifiers_then_issuer_then_calling_ae_then_default():
    ds = header()
    q = Dataset()
    q.UniversalEntityID, q.UniversalEntityIDType = "1.2.3.9", "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [q]
    ds.IssuerOfPatientID = "1.2.3.8"
    assert identity.issuer_of(ds, "CT1", {"CT1": "1.2.3.7"}, "1.2.3.6") == "1.2.3.9"
    del ds.IssuerOfPatientIDQualifiersSequence
    assert identity.issuer_of(ds, "CT1", {"CT1": "1.2.3.7"}, "1.2.3.6") == "1.2.3.8"
    ds.IssuerOfPatientID = "HOSPITAL A"                     # a namespace, not an OID
    assert identity.issuer_of(ds, "CT1", {"CT1": "1.2.3.7"}, "1.2.3.6") == "1.2.3.7"
    assert identity.issuer_of(ds, "CT2", {"CT1": "1.2.3.7"}, "1.2.3.6") == "1.2.3.6"


def test_outside_marker_is_recognised():
    ds = header()
    assert not identity.marked_outside(ds)
    identity.mark_outside(ds, "1.2.3")
    assert identity.marked_outside(ds)
    got = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert got.outside
    assert intake.describe(header(), "1.2.840.10008.1.2.1", "PACS2", {}, "1.2.3.6", frozenset({"PACS2"})).outside


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"])
def test_instances_without_identifiers_are_refused(missing):
    ds = header()
    delattr(ds, missing)
    got = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert isinstance(got, intake.Rejected) and got.status == DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert missing in got.reason


def test_sop_instance_uid_must_match_the_request():
    got = intake.describe(header(), "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6", affected_sop_uid="9.9.9")
    assert isinstance(got, intake.Rejected) and got.status == DATA_SET_DOES_NOT_MATCH_SOP_CLASS


def test_describe_reads_the_index_entry():
    got = intake.describe(header(AccessionNumber="A1"), "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert got.identity == identity.LocalIdentity("1CT1", "1.2.3.6")
    assert got.is_image and got.study["accession"] == "A1" and got.series["modality"] == "CT"


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "image_dfl.dcm",
                                  "MR_small_bigendian.dcm", "SC_rgb_rle.dcm", "waveform_ecg.dcm"])
def test_the_header_intake_reads_from_bytes_is_what_pydicom_reads(name):
    path = get_testdata_file(name)
    data = open(path, "rb").read()
    ours, theirs = intake.index_header(data), dcmread(path, stop_before_pixels=True)
    assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID
    syntax = theirs.file_meta.TransferSyntaxUID
    if syntax.is_deflated or not syntax.is_little_endian:
        assert ours == theirs                        # read by pydicom, whole
    else:
        wanted = [t for t in theirs.keys() if t in intake.INDEXED or t.group == 0x0009]
        assert list(ours.keys()) == wanted and all(ours[t] == theirs[t] for t in wanted)
    described = intake.describe(ours, ours.file_meta.TransferSyntaxUID, "MOD", {}, "1.2.3.6")
    assert described == intake.describe(theirs, theirs.file_meta.TransferSyntaxUID, "MOD", {}, "1.2.3.6")


KEYWORDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "PatientID", "InstanceNumber",
            "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
            "StudyDescription", "ReferringPhysicianName", "Modality", "SeriesNumber", "SeriesDescription",
            "BodyPartExamined", "IssuerOfPatientID", "ImageType"]


def _tricky(implicit: bool) -> bytes:
    """A dataset with values the plain-text shortcut must leave to pydicom, written and read back."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.InstanceNumber, ds.SeriesNumber = "Müller^Jörg", " P 1 ", " 01", "7"
    ds.StudyInstanceUID, ds.ImageType, ds.StudyDescription = "1.2.3", ["ORIGINAL", "PRIMARY"], "a\\b"
    ds.StudyDate, ds.AccessionNumber = "20260101", ""
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, True
    write_dataset(out, ds)
    return out.getvalue()


@pytest.mark.parametrize("source", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "explicit", "implicit"])
def test_text_read_off_raw_bytes_is_what_pydicom_decodes(source):
    from io import BytesIO
    from pydicom.filereader import read_dataset
    if source in ("explicit", "implicit"):
        implicit = source == "implicit"
        fresh = lambda: read_dataset(BytesIO(_tricky(implicit)), implicit, True)  # noqa: E731
    else:
        fresh = lambda: dcmread(get_testdata_file(source))  # noqa: E731
    ds = fresh()
    for keyword in KEYWORDS:
        expected = fresh().get(keyword, "")
        assert intake._s(ds, keyword) == ("" if expected is None else str(expected).strip()), keyword


def test_a_journal_line_reads_back_as_the_instance_it_describes():
    got = intake.describe(header(AccessionNumber="A1"), "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    line = indexer.encode_line(got, "ab" * 20, 5120, "MOD")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert indexer.decode_line(line) == (got, "ab" * 20, 5120, "MOD")


def test_a_journal_cut_short_by_a_crash_keeps_its_complete_lines():
    got = intake.describe(header(), "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    whole = indexer.encode_line(got, "cd" * 20, 1, "MOD")
    entries = indexer.read_journal(whole + whole + whole[:-7])
    assert [e[1] for e in entries] == ["cd" * 20] * 2


def test_the_journal_is_held_by_one_process_and_emptied_when_all_is_indexed(tmp_path):
    got = intake.describe(header(), "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    path = tmp_path / "intake.journal"
    journal = indexer.Journal(path, fsync=False)
    with pytest.raises(indexer.JournalBusy):
        indexer.Journal(path, fsync=False)
    for n in range(3):
        journal.append(indexer.encode_line(got, f"{n:040d}", n, "MOD"))
    journal.done(2)
    assert len(indexer.read_journal(path.read_bytes())) == 3      # one line still to index
    journal.done(1)
    assert path.read_bytes() == b""
    journal.append(indexer.encode_line(got, "e" * 40, 1, "MOD"))
    journal.close()
    again = indexer.Journal(path, fsync=False)                  # the next start finds what was left
    assert [e[1] for e in again.left_over] == ["e" * 40]
    again.close()


# ---------------------------------------------------------------- C-FIND

def test_find_conditions():
    c = query.condition
    assert c("PatientName", "") is None and c("PatientName", "*") is None
    assert c("PatientName", "Doe*^J?n_%") == query.Condition("p.name", "like", ("Doe%^J_n!_!%",))
    assert c("StudyDate", "20200101-20201231") == query.Condition("st.study_date", "range", ("20200101", "20201231"))
    assert c("StudyDate", "-20201231").values == ("", "20201231")
    assert c("StudyDate", "20200101") == query.Condition("st.study_date", "in", ("20200101",))
    assert c("StudyInstanceUID", "1.2\\1.3") == query.Condition("st.study_uid", "in", ("1.2", "1.3"))
    assert c("ModalitiesInStudy", "CT\\MR") == query.Condition("modalities", "contains", ("CT", "MR"))


def test_find_plan_checks_the_level():
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    with pytest.raises(query.QueryError):
        query.plan(ds)
    ds.QueryRetrieveLevel, ds.SOPInstanceUID = "STUDY", "1.2"
    with pytest.raises(query.QueryError):
        query.plan(ds)
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.PatientID, ds.StudyInstanceUID = "STUDY", "P*", ""
    assert query.plan(ds) == ("STUDY", [query.Condition("p.patient_id", "like", ("P%",))])


def test_find_response_returns_the_keys_asked_for():
    ask = Dataset()
    ask.QueryRetrieveLevel, ask.PatientID, ask.StudyInstanceUID = "STUDY", "", ""
    ask.NumberOfStudyRelatedInstances, ask.ModalitiesInStudy, ask.PatientWeight = None, None, None
    out = query.response(ask, {"patient_id": "P1", "study_uid": "1.2", "n_instances": 7, "modalities": "CT\\MR"},
                         "XDSI_SOURCE")
    assert out.PatientID == "P1" and out.NumberOfStudyRelatedInstances == 7
    assert list(out.ModalitiesInStudy) == ["CT", "MR"] and out.RetrieveAETitle == "XDSI_SOURCE"
    assert "PatientWeight" in out and out.PatientWeight is None


# ---------------------------------------------------------------- the manifest

def _refs(h, n, series=3):
    return [manifest.Reference(f"{h.SeriesInstanceUID}.{i % series}", h.SOPClassUID, f"{h.SOPInstanceUID}.{i}",
                               i % 4 != 0) for i in range(n)]


def test_fast_manifest_is_what_highdicom_builds():
    h = header(AccessionNumber="ACC9")
    plan = manifest.Plan(generate_uid(), generate_uid(), datetime(2024, 1, 2, 3, 4, 5))
    refs = _refs(h, 13)
    fast = manifest.to_bytes(manifest.build(h, refs, plan, "XDSI_SOURCE", "1.2.3"))
    slow = manifest.to_bytes(manifest.build(h, refs, plan, "XDSI_SOURCE", "1.2.3", fast=False))
    assert fast == slow


def test_manifest_content_and_dciodvfy(tmp_path):
    h = header(AccessionNumber="ACC9")
    refs = _refs(h, 7)
    kos = manifest.build(h, refs, manifest.Plan(generate_uid(), generate_uid(), datetime(2024, 1, 2)),
                         "XDSI_SOURCE", "1.2.3.302")
    path = tmp_path / "kos.dcm"
    path.write_bytes(manifest.to_bytes(kos))
    assert dd.dciodvfy_errors(path) == []
    kos = dcmread(path)
    assert kos.SOPClassUID == KeyObjectSelectionDocumentStorage and kos.Modality == "KO"
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113030"
    assert kos.PatientID == h.PatientID and kos.StudyInstanceUID == h.StudyInstanceUID
    assert kos.ReferencedRequestSequence[0].AccessionNumber == "ACC9"
    series = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(series) == 3
    assert all(s.RetrieveAETitle == "XDSI_SOURCE" and s.RetrieveLocationUID == "1.2.3.302" for s in series)
    assert sorted(i.ReferencedSOPInstanceUID for s in series for i in s.ReferencedSOPSequence) == \
        sorted(r.sop_uid for r in refs)
    assert len(kos.ContentSequence) == 7


def test_manifest_without_accession_has_no_request_sequence():
    h = header(AccessionNumber="")
    kos = manifest.build(h, _refs(h, 2), manifest.Plan(generate_uid(), generate_uid(), datetime(2024, 1, 2)),
                         "A", "1.2")
    assert "ReferencedRequestSequence" not in kos


# ---------------------------------------------------------------- RAD-68 metadata

CODES = {"class_code": ["IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images"],
         "type_code": ["18748-4", "2.16.840.1.113883.6.1", "x"],
         "confidentiality_code": ["N", "2.16.840.1.113883.5.25", "x"],
         "healthcare_facility_type_code": ["22232009", "2.16.840.1.113883.6.96", "x"],
         "practice_setting_code": ["309964003", "2.16.840.1.113883.6.96", "x"],
         "content_type_code": ["UNSPECIFIED-CONTENT-TYPE", "1.3.6.1.4.1.21367.2017.3", "x"]}


def test_document_entry_carries_the_xds_i_metadata():
    f = metadata.ManifestFacts("1.2.3.4", "urn:uuid:e1", "1.2.3.5", "urn:uuid:s1", f"D1^^^&{DOMAIN}&ISO",
                               "L1^^^&1.2.3&ISO", patient_name="Doe^Jane", study_uid="1.2.9", accession="A7",
                               accession_issuer="1.2.3", study_date="20240102", study_time="101112.5",
                               creation_time="20240103000000", modalities=["CT", "MR", "KO"],
                               body_parts=["CHEST", "nonsense"])
    e = metadata.document_entry(f, CODES)
    assert e.mime_type == "application/dicom" and e.unique_id == "1.2.3.4" and e.patient_id == f.patient_id
    assert [c.node_representation for c in e.codes(rim.DE_FORMAT_CODE)] == [rim.KOS_FORMAT_CODE[0]]
    assert e.codes(rim.DE_FORMAT_CODE)[0].slot("codingScheme") == ["1.2.840.10008.2.6.1"]
    assert [c.node_representation for c in e.codes(rim.DE_EVENT_CODE)] == ["CT", "MR", "T-D3000"]
    assert e.slot("urn:ihe:iti:xds:2013:referenceIdList") == [
        "A7^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession", "1.2.9^^^^urn:ihe:iti:xds:2016:studyInstanceUID"]
    assert e.slot_value("serviceStartTime") == "20240102101112"
    assert e.slot("sourcePatientInfo")[:2] == ["PID-3|L1^^^&1.2.3&ISO", "PID-5|Doe^Jane"]


def test_replacing_manifest_has_an_rplc_association():
    f = metadata.ManifestFacts("1.2.3.4", "urn:uuid:e2", "1.2.3.5", "urn:uuid:s2", "D1^^^&1.2&ISO", "L1^^^&1.3&ISO",
                               study_uid="1.2.9", creation_time="20240103000000", replaces="urn:uuid:e1")
    el = metadata.request(f, CODES, "1.2.3.6", "m@x")
    objects = rim.parse_object_list(el.find(f"{{{ns.LCM}}}SubmitObjectsRequest/{{{ns.RIM}}}RegistryObjectList"))
    rplc = [a for a in objects.of_kind("association") if a.association_type == rim.RPLC]
    assert [(a.source, a.target) for a in rplc] == [("urn:uuid:e2", "urn:uuid:e1")]
    assert objects.of_kind("submission_set")[0].patient_id == "D1^^^&1.2&ISO"


# ---------------------------------------------------------------- RAD-69

def _req(uid, series="s1", repo="9.9"):
    return rad69.DocumentRequest("st1", series, "", repo, uid)


def test_rad69_plan():
    stored = {"a": {"study_uid": "st1", "series_uid": "s1", "transfer_syntax": "1.2.840.10008.1.2.1", "sha1": "x"},
              "b": {"study_uid": "st1", "series_uid": "s1", "transfer_syntax": "1.2.840.10008.1.2", "sha1": "y"},
              "c": {"study_uid": "st1", "series_uid": "s1", "transfer_syntax": "1.2.840.10008.1.2.4.50", "sha1": "z"}}
    errors, served = rad69.plan([_req("a"), _req("b"), _req("c"), _req("d"), _req("a", "s2"), _req("a", repo="1")],
                                ["1.2.840.10008.1.2.1"], "9.9", stored)
    assert [(s.request.document_unique_id, s.transcode) for s in served] == [("a", False), ("b", True)]
    assert [(e.code, e.location) for e in errors] == [
        ("XDSRepositoryError", "c"), ("XDSDocumentUniqueIdError", "d"), ("XDSDocumentUniqueIdError", "a"),
        ("XDSUnknownRepositoryId", "a")]
    response = rad69.response(errors, served)
    assert response[0].get("status") == "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"


# ---------------------------------------------------------------- publication decisions

def _snap(instances, latest=None, outside=False):
    return StudySnapshot(1, 3, {"study_uid": "1.2"}, {}, [], [{"sop_uid": u} for u in instances], outside, None, latest)


def test_publication_decisions():
    assert publish.decide(_snap(["a"], outside=True)).action == "settle"
    assert publish.decide(_snap(["a", "b"])) == publish.Decision("publish", "new study")
    latest = {"refs_digest": publish.refs_digest(["b", "a"]), "entry_uuid": "urn:uuid:1", "sop_uid": "9"}
    assert publish.decide(_snap(["a", "b"], latest)).action == "settle"
    changed = publish.decide(_snap(["a", "b", "c"], latest))
    assert (changed.action, changed.replaces) == ("publish", "urn:uuid:1")
    assert publish.decide(_snap([], latest)).action == "withdraw"
    assert publish.backoff(2, 0) == 2 and publish.backoff(2, 10) == 64


def test_a_rejection_note_names_the_instances_it_rejects():
    from pydicom.dataset import Dataset
    from imaging_source.intake import rejected_instances

    def item(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds
    note = item(SOPClassUID=KeyObjectSelectionDocumentStorage,
                ConceptNameCodeSequence=[item(CodeValue="113001", CodingSchemeDesignator="DCM")],
                CurrentRequestedProcedureEvidenceSequence=[item(ReferencedSeriesSequence=[
                    item(ReferencedSOPSequence=[item(ReferencedSOPInstanceUID="1.2.3"),
                                                item(ReferencedSOPInstanceUID="1.2.4")])])])
    assert rejected_instances(note) == ["1.2.3", "1.2.4"]
    note.ConceptNameCodeSequence[0].CodeValue = "113030"        # a manifest, not a rejection
    assert rejected_instances(note) is None
