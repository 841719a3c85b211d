"""The imaging source with real peers: DCMTK sends studies, the manifest is registered
(registry, repository and PIX as processes), DCMTK queries and retrieves, RAD-69 returns the
instances byte for byte, changes publish RPLC manifests, unknown patients are held."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from lxml import etree

from affinity_domain import ns
from affinity_domain.soap_client import SoapClient
from pydicom import dcmread

from tests.imaging_source import source_dicom as dd
from tests.xds import FIND_DOCUMENTS, NS, post, envelope, stored_query

SOURCE_REPOSITORY_ID = "1.3.6.1.4.1.21367.13.40.302"
REPOSITORY_ID = "1.3.6.1.4.1.21367.13.40.301"
KOS_FORMAT = "1.2.840.10008.5.1.4.1.1.88.59"


def state(source, study_uid: str) -> dict:
    with psycopg.connect(source.database_url) as conn:
        row = conn.execute("SELECT version, published_version, last_error, outside, id FROM imaging_source.study "
                           "WHERE study_uid = %s", (study_uid,)).fetchone()
        if row is None:
            return {}
        manifests = conn.execute("SELECT sop_uid, status, entry_uuid, instances FROM imaging_source.manifest "
                                 "WHERE study = %s ORDER BY published_at", (row[4],)).fetchall()
    return {"version": row[0], "published_version": row[1], "last_error": row[2], "outside": row[3],
            "manifests": manifests}


def published(source, study_uid: str, count: int = 1, timeout: float = 30) -> list:
    def done():
        s = state(source, study_uid)
        return s and s["published_version"] == s["version"] and len(s["manifests"]) >= count and s["manifests"]
    return dd.wait_until(done, timeout)


def find_documents(registry, patient_id: str, status: str = "Approved") -> list[etree._Element]:
    reply = post(registry.url, envelope(ns.STORED_QUERY, stored_query(FIND_DOCUMENTS, {
        "$XDSDocumentEntryPatientId": f"'{patient_id}'",
        "$XDSDocumentEntryStatus": f"('urn:oasis:names:tc:ebxml-regrep:StatusType:{status}')"})))
    assert reply.response_status == "Success", reply.body[:2000]
    return reply.objects("ExtrinsicObject")


def retrieve_manifest(repository, tmp_path, kos_uid: str) -> bytes:
    body = etree.fromstring(
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{ns.XDSB}"><xdsb:DocumentRequest>'
        f'<xdsb:RepositoryUniqueId>{REPOSITORY_ID}</xdsb:RepositoryUniqueId>'
        f'<xdsb:DocumentUniqueId>{kos_uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>'
        f'</xdsb:RetrieveDocumentSetRequest>')
    reply = SoapClient(repository.url, spool_dir=tmp_path).call(ns.RETRIEVE, body,
                                                                use_mtom=True)
    assert len(reply.attachments) == 1, etree.tostring(reply.body)[:2000]
    data = next(iter(reply.attachments.values())).path.read_bytes()
    reply.discard()
    return data


def rad69(source, tmp_path, study_uid, docs: list[tuple[str, str]], syntaxes=("1.2.840.10008.1.2.1",),
          repository_id=SOURCE_REPOSITORY_ID):
    series: dict[str, list[str]] = {}
    for series_uid, sop in docs:
        series.setdefault(series_uid, []).append(sop)
    xml = f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{ns.IHERAD}" xmlns:xdsb="{ns.XDSB}">' \
          f'<iherad:StudyRequest studyInstanceUID="{study_uid}">'
    for series_uid, sops in series.items():
        xml += f'<iherad:SeriesRequest seriesInstanceUID="{series_uid}">' + "".join(
            f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{sop}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>" for sop in sops) \
            + "</iherad:SeriesRequest>"
    xml += "</iherad:StudyRequest><iherad:TransferSyntaxUIDList>" + "".join(
        f"<iherad:TransferSyntaxUID>{t}</iherad:TransferSyntaxUID>" for t in syntaxes) + \
        "</iherad:TransferSyntaxUIDList></iherad:RetrieveImagingDocumentSetRequest>"
    return SoapClient(source.url, spool_dir=tmp_path).call(ns.RETRIEVE_IMAGING,
                                                           etree.fromstring(xml))


def slot(entry, name):
    return [v.text for v in entry.iterfind(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", NS)]


def codes(entry, scheme):
    return [c.get("nodeRepresentation")
            for c in entry.iterfind(f"rim:Classification[@classificationScheme='{scheme}']", NS)]


@pytest.fixture
def sent_study(source, patient, tmp_path):
    local, domain_id = patient
    study = dd.make_study(tmp_path / "study", local)
    out = dd.storescu(source.dicom_port, study.files)
    assert out.returncode == 0, out.stderr
    published(source, study.uid)
    return study, domain_id


def test_study_is_published_registered_and_retrievable(source, domain, sent_study, tmp_path, pix):
    registry, repository = domain
    study, domain_id = sent_study
    entries = find_documents(registry, domain_id)
    assert len(entries) == 1, f"PIX: {pix.kind}"
    entry = entries[0]
    assert entry.get("mimeType") == "application/dicom"
    assert codes(entry, "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d") == [KOS_FORMAT]
    assert set(codes(entry, "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4")) == {"CT", "T-D3000"}
    refs = slot(entry, "urn:ihe:iti:xds:2013:referenceIdList")
    assert f"{study.uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID" in refs
    assert any(r.startswith(study.accession + "^") and r.endswith("urn:ihe:iti:xds:2013:accession") for r in refs)
    assert slot(entry, "sourcePatientId") == [f"{study.patient_id}^^^&{dd.LOCAL_ISSUER}&ISO"]
    assert slot(entry, "serviceStartTime")[0].startswith("20040119")
    kos_uid = entry.find("rim:ExternalIdentifier"
                         "[@identificationScheme='urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']",
                         NS).get("value")

    data = retrieve_manifest(repository, tmp_path, kos_uid)
    path = tmp_path / "manifest.dcm"
    path.write_bytes(data)
    assert dd.dciodvfy_errors(path) == []
    kos = dcmread(path)
    assert kos.SOPInstanceUID == kos_uid
    assert (kos.ConceptNameCodeSequence[0].CodeValue, kos.ConceptNameCodeSequence[0].CodingSchemeDesignator) == \
        ("113030", "DCM")
    assert kos.PatientID == study.patient_id and kos.AccessionNumber == study.accession
    assert kos.ReferencedRequestSequence[0].AccessionNumber == study.accession
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study.uid
    listed = set()
    for series in evidence.ReferencedSeriesSequence:
        assert series.RetrieveAETitle == "XDSI_SOURCE"
        assert series.RetrieveLocationUID == SOURCE_REPOSITORY_ID
        listed |= {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence}
    assert listed == set(study.sop_uids())
    assert kos.SeriesInstanceUID not in study.series


def test_dcmtk_finds_moves_and_gets_the_study(source, sent_study, storescp, tmp_path):
    study, _ = sent_study
    out = dd.run("/usr/bin/findscu", "-S", "-aec", "XDSI_SOURCE", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"PatientID={study.patient_id[:4]}*", "-k", "StudyDate=20040101-20041231",
                 "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances", "-k", "ModalitiesInStudy",
                 "127.0.0.1", str(source.dicom_port))
    assert out.returncode == 0, out.stderr
    assert study.uid in out.stderr + out.stdout
    out = dd.run("/usr/bin/findscu", "-S", "-aec", "XDSI_SOURCE", "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={study.uid}", "-k", "SeriesInstanceUID", "-k", "Modality",
                 "127.0.0.1", str(source.dicom_port))
    text = out.stderr + out.stdout
    assert all(s in text for s in study.series)
    out = dd.run("/usr/bin/findscu", "-S", "-aec", "XDSI_SOURCE", "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"StudyInstanceUID={study.uid}", "-k", f"SeriesInstanceUID={study.series[0]}",
                 "-k", "SOPInstanceUID", "127.0.0.1", str(source.dicom_port))
    assert (out.stderr + out.stdout).count("Find Response:") == 3

    before = set(storescp.files())
    out = dd.run("/usr/bin/movescu", "-S", "-aec", "XDSI_SOURCE", "-aem", "MOVEDEST", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1", str(source.dicom_port))
    assert out.returncode == 0, out.stderr
    moved = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in set(storescp.files()) - before}
    assert moved == set(study.sop_uids())

    out = dd.run("/usr/bin/movescu", "-S", "-aec", "XDSI_SOURCE", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1", str(source.dicom_port))
    assert "MoveDestinationUnknown" in out.stderr + out.stdout      # 0xA801

    got = tmp_path / "got"
    got.mkdir()
    out = dd.run("/usr/bin/getscu", "-S", "-aec", "XDSI_SOURCE", "-od", str(got), "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={study.uid}", "-k", f"SeriesInstanceUID={study.series[1]}",
                 "127.0.0.1", str(source.dicom_port))
    assert out.returncode == 0, out.stderr
    # getscu writes files with DCMTK's own encoder, so compare datasets, not bytes (RAD-69 does bytes).
    received = {(ds := dcmread(p)).SOPInstanceUID: ds for p in got.iterdir()}
    originals = {(ds := dcmread(p)).SOPInstanceUID: ds for p in study.files}
    assert len(received) == 3 and all(received[k] == originals[k] for k in received)


def test_rad69_returns_every_instance_byte_for_byte(source, sent_study, tmp_path):
    study, _ = sent_study
    docs = [(dcmread(f).SeriesInstanceUID, dcmread(f).SOPInstanceUID) for f in study.files]
    reply = rad69(source, tmp_path, study.uid, docs)
    response = reply.body
    assert response.find(f"{{{NS['rs']}}}RegistryResponse").get("status").endswith("Success")
    assert reply.envelope.action == "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    by_uid = {}
    for doc in response.iterfind(f"{{{ns.XDSB}}}DocumentResponse"):
        cid = doc.find(f"{{{ns.XDSB}}}Document/{{{ns.XOP}}}Include").get("href")[4:]
        assert doc.findtext(f"{{{ns.XDSB}}}mimeType") == "application/dicom"
        by_uid[doc.findtext(f"{{{ns.XDSB}}}DocumentUniqueId")] = reply.attachments[cid].path.read_bytes()
    reply.discard()
    originals = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in study.files}
    assert set(by_uid) == set(originals)
    for uid, data in by_uid.items():
        assert dd.dataset_bytes(data) == dd.dataset_bytes(originals[uid])

    unknown = "1.2.3.4.5.6.7.8.9"
    reply = rad69(source, tmp_path, study.uid, docs[:1] + [(docs[0][0], unknown)])
    registry_response = reply.body.find(f"{{{NS['rs']}}}RegistryResponse")
    assert registry_response.get("status") == "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
    errors = registry_response.findall(".//rs:RegistryError", NS)
    assert [(e.get("errorCode"), e.get("location")) for e in errors] == [("XDSDocumentUniqueIdError", unknown)]
    assert len(reply.attachments) == 1
    reply.discard()

    reply = rad69(source, tmp_path, study.uid, docs[:1], syntaxes=("1.2.840.10008.1.2.4.50",))
    errors = reply.body.findall(".//rs:RegistryError", NS)
    assert reply.body.find("rs:RegistryResponse", NS).get("status").endswith("Failure")
    assert [e.get("location") for e in errors] == [docs[0][1]]
    reply.discard()


def test_added_series_publishes_a_replacing_manifest(source, domain, sent_study, tmp_path):
    registry, _ = domain
    study, domain_id = sent_study
    first = state(source, study.uid)["manifests"][0]
    dd.add_series(study, 1, 2, modality="MR", body_part="HEAD")
    out = dd.storescu(source.dicom_port, study.files[-2:])
    assert out.returncode == 0, out.stderr
    manifests = published(source, study.uid, count=2)
    assert [m[1] for m in manifests] == ["replaced", "approved"]
    approved = find_documents(registry, domain_id)
    assert len(approved) == 1 and approved[0].get("id") == manifests[1][2]
    assert set(codes(approved[0], "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4")) >= {"CT", "MR", "T-D1100"}
    deprecated = find_documents(registry, domain_id, "Deprecated")
    assert [d.get("id") for d in deprecated] == [first[2]]
    assert manifests[1][3] == len(study.files)


def test_study_is_held_while_pix_does_not_know_the_patient(source, domain, pix, tmp_path):
    registry, _ = domain
    local = f"U{uuid.uuid4().hex[:8]}"
    study = dd.make_study(tmp_path / "study", local, series=1, per_series=2)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    dd.wait_until(lambda: state(source, study.uid).get("last_error"), 20)
    s = state(source, study.uid)
    assert s["manifests"] == [] and s["published_version"] == 0
    domain_id = pix.register(local, dd.LOCAL_ISSUER)
    from tests.imaging_source.source_pix import feed_registry
    feed_registry(registry, domain_id)
    published(source, study.uid, timeout=60)
    assert len(find_documents(registry, domain_id)) == 1


def test_outside_studies_are_served_not_published(source, patient, tmp_path):
    from imaging_source.identity import mark_outside
    local, _ = patient
    marked = dd.make_study(tmp_path / "marked", local, series=1, per_series=2,
                           edit=lambda ds: mark_outside(ds, "1.3.6.1.4.1.21367.13.40.999"))
    assert dd.storescu(source.dicom_port, marked.files).returncode == 0
    forwarded = dd.make_study(tmp_path / "forwarded", local, series=1, per_series=1)
    assert dd.storescu(source.dicom_port, forwarded.files, calling="OUTSIDE_PACS").returncode == 0
    for study in (marked, forwarded):
        s = dd.wait_until(lambda: (st := state(source, study.uid)) and st["published_version"] == st["version"] and st)
        assert s["outside"] and s["manifests"] == []


def test_bad_instances_are_refused_and_not_stored(source, tmp_path):
    no_patient = dd.make_study(tmp_path / "bad", "X", series=1, per_series=1, edit=lambda ds: delattr(ds, "PatientID"))
    out = dd.run("/usr/bin/storescu", "-v", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port),
                 str(no_patient.files[0]))
    assert "DataSetDoesNotMatchSOPClass" in out.stderr, out.stderr     # 0xA900
    assert state(source, no_patient.uid) == {}
    # The SCP keeps serving.
    assert dd.run("/usr/bin/echoscu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port)).returncode == 0


def _rejection_note(study: dd.Study, sops: list[tuple[str, str, str]], path: Path) -> Path:
    """An IOCM rejection note (KOS, 113001 Rejected for Quality Reasons) for (series, class, instance)s."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def item(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds
    series: dict[str, list[Dataset]] = {}
    for series_uid, sop_class, sop_uid in sops:
        series.setdefault(series_uid, []).append(item(ReferencedSOPClassUID=sop_class,
                                                      ReferencedSOPInstanceUID=sop_uid))
    note = item(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.59", SOPInstanceUID=generate_uid(), Modality="KO",
                PatientID=study.patient_id, IssuerOfPatientID=dd.LOCAL_ISSUER, StudyInstanceUID=study.uid,
                SeriesInstanceUID=generate_uid(), ValueType="CONTAINER",
                ConceptNameCodeSequence=[item(CodeValue="113001", CodingSchemeDesignator="DCM",
                                              CodeMeaning="Rejected for Quality Reasons")],
                CurrentRequestedProcedureEvidenceSequence=[item(StudyInstanceUID=study.uid, ReferencedSeriesSequence=[
                    item(SeriesInstanceUID=s, ReferencedSOPSequence=refs) for s, refs in series.items()])])
    note.file_meta = FileMetaDataset()
    (note.file_meta.MediaStorageSOPClassUID,
     note.file_meta.MediaStorageSOPInstanceUID) = note.SOPClassUID, note.SOPInstanceUID
    note.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    note.save_as(path, enforce_file_format=True)
    return path


