"""The consumer's pure core: relevancy rules, reconciliation, KOS reading, the job state machine and
retry decisions, order parsing, the messages and report objects it builds."""
import dataclasses
import datetime as dt
import subprocess
from io import BytesIO
from pathlib import Path

import psycopg
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (BasicTextSRStorage, EncapsulatedPDFStorage, ExplicitVRLittleEndian,
                         KeyObjectSelectionDocumentStorage, generate_uid)

from affinity_domain import config, ebrim, hl7
from affinity_domain.exceptions import XdsiError
from affinity_domain.hl7 import Hl7Error
from affinity_domain.outside import outside_source
from affinity_domain.soap_client import TransportError
from consumer import cli, deliver, dicom, entries, jobs, manifest, messages, orders, reports, retrieve, rewrite, rules
from consumer.entries import ManifestEntry

LOCAL = "1.3.6.1.4.1.21367.2005.13.20.2000"
OTHER = "1.3.6.1.4.1.21367.2005.13.20.3000"
TODAY = dt.date(2026, 3, 1)


def entry(uid, start="20260110", modality="CT", site=OTHER, region=None):
    codes = [f"{modality}^^1.2.840.10008.2.16.4"] + ([f"{region}^^2.16.840.1.113883.6.96"] if region else [])
    return ManifestEntry(uid, "1.2.3", service_start=start, source_patient_id=f"P^^^&{site}&ISO", event_codes=codes)


# ------------------------------------------------------------ relevancy


def test_relevancy_keeps_studies_inside_the_lookback_window_and_drops_older_ones():
    found = [entry("in", "20260201"), entry("edge", "20251201"), entry("out", "20240101")]
    chosen = rules.select(found, rules.Relevancy(lookback_days=90), LOCAL, TODAY)
    assert [e.unique_id for e in chosen] == ["in", "edge"]
    assert rules.window_start(rules.Relevancy(lookback_days=90), TODAY) == "20251201"
    assert rules.window_start(rules.Relevancy(), TODAY) == ""


def test_relevancy_modality_filter():
    found = [entry("ct", modality="CT"), entry("mr", modality="MR"), entry("us", modality="US")]
    assert [e.unique_id for e in rules.select(found, rules.Relevancy(modalities=["MR", "US"]), LOCAL, TODAY)] == \
        ["mr", "us"]
    assert len(rules.select(found, rules.Relevancy(), LOCAL, TODAY)) == 3       # broad prefetch


def test_relevancy_body_part_most_recent_first_and_maximum():
    found = [entry("chest", "20260105", region="51185008"), entry("head", "20260106", region="69536005"),
             entry("chest2", "20260120", region="51185008")]
    chosen = rules.select(found, rules.Relevancy(body_parts=["51185008"], max_studies=1), LOCAL, TODAY)
    assert [e.unique_id for e in chosen] == ["chest2"]


def test_own_site_studies_are_never_selected():
    found = [entry("mine", site=LOCAL), entry("theirs")]
    assert [e.unique_id for e in rules.select(found, rules.Relevancy(), LOCAL, TODAY)] == ["theirs"]


# ------------------------------------------------------------ reconciliation


def outside_ct():
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber = "A123", OTHER, "ACC77"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTCHEST", "99SITEA", "CT chest"
    ds.ProcedureCodeSequence = Sequence([code])
    return ds


def test_reconcile_rewrites_identity_keeps_the_original_and_marks_the_study():
    ds = rules.reconcile(outside_ct(), rules.Reconciliation("B9", LOCAL, "A-", {"CTCHEST": "LCT01"}, "1.2.3.302"))
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == ("B9", LOCAL, "A-ACC77")
    assert [(o.PatientID, o.get("IssuerOfPatientID")) for o in ds.OtherPatientIDsSequence
            if o.PatientID == "A123"] == [("A123", OTHER)]
    assert ds.ProcedureCodeSequence[0].CodeValue == "LCT01"
    assert outside_source(ds) == "1.2.3.302"
    again = rules.reconcile(ds, rules.Reconciliation("B9", LOCAL, "A-", {}, "1.2.3.302"))
    assert again.AccessionNumber == "A-ACC77"                  # idempotent: nothing prefixed or kept twice
    assert [o.PatientID for o in again.OtherPatientIDsSequence].count("A123") == 1
    assert "B9" not in [o.PatientID for o in again.OtherPatientIDsSequence]
    # it survives encoding: what the PACS receives is what we checked
    buf = BytesIO()
    ds.save_as(buf)
    assert outside_source(dcmread(BytesIO(buf.getvalue()))) == "1.2.3.302"


