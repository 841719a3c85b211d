"""DICOMweb at the imaging source over its real HTTP port: DCMTK's storescu sends the studies,
dicomweb-client (DICOMweb's reference Python client) searches and retrieves them, curl reads the
raw multipart and WADO-URI answers, dcmdump reads what came back, and every instance retrieved as
stored is byte for byte the stored file."""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import uuid
from email.parser import BytesParser
from email.policy import HTTP

import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread

from tests.imaging_source import source_dicom as dd
from tests.imaging_source import source_pix as pix_standin

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def web(source):
    return source.url.replace("/imaging-source", "/dicomweb")


@pytest.fixture(scope="module")
def client(web):
    return DICOMwebClient(url=web)


@pytest.fixture(scope="module")
def study(source, pix, domain, tmp_path_factory):
    registry, _ = domain
    local = f"W{uuid.uuid4().hex[:8]}"
    pix_standin.feed_registry(registry, pix.register(local, dd.LOCAL_ISSUER))
    study = dd.make_study(tmp_path_factory.mktemp("dicomweb"), local, series=2, per_series=3)
    out = dd.storescu(source.dicom_port, study.files)
    assert out.returncode == 0, out.stderr
    return study


def curl(*args: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one curl request."""
    out = subprocess.run(["curl", "-sS", "--max-time", "60", "-D", "-", *args], capture_output=True, timeout=90)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def parts(headers: dict, body: bytes) -> list[tuple[dict, bytes]]:
    """The parts of a multipart/related body (read by the standard library's MIME parser)."""
    content_type = headers["content-type"][0]
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert message.is_multipart(), content_type
    return [({k: v.replace('"', "") for k, v in p.items()}, p.get_payload(decode=True)) for p in message.iter_parts()]


def stored(source, data: bytes) -> bytes:
    sha1 = hashlib.sha1(data).hexdigest()
    found = list(source.store.rglob(sha1))
    assert found, "not the bytes of a stored file"
    return found[0].read_bytes()


def originals(study) -> dict[str, bytes]:
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p.read_bytes() for p in study.files}


def test_qido_searches_studies_series_and_instances(client, study, web):
    found = client.search_for_studies(search_filters={"PatientID": study.patient_id})
    assert [r["0020000D"]["Value"] for r in found] == [[study.uid]]
    item = found[0]
    assert item["00201208"]["Value"] == [6] and item["00201206"]["Value"] == [2]
    assert item["00080061"]["Value"] == ["CT"]
    assert item["00100010"]["Value"] == [{"Alphabetic": "Test^Patient"}]
    assert item["00081190"]["Value"] == [f"{web}/studies/{study.uid}"]

    by = {"AccessionNumber": study.accession, "StudyDate": "20040101-20041231", "ModalitiesInStudy": "CT"}
    assert [r["0020000D"]["Value"][0] for r in client.search_for_studies(search_filters=by)] == [study.uid]
    assert client.search_for_studies(search_filters={"PatientID": study.patient_id, "StudyDate": "-20031231"}) == []
    # fuzzy matching: a name component's beginning, in any case; without it, the value is exact
    name = {"PatientID": study.patient_id, "PatientName": "pat"}
    assert len(client.search_for_studies(search_filters=name, fuzzymatching=True)) == 1
    assert client.search_for_studies(search_filters=name) == []
    assert client.search_for_studies(search_filters={**name, "PatientName": "atient"}, fuzzymatching=True) == []
    listed = client.search_for_studies(search_filters={"StudyInstanceUID": f"1.2.3,{study.uid}"},
                                       fields=["StudyDescription"])
    assert listed[0]["00081030"]["Value"] == ["CT chest"]

    series = client.search_for_series(study.uid)
    assert {s["0020000E"]["Value"][0] for s in series} == set(study.series)
    assert all(s["00201209"]["Value"] == [3] and s["00080060"]["Value"] == ["CT"] for s in series)
    everywhere = client.search_for_series(search_filters={"SeriesInstanceUID": study.series[1]})
    assert everywhere[0]["0020000D"]["Value"] == [study.uid]      # a study attribute at /series

    instances = client.search_for_instances(study.uid, study.series[0])
    assert len(instances) == 3
    sop = instances[0]["00080018"]["Value"][0]
    assert sop in originals(study)
    assert instances[0]["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    assert [i["00080018"]["Value"][0] for i in client.search_for_instances(
        study.uid, search_filters={"SOPInstanceUID": sop})] == [sop]
    paged = [client.search_for_instances(study.uid, limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p) for p in paged] == [2, 2, 2]
    assert len({i["00080018"]["Value"][0] for p in paged for i in p}) == 6


