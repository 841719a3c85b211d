"""The imaging source's RAD-69 door under hostile peers: a body refused from its Content-Length, a repeated
Content-ID or a part nothing names a SOAP fault that leaves no spool file; /health with its indexer and
publisher, /metrics with RAD-69 by outcome."""
import json

from affinity_domain import ns
from tests import hostile
from tests.imaging_source import source_dicom as dd
from tests.repository.pnr import mtom_message, post
from tests.services import SOURCE_RUID


def rad69(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return (f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{ns.IHERAD}" xmlns:xdsb="{ns.XDSB}">'
            f'<iherad:StudyRequest studyInstanceUID="{study_uid}"><iherad:SeriesRequest seriesInstanceUID='
            f'"{series_uid}"><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{SOURCE_RUID}</xdsb:RepositoryUniqueId>'
            f'<xdsb:DocumentUniqueId>{sop_uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest></iherad:SeriesRequest>'
            f'</iherad:StudyRequest><iherad:TransferSyntaxUIDList><iherad:TransferSyntaxUID>1.2.840.10008.1.2.1'
            f'</iherad:TransferSyntaxUID></iherad:TransferSyntaxUIDList></iherad:RetrieveImagingDocumentSetRequest>')


def spool_files(source) -> list:
    return [p for p in (source.store / "spool").rglob("*") if p.is_file()]


def counted(source, **labels) -> float:
    text = hostile.curl(source.url.replace("/imaging-source", "/metrics"))[1].decode()
    return hostile.metric(text, "xdsi_requests_total", **labels)


def test_a_content_length_over_the_limit_is_a_413_fault(source):
    answer = hostile.head_only(source.url, "POST", 200 * 1024 * 1024, "application/soap+xml")
    assert answer.status == 413 and b"larger than" in answer.body and b"Fault" in answer.body


def test_a_repeated_content_id_or_a_part_nothing_names_is_a_fault_and_leaves_no_spool_file(source):
    body = rad69("1.2.3", "1.2.3.4", "1.2.3.4.5")
    for parts, wanted in (([("a@x", b"1" * 5000), ("a@x", b"2" * 5000)], "two MIME parts have Content-ID <a@x>"),
                          ([("stray@x", b"3" * 5000)], "MIME part <stray@x> is named by no xop:Include")):
        answer = post(source.url, *mtom_message(ns.RETRIEVE_IMAGING, body, parts))
        assert answer.status == 400
        assert wanted in answer.root.findtext(f".//{{{ns.SOAP12}}}Text")
        assert spool_files(source) == []


def test_health_and_rad69_metrics(source, patient, tmp_path):
    status, report = hostile.curl(source.url.replace("/imaging-source", "/health"))
    workers = json.loads(report)["processes"]["main"]["workers"]
    assert status == 200 and workers["indexer"]["alive"] and workers["publisher"]["alive"]
    local, _ = patient
    study = dd.make_study(tmp_path / "study", local, series=1, per_series=1)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    ok, failed = (counted(source, transaction="RAD-69", outcome=o) for o in ("success", "failure"))
    good = post(source.url, *mtom_message(ns.RETRIEVE_IMAGING, rad69(study.uid, study.series[0],
                                                                     study.sop_uids()[0]), []))
    assert good.status_name == "Success" and len(good.parts) == 1
    unknown = post(source.url, *mtom_message(ns.RETRIEVE_IMAGING, rad69(study.uid, study.series[0], "1.2.9"), []))
    assert unknown.status_name == "Failure"
    assert counted(source, transaction="RAD-69", outcome="success") == ok + 1
    assert counted(source, transaction="RAD-69", outcome="failure", code=unknown.error_codes[0]) >= 1
    assert counted(source, transaction="RAD-69", outcome="failure") == failed + 1