def test_reconcile_with_an_accession_issuer_keeps_the_accession():
    ds = rules.reconcile(outside_ct(), rules.Reconciliation("B9", LOCAL, "A-", {}, "1.2.3.302", "1.2.3.302"))
    assert ds.AccessionNumber == "ACC77"
    [issuer] = ds.IssuerOfAccessionNumberSequence
    assert issuer.LocalNamespaceEntityID == "1.2.3.302"
    assert (issuer.UniversalEntityID, issuer.UniversalEntityIDType) == ("1.2.3.302", "ISO")   # an OID
    by_ae = rules.reconcile(outside_ct(), rules.Reconciliation("B9", LOCAL, "", {}, "XDSI_SOURCE", "XDSI_SOURCE"))
    assert by_ae.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "XDSI_SOURCE"
    assert "UniversalEntityID" not in by_ae.IssuerOfAccessionNumberSequence[0]


def test_an_issuer_the_outside_site_named_is_kept():
    ds = outside_ct()
    theirs = Dataset()
    theirs.UniversalEntityID, theirs.UniversalEntityIDType = "1.2.3.999", "ISO"
    ds.IssuerOfAccessionNumberSequence = Sequence([theirs])
    ds = rules.reconcile(ds, rules.Reconciliation("B9", LOCAL, "", {}, "1.2.3.302", "1.2.3.302"))
    assert [i.UniversalEntityID for i in ds.IssuerOfAccessionNumberSequence] == ["1.2.3.999"]


def _settings(**keys):
    env = {f"XDSI_CONSUMER_{k.upper()}": v for k, v in keys.items()}
    return cli.settings(config.load(environ=env, data_dir="/tmp/xdsi-settings"))


@pytest.mark.parametrize("keys,prefix,issuer", [
    ({}, "", "1.2.3.302"),                                                   # the default: the source, as issuer
    ({"accession_issuers": '{ "1.2.3.302" = "1.2.3.77" }'}, "", "1.2.3.77"),   # the issuer configured for it
    ({"accession_prefix": "A-"}, "A-", ""),                                  # a prefix configured: the prefix
    ({"accession_prefixes": '{ "1.2.3.302" = "S-" }'}, "S-", ""),
    ({"accession_prefix": "A-", "accession_mode": "issuer"}, "A-", "1.2.3.302"),
    ({"accession_mode": "prefix"}, "", "")])                                 # asked for: as it came
def test_an_outside_accession_is_kept_apart_by_default(keys, prefix, issuer):
    recon = deliver.reconciliation(_settings(**keys), hl7.Cx("B9", LOCAL), manifest.read(kos()))
    assert (recon.accession_prefix, recon.accession_issuer) == (prefix, issuer)


# ------------------------------------------------------------ KOS manifest


def kos(sop_class=KeyObjectSelectionDocumentStorage, title="113030", refs=3, instance="1.9.3.{n}"):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.AccessionNumber = sop_class, generate_uid(), "ACC77"
    t = Dataset()
    t.CodeValue, t.CodingSchemeDesignator, t.CodeMeaning = title, "DCM", "Manifest"
    ds.ConceptNameCodeSequence = Sequence([t])
    series = Dataset()
    series.SeriesInstanceUID, series.RetrieveAETitle, series.RetrieveLocationUID = "1.9.2", "XDSI_SOURCE", "1.2.3.302"
    items = []
    for n in range(refs):
        i = Dataset()
        i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", instance.format(n=n)
        items.append(i)
    series.ReferencedSOPSequence = Sequence(items)
    study = Dataset()
    study.StudyInstanceUID, study.ReferencedSeriesSequence = "1.9.1", Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_manifest_reading_gives_study_series_instances_and_where_to_fetch():
    m = manifest.read(kos())
    assert m.study_uid == "1.9.1" and m.instance_count == 3 and m.accession == "ACC77"
    s = m.series[0]
    assert (s.retrieve_ae_title, s.retrieve_location_uid) == ("XDSI_SOURCE", "1.2.3.302")
    assert m.sop_classes == {"1.2.840.10008.5.1.4.1.1.2"}
    left = m.without({"1.9.3.0", "1.9.3.2"})
    assert [x.instances for x in left] == [["1.9.3.1"]] and m.without({"1.9.3.0", "1.9.3.1", "1.9.3.2"}) == []