def test_qido_answers_204_400_and_warnings(study, web):
    status, _, body = curl(f"{web}/studies?PatientID=nobody-{uuid.uuid4().hex}")
    assert (status, body) == (204, b"")
    for query in ("StudyInstanceUID=1.2.03", "StudyInstanceUID=../../etc/passwd", "StudyDate=yesterday",
                  "NoSuchAttribute=1", "limit=-1", "SOPInstanceUID=1.2.3"):
        status, headers, body = curl(f"{web}/studies?{query}")
        assert status == 400, query
        assert json.loads(body)["error"]
    status, headers, body = curl(f"{web}/studies?PatientID={study.patient_id}&limit=100000")
    assert status == 200 and "limit 100000" in " ".join(headers["warning"])
    status, _, _ = curl("-H", "Accept: application/dicom+xml", f"{web}/studies")
    assert status == 406
    status, headers, _ = curl("-X", "POST", f"{web}/studies")
    assert status == 405 and headers["allow"] == ["GET, HEAD"]


def test_wado_rs_returns_the_study_as_stored(source, client, study, web, tmp_path):
    status, headers, body = curl("-H", f"Accept: {AS_STORED}", f"{web}/studies/{study.uid}")
    assert status == 200
    assert headers["content-type"][0].startswith('multipart/related; type="application/dicom"')
    got = parts(headers, body)
    by_uid = {}
    for head, data in got:
        assert head["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        assert data == stored(source, data)                   # the stored file, byte for byte
        path = tmp_path / f"{len(by_uid)}.dcm"
        path.write_bytes(data)
        dump = dd.run("/usr/bin/dcmdump", str(path))
        assert dump.returncode == 0 and "(7fe0,0010)" in dump.stdout, dump.stderr
        by_uid[dcmread(path, stop_before_pixels=True).SOPInstanceUID] = data
    sent = originals(study)
    assert set(by_uid) == set(sent)
    assert all(dd.dataset_bytes(by_uid[k]) == dd.dataset_bytes(sent[k]) for k in sent)

    datasets = client.retrieve_series(study.uid, study.series[0], media_types=(("application/dicom", "*"),))
    assert {ds.SOPInstanceUID for ds in datasets} == {k for k in sent if k in {
        dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.files[:3]}}
    sop = next(iter(sent))
    series = dcmread(io.BytesIO(sent[sop])).SeriesInstanceUID
    one = client.retrieve_instance(study.uid, series, sop)
    assert one.SOPInstanceUID == sop and one.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"

    # an uncompressed instance is re-encoded on request; a compressed syntax is not made
    status, headers, body = curl("-H", 'Accept: multipart/related; type="application/dicom"; '
                                 "transfer-syntax=1.2.840.10008.1.2", f"{web}/studies/{study.uid}/series/{series}"
                                 f"/instances/{sop}")
    [(head, data)] = parts(headers, body)
    assert head["Content-Type"].endswith("transfer-syntax=1.2.840.10008.1.2")
    assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    status, _, body = curl("-H", 'Accept: multipart/related; type="application/dicom"; '
                           "transfer-syntax=1.2.840.10008.1.2.4.50", f"{web}/studies/{study.uid}")
    assert status == 406 and json.loads(body)["error"]


def test_wado_rs_refuses_what_is_not_there(study, web):
    for path, code in ((f"/studies/{uuid.uuid4().int}", 404), ("/studies/..%2F..%2Fetc", 404),
                       ("/studies/1.2.3;ls", 400),
                       (f"/studies/{study.uid}/series/1.2.3", 404), ("/studies/1.2.3/series/x/instances/1", 400),
                       ("/nothing", 404)):
        status, _, body = curl(f"{web}{path}")
        assert status == code, path
        assert json.loads(body)["error"]
    status, _, _ = curl("-H", "Accept: image/gif", f"{web}/studies/{study.uid}")
    assert status == 406


def test_metadata_bulkdata_and_frames(client, study, web):
    sent = originals(study)
    metadata = client.retrieve_study_metadata(study.uid)
    assert {m["00080018"]["Value"][0] for m in metadata} == set(sent)
    item = metadata[0]
    sop, series = item["00080018"]["Value"][0], item["0020000E"]["Value"][0]
    original = dcmread(io.BytesIO(sent[sop]))
    assert item["00280010"]["Value"] == [original.Rows] and item["00100020"]["Value"] == [study.patient_id]
    uri = item["7FE00010"]["BulkDataURI"]
    assert uri == f"{web}/studies/{study.uid}/series/{series}/instances/{sop}/bulkdata/7FE00010"
    assert "Value" not in item["7FE00010"] and "InlineBinary" not in item["7FE00010"]
    assert client.retrieve_bulkdata(uri) == [original.PixelData]
    assert len(client.retrieve_instance_metadata(study.uid, series, sop)) == len(item)

    frames = client.retrieve_instance_frames(study.uid, series, sop, frame_numbers=[1])
    assert frames == [original.PixelData]
    status, _, _ = curl(f"{web}/studies/{study.uid}/series/{series}/instances/{sop}/frames/2")
    assert status == 404
    status, _, _ = curl(f"{web}/studies/{study.uid}/series/{series}/instances/{sop}/frames/0,x")
    assert status == 400


def test_rendered_thumbnail_and_wado_uri(source, client, study, web):
    sent = originals(study)
    sop = next(iter(sent))
    original = dcmread(io.BytesIO(sent[sop]))
    series = original.SeriesInstanceUID
    jpeg = client.retrieve_instance_rendered(study.uid, series, sop, media_types=("image/jpeg",))
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (original.Columns, original.Rows)
    assert len(set(image.tobytes())) > 10                   # a picture, not a blank
    status, headers, body = curl("-H", "Accept: image/png",
                                 f"{web}/studies/{study.uid}/series/{series}/thumbnail?viewport=32,32")
    assert status == 200 and headers["content-type"] == ["image/png"]
    assert max(Image.open(io.BytesIO(body)).size) <= 32

    base = f"{web}/wado?requestType=WADO&studyUID={study.uid}&seriesUID={series}&objectUID={sop}"
    status, headers, body = curl(base + "&contentType=application/dicom")
    assert status == 200 and headers["content-type"] == ["application/dicom"]
    assert body == stored(source, body) and dd.dataset_bytes(body) == dd.dataset_bytes(sent[sop])
    status, headers, body = curl(base)
    assert status == 200 and Image.open(io.BytesIO(body)).format == "JPEG"
    status, _, body = curl(base + "&contentType=image/png&rows=16&windowCenter=40&windowWidth=400")
    assert status == 200 and Image.open(io.BytesIO(body)).size[1] == 16
    for query, code in (("requestType=WADO&studyUID=1.2", 400),
                        (re.sub("requestType=WADO", "requestType=X", base), 400),
                        (base.replace(sop, "1.2.3.4"), 404), (base + "&contentType=text/html", 406)):
        url = query if query.startswith("http") else f"{web}/wado?{query}"
        status, _, _ = curl(url)
        assert status == code, query


@pytest.fixture(scope="module")
def rle(source, study, tmp_path_factory):
    """An RLE Lossless MR instance (compressed) in a study of its own."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
    ds = dcmread(get_testdata_file("MR_small_RLE.dcm"))
    del ds[0xFFFCFFFC]         # storescu drops Data Set Trailing Padding (see source_dicom.make_study)
    ds.PatientID, ds.IssuerOfPatientID = study.patient_id, dd.LOCAL_ISSUER
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path_factory.mktemp("rle") / "mr.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = dd.run("/usr/bin/storescu", "-xr", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port), str(path))
    assert out.returncode == 0, out.stderr
    return ds, path


def test_a_compressed_instance_goes_as_stored_or_decoded_without_loss(source, client, rle, web):
    ds, path = rle
    url = f"{web}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    status, headers, body = curl("-H", f"Accept: {AS_STORED}", url)
    [(head, data)] = parts(headers, body)
    assert head["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.5"
    assert data == stored(source, data) and dd.dataset_bytes(data) == dd.dataset_bytes(path.read_bytes())
    # Explicit VR Little Endian: RLE is decoded (lossless), the pixels are the same
    decoded = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                       media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (decoded.pixel_array == ds.pixel_array).all()
    status, _, _ = curl("-H", 'Accept: multipart/related; type="application/dicom"; '
                        "transfer-syntax=1.2.840.10008.1.2.4.50", url)
    assert status == 406
    # frames: the compressed frame as image/dicom-rle, or refused when only native bytes are accepted
    status, headers, body = curl("-H", 'Accept: multipart/related; type="image/dicom-rle"', f"{url}/frames/1")
    [(head, frame)] = parts(headers, body)
    assert status == 200 and head["Content-Type"].startswith("image/dicom-rle")
    from pydicom.encaps import generate_frames
    assert frame == next(generate_frames(ds.PixelData, number_of_frames=1))
    status, _, _ = curl("-H", 'Accept: multipart/related; type="application/octet-stream"', f"{url}/frames/1")
    assert status == 406
    png = client.retrieve_instance_rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                            media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).size == (ds.Columns, ds.Rows)


def test_orthanc_pulls_the_study_from_us_by_dicomweb(source, study, web, tmp_path):
    """Orthanc's DICOMweb plugin as a client: QIDO-RS then WADO-RS of the whole study from us."""
    from tests import orthanc as orthanc_peer
    if not orthanc_peer.available():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    peer = orthanc_peer.Orthanc.start(tmp_path / "orthanc", {"xdsi": web})
    try:
        found = peer.post("/dicom-web/servers/xdsi/get", {"Uri": "/studies",
                                                          "Arguments": {"PatientID": study.patient_id}})
        assert study.uid in [f["0020000D"]["Value"][0] for f in found]    # (the RLE study is the patient's too)
        peer.post("/dicom-web/servers/xdsi/retrieve", {"Resources": [{"Study": study.uid}]})
        ids = peer.get("/instances")
        got = {peer.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]: peer.get(f"/instances/{i}/file")
               for i in ids}
        sent = originals(study)
        assert set(got) == set(sent)
        for uid, data in got.items():
            assert data == stored(source, data)      # Orthanc kept what we sent, byte for byte
    finally:
        peer.stop()