def test_rejected_instances_republish_then_deprecate_the_manifest(source, domain, sent_study, tmp_path):
    """IOCM: a rejection note removes instances; the study is republished (RPLC) without them, and
    when none is left its manifest is deprecated in the registry by ITI-57."""
    registry, _ = domain
    study, domain_id = sent_study
    headers = [dcmread(f, stop_before_pixels=True) for f in study.files]
    refs = [(h.SeriesInstanceUID, h.SOPClassUID, h.SOPInstanceUID) for h in headers]
    first_series = [r for r in refs if r[0] == study.series[0]]
    out = dd.storescu(source.dicom_port, [_rejection_note(study, first_series, tmp_path / "reject1.dcm")])
    assert out.returncode == 0, out.stderr
    manifests = published(source, study.uid, count=2)
    assert [m[1] for m in manifests] == ["replaced", "approved"] and manifests[1][3] == len(refs) - len(first_series)
    rest = [r for r in refs if r not in first_series]
    out = dd.storescu(source.dicom_port, [_rejection_note(study, rest, tmp_path / "reject2.dcm")])
    assert out.returncode == 0, out.stderr
    manifests = dd.wait_until(lambda: (m := state(source, study.uid)["manifests"]) and m[-1][1] == "deprecated" and m)
    assert [m[1] for m in manifests] == ["replaced", "deprecated"]
    assert find_documents(registry, domain_id) == []
    assert {d.get("id") for d in find_documents(registry, domain_id, "Deprecated")} == {m[2] for m in manifests}
    # The instances are gone from the index and from C-FIND.
    out = dd.run("/usr/bin/findscu", "-S", "-aec", "XDSI_SOURCE", "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"StudyInstanceUID={study.uid}", "-k", f"SeriesInstanceUID={study.series[1]}",
                 "-k", "SOPInstanceUID", "127.0.0.1", str(source.dicom_port))
    assert "Find Response:" not in out.stderr + out.stdout


def test_removing_a_series_from_the_command_line_republishes_the_study(source, sent_study):
    """``xdsi source remove`` (a PACS deletion) against the running source's database and store."""
    study, _ = sent_study
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "source", "remove", "--series", study.series[0]],
                         env=source.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "3 stored files deleted" in out.stdout, out.stdout + out.stderr
    manifests = published(source, study.uid, count=2)
    assert [m[1] for m in manifests] == ["replaced", "approved"] and manifests[1][3] == 3