@pytest.mark.parametrize("data, reason", [
    (b"%PDF-1.4 not dicom", "not DICOM"),
    (kos(sop_class="1.2.840.10008.5.1.4.1.1.88.11"), "not Key Object Selection"),
    (kos(title="113000"), "113030"),
    (kos(refs=0), "no instance"),
    (kos(instance="../../../../tmp/x{n}"), "Referenced SOP Instance UID '../../../../tmp/x0' is not a DICOM UID"),
    (kos(instance="1.2.03.{n}"), "not a DICOM UID"),
])
def test_what_is_not_a_manifest_is_refused_with_its_reason(data, reason):
    with pytest.raises(manifest.NotAManifest, match=reason):
        manifest.read(data)


def test_files_are_named_by_us_never_by_a_peer(tmp_path):
    uid = "1.2.840.113619.2.55.3.1"
    name = dicom.instance_file(uid)
    assert name == dicom.instance_file(uid) and len(name) == 44 and set(name[:-4]) <= set("0123456789abcdef")
    kept = dicom.write_instance(tmp_path, uid, b"DICM")
    assert kept == tmp_path / name and kept.read_bytes() == b"DICM" and list(tmp_path.iterdir()) == [kept]
    s = _settings()
    hostile = {"id": 7, "document_unique_id": "1.2.3^../../../../q38"}
    assert retrieve.manifest_path(s, hostile) == s.spool / "manifests" / "job-7.dcm"


# ------------------------------------------------------------ jobs: states and retries


def test_backoff_grows_and_is_capped():
    assert [jobs.backoff(n) for n in (1, 2, 3)] == [2.0, 6.0, 18.0]
    assert jobs.backoff(20) == 300.0 and jobs.backoff(2, base=0.5) == 1.5


def test_retry_decisions():
    assert jobs.decide(1, 3, permanent=False) == jobs.Decision(False, 2.0)
    assert jobs.decide(3, 3, permanent=False).give_up                  # out of attempts
    assert jobs.decide(1, 6, permanent=True) == jobs.Decision(True, 0.0)   # retrying cannot help


def test_the_retry_policy_reads_the_exception_root():
    refused, down = dicom.DicomRefused("the PACS said no"), TransportError("registry unreachable", False)
    for e in (refused, down, ConnectionRefusedError("refused"), psycopg.OperationalError("server gone")):
        assert jobs.retryable(e) and not jobs.permanent(e)
    for e in (jobs.Permanent("PIX does not know P1"), manifest.NotAManifest("no evidence")):
        assert jobs.permanent(e) and not jobs.retryable(e) and isinstance(e, XdsiError)
    assert not jobs.retryable(KeyError("x")) and not jobs.permanent(KeyError("x"))     # a bug: bounded retries
    assert jobs.reason(refused) == "the PACS said no" and jobs.reason(KeyError("x")) == "KeyError: 'x'"
    assert jobs.reason(manifest.NotAManifest("no evidence")) == "the document is not a KOS manifest: no evidence"


def test_settings_defaults_are_the_configured_keys_defaults():
    built = cli.settings(config.load(environ={}, data_dir="/tmp/xdsi-settings"))
    assert built.spool == Path("/tmp/xdsi-settings/consumer") and built.incoming == built.spool / "incoming"
    assert (built.pix_address, built.pacs, built.retrieve_order, built.dicom_addresses, built.report_oru_address) == (
        ("127.0.0.1", 2575), ("LOCALPACS", "127.0.0.1", 11114), ("rad69", "c-move"),
        {"XDSI_SOURCE": ("127.0.0.1", 11112)}, None)
    typed = cli.settings(config.load(environ={"XDSI_CONSUMER_TIMEOUT": "5", "XDSI_CONSUMER_RETRIEVE_ORDER": '["C-GET"]',
                                              "XDSI_CONSUMER_HELD_MB_PER_STUDY": "0.5"}))
    assert (typed.timeout, typed.retrieve_order, typed.held_per_study) == (5.0, ("c-get",), 512 * 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.timeout = 1.0
    with pytest.raises(config.ConfigError, match="retrieve_order"):
        cli.settings(config.load(environ={"XDSI_CONSUMER_RETRIEVE_ORDER": '["ftp"]'}))


def test_job_steps_and_fetch_progress():
    assert [jobs.next_step(s) for s in jobs.JOB_STATES] == ["manifest", "images", "images", None, None]
    rows = [{"state": "stored", "instances_total": 10, "instances_done": 0},
            {"state": "retrieved", "instances_total": 5, "instances_done": 2}]
    p = jobs.fetch_summary({"state": "searched"}, rows)
    assert (p["instances_done"], p["instances_total"], p["studies_stored"], p["finished"]) == (12, 15, 1, False)
    assert jobs.fetch_summary({"state": "failed"}, [])["finished"]


# ------------------------------------------------------------ orders and messages


def order(pid3):
    return f"MSH|^~\\&|RIS|H|XDSI_CONSUMER|X|20260101||ORM^O01|1|P|2.3.1\rPID|||{pid3}||Doe^J\r".encode()


def test_order_patient_is_the_local_identifier():
    assert orders.local_patient(order(f"X1^^^&{OTHER}&ISO~B9^^^&{LOCAL}&ISO"), LOCAL).id == "B9"
    assert orders.local_patient(order("B9"), LOCAL).authority == LOCAL       # no authority: ours
    with pytest.raises(Hl7Error) as e:
        orders.local_patient(order(f"X1^^^&{OTHER}&ISO"), LOCAL)
    assert e.value.code == "204"


def test_messages_to_the_local_side():
    orm = messages.order("B9", LOCAL, "Doe^J", "A-ACC|7", "1.9.1").decode()
    assert "ORM^O01" in orm and f"PID|||B9^^^&{LOCAL}&ISO" in orm and "A-ACC\\F\\7" in orm and "ZDS|1.9.1" in orm
    oru = messages.report("B9", LOCAL, "Doe^J", "A-ACC77", "1.9.1", "line one\nline two").decode()
    assert oru.count("OBX|") == 2 and "ORU^R01" in oru
    assert hl7.accepted("MSH|...\rMSA|AA|1\r") and not hl7.accepted("MSH|...\rMSA|AE|1\r")


def test_reports_become_dicom_in_the_study():
    study = outside_ct()
    sr = reports.as_dicom(b"<ClinicalDocument><text>No acute findings.</text></ClinicalDocument>", "text/xml", study)
    assert sr.SOPClassUID == BasicTextSRStorage and sr.StudyInstanceUID == study.StudyInstanceUID
    assert sr.ContentSequence[0].TextValue == "No acute findings."
    pdf = reports.as_dicom(b"%PDF-1.4 x", "application/pdf", study)
    assert pdf.SOPClassUID == EncapsulatedPDFStorage and pdf.EncapsulatedDocument.startswith(b"%PDF")


def test_reports_are_attached_to_their_study():
    m = ManifestEntry("kos", "r", study_uid="1.9.1", format_code=ebrim.KOS_FORMAT)
    other = ManifestEntry("kos2", "r", study_uid="1.9.9", format_code=ebrim.KOS_FORMAT)
    report = ManifestEntry("rep", "r", study_uid="1.9.1", format_code="urn:ihe:rad:TEXT^^1.3.6.1.4.1.19376.1.2.3",
                           mime_type="text/plain")
    entries.attach_reports([m, other], [m, other, report])
    assert m.report is report and other.report is None


def _outside_instance(directory: Path) -> Path:
    """An instance with everything reconciliation touches: other ids, an issuer qualifier, a
    procedure code, request attributes, non-ASCII text, and GE's private block in group 0009."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    other, qualifier, code, request = Dataset(), Dataset(), Dataset(), Dataset()
    other.PatientID, other.IssuerOfPatientID = "X9", "OTHER"
    qualifier.UniversalEntityID, qualifier.UniversalEntityIDType = "1.2.3.9", "ISO"
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CT101", "L", "CT chest"
    ds.AccessionNumber = "ACC42"
    request.AccessionNumber, request.RequestedProcedureID = "ACC42", "R1"
    ds.OtherPatientIDsSequence, ds.IssuerOfPatientIDQualifiersSequence = [other], [qualifier]
    ds.ProcedureCodeSequence, ds.RequestAttributesSequence = [code], [request]
    ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 100", "Müller^Jörg"
    path = directory / "outside.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("convert", [None, ["/usr/bin/dcmcjpeg"], ["/usr/bin/dcmconv", "+ti"]],
                         ids=["explicit", "jpeg-lossless", "implicit"])
def test_rewriting_a_file_gives_the_bytes_of_reconciling_it_whole(tmp_path, convert):
    from pynetdicom.dsutils import encode
    path = _outside_instance(tmp_path)
    if convert:
        converted = tmp_path / "converted.dcm"
        subprocess.run([*convert, str(path), str(converted)], check=True)
        path = converted
    recon = rules.Reconciliation("L1", "1.2.3", accession_prefix="A-", procedure_codes={"CT101": "LOC-CT"},
                                 source_uid="1.2.3.4")
    rewritten = rewrite.Reconciler(recon).part10(path.read_bytes())
    whole = rules.reconcile(dcmread(path), recon)
    syntax = whole.file_meta.TransferSyntaxUID
    assert rewritten.encoded == encode(whole, syntax.is_implicit_VR, syntax.is_little_endian, False)
    assert rewritten.SOPInstanceUID == whole.SOPInstanceUID
    back = rewritten.decoded()
    assert (back.PatientID, back.AccessionNumber,
            back.ProcedureCodeSequence[0].CodeValue) == ("L1", "A-ACC42", "LOC-CT")
    assert (back.PatientName == "Müller^Jörg"
            and back.OtherPatientIDsSequence[-1].PatientID == whole.OtherPatientIDsSequence[-1].PatientID)


def test_one_reconciler_serves_a_study_and_keeps_each_instance_its_own(tmp_path):
    """Instances alike in their reconciled elements share one worked-out edit; an instance that
    differs (another accession) gets its own; each still carries its own uids and values."""
    from pydicom.uid import generate_uid
    from pynetdicom.dsutils import encode
    template = dcmread(_outside_instance(tmp_path))
    recon = rules.Reconciliation("L1", "1.2.3", accession_prefix="A-", procedure_codes={"CT101": "LOC-CT"},
                                 source_uid="1.2.3.4")
    reconciler = rewrite.Reconciler(recon)
    for number, accession in enumerate(["ACC42", "ACC42", "ACC43", "ACC42"], 1):
        ds = template.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber, ds.AccessionNumber = number, accession
        ds.RequestAttributesSequence[0].AccessionNumber = accession
        path = tmp_path / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        rewritten = reconciler.part10(path.read_bytes())
        whole = rules.reconcile(dcmread(path), recon)
        assert rewritten.encoded == encode(whole, False, True, False)
        assert (rewritten.SOPInstanceUID, rewritten.decoded().AccessionNumber) == (ds.SOPInstanceUID, f"A-{accession}")
    assert len(reconciler._edits) == 2


def test_a_deflated_file_is_left_to_the_whole_dataset_path(tmp_path):
    deflated = tmp_path / "deflated.dcm"
    subprocess.run(["/usr/bin/dcmconv", "+td", str(_outside_instance(tmp_path)), str(deflated)], check=True)
    assert rewrite.Reconciler(rules.Reconciliation("L1", "1.2.3")).part10(deflated.read_bytes()) is None


def test_an_instance_cut_short_is_left_to_the_whole_dataset_path(tmp_path):
    """The walk meets an element running past the end: no rewrite is guessed at (pydicom, on the
    whole dataset, then reports what is wrong with it)."""
    data = _outside_instance(tmp_path).read_bytes()
    reconciler = rewrite.Reconciler(rules.Reconciliation("L1", "1.2.3"))
    assert reconciler.part10(data) is not None
    assert reconciler.part10(data[:600]) is None and reconciler.part10(b"not DICOM") is None
