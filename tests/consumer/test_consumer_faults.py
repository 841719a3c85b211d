"""Each fault of the issue against real processes: recorded on the fetch or job with a clear reason,
retried where retrying can help, and never a partly reconciled study marked as stored. Also the other
retrieval methods (C-MOVE fallback, C-GET) and a report registered beside a study."""
import subprocess
import uuid
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.consumer.consumer_side import affinity_id, kos, register
from tests.hospital import HOSP_A, HOSP_B, linked_patient, published, send_study, stored_for
from tests.services import SOURCE_RUID, Hl7Receiver, free_port

TEXT_FORMAT = ("urn:ihe:rad:TEXT", "1.3.6.1.4.1.19376.1.2.3")


def local(b):
    return f"{b}^^^&{HOSP_B}&ISO"


def retries(history):
    return [h for h in history if "retry_in" in h and not h.get("gave_up")]


def test_pix_down_is_retried_then_recorded_on_the_fetch(chain, extra_consumer):
    c = extra_consumer(pix=f"127.0.0.1:{free_port()}", pacs=False)
    status = c.finished(c.fetch(local("B1")), 60)
    assert status["state"] == "failed" and "PIX manager" in status["error"] and "unreachable" in status["error"]
    assert len(retries(status["history"])) == 2 and status["attempts"] == 3     # max_attempts = 3


def test_unknown_patient_is_not_retried(chain, extra_consumer):
    c = extra_consumer(pacs=False)
    status = c.finished(c.fetch(local(f"G{uuid.uuid4().hex[:8]}")), 30)
    assert status["state"] == "failed" and "PIX does not know" in status["error"] and status["attempts"] == 1


def test_registry_down_is_recorded_on_the_fetch(chain, extra_consumer):
    _, b = linked_patient(chain)
    c = extra_consumer(registry_url=f"http://127.0.0.1:{free_port()}/registry", pacs=False)
    status = c.finished(c.fetch(local(b)), 60)
    assert status["state"] == "failed" and "registry unreachable" in status["error"] and status["attempts"] == 3


def test_source_down_fails_the_job_after_retries_and_stores_nothing(chain, extra_consumer, tmp_path):
    a, b = linked_patient(chain)
    published(chain, send_study(chain, tmp_path, a, HOSP_A, count=3))
    c = extra_consumer(sources=f'{{ "1.3.6.1.4.1.21367.13.40.302" = "http://127.0.0.1:{free_port()}/x" }}',
                       retrieve_order='["rad69"]')
    status = c.finished(c.fetch(local(b)), 90)
    [job] = status["jobs"]
    assert job["state"] == "failed" and job["attempts"] == 3 and "unreachable" in job["last_error"]
    assert len(retries(job["history"])) == 2 and c.pacs.files() == []


def test_a_document_that_is_not_a_kos_fails_its_job_at_once(chain, tmp_path):
    a, b = linked_patient(chain)
    register(chain, affinity_id(chain, b, HOSP_B), b"this is plain text, not a manifest")
    from tests.consumer.consumer_side import Consumer
    c = Consumer(None, chain.consumer_http, chain.consumer_mllp, None)
    status = c.finished(c.fetch(local(b)), 60)
    [job] = status["jobs"]
    assert job["state"] == "failed" and job["attempts"] == 1
    assert "not a KOS manifest" in job["last_error"] and "not DICOM" in job["last_error"]


def test_a_manifest_referencing_instances_the_source_does_not_have(chain):
    a, b = linked_patient(chain)
    study = generate_uid()
    register(chain, affinity_id(chain, b, HOSP_B), kos(study, {generate_uid(): [generate_uid(), generate_uid()]}))
    from tests.consumer.consumer_side import Consumer
    c = Consumer(None, chain.consumer_http, chain.consumer_mllp, None)
    status = c.finished(c.fetch(local(b)), 60)
    [job] = status["jobs"]
    assert job["state"] == "failed" and "2 of 2 instances could not be retrieved" in job["last_error"]
    assert "rad69" in job["last_error"] and "c-move" in job["last_error"]     # both ways were tried
    assert not [f for f in chain.pacs.files() if dcmread(f, stop_before_pixels=True).StudyInstanceUID == study]


def test_a_manifest_whose_sop_instance_uid_is_a_path_fails_its_job_and_writes_nothing(chain):
    """The SOP Instance UIDs a manifest lists were file names (``<uid>.dcm`` in the job's spool)."""
    a, b = linked_patient(chain)
    target = f"xdsi-manifest-{uuid.uuid4().hex[:8]}"
    hostile = "../" * 12 + f"tmp/{target}"
    register(chain, affinity_id(chain, b, HOSP_B), kos(generate_uid(), {generate_uid(): [generate_uid(), hostile]}))
    from tests.consumer.consumer_side import Consumer
    c = Consumer(None, chain.consumer_http, chain.consumer_mllp, None)
    status = c.finished(c.fetch(local(b)), 60)
    [job] = status["jobs"]
    assert job["state"] == "failed" and job["attempts"] == 1          # permanent: retrying cannot help
    assert "Referenced SOP Instance UID" in job["last_error"] and "not a DICOM UID" in job["last_error"]
    assert not list(Path("/tmp").glob(f"{target}*"))


def test_by_default_an_outside_accession_names_its_issuer(chain, extra_consumer, tmp_path):
    """No prefix configured (the default): the accession is kept, with the source as its issuer,
    so that it cannot be taken for one of the local PACS's own."""
    a, b = linked_patient(chain)
    study = send_study(chain, tmp_path, a, HOSP_A, count=2)
    published(chain, study)
    c = extra_consumer(accession_prefix="")
    status = c.finished(c.fetch(local(b)), 90)
    assert [j["state"] for j in status["jobs"]] == ["stored"]
    for f in c.pacs.files():
        ds = dcmread(f, stop_before_pixels=True)
        assert ds.AccessionNumber == "ACC77"
        [issuer] = ds.IssuerOfAccessionNumberSequence
        assert (issuer.UniversalEntityID, issuer.UniversalEntityIDType) == (SOURCE_RUID, "ISO")
        assert issuer.LocalNamespaceEntityID == SOURCE_RUID


def test_a_local_pacs_that_refuses_leaves_the_job_failed_not_stored(chain, extra_consumer, tmp_path):
    a, b = linked_patient(chain)
    published(chain, send_study(chain, tmp_path, a, HOSP_A, count=3))
    refusing = subprocess.Popen(["/usr/bin/storescp", "--refuse", str(port := free_port())],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = extra_consumer(local_pacs=f"LOCALPACS@127.0.0.1:{port}", pacs=False)
        status = c.finished(c.fetch(local(b)), 90)
    finally:
        refusing.terminate()
    [job] = status["jobs"]
    assert job["state"] == "failed" and job["attempts"] == 3 and "refused the association" in job["last_error"]
    assert job["instances_done"] == 0 and [h["state"] for h in job["history"] if "state" in h][-1] == "retrieved"


def test_c_move_covers_what_rad69_cannot(chain, tmp_path):
    """A manifest whose Retrieve Location UID no consumer knows, but whose Retrieve AE Title it does."""
    other = f"U{uuid.uuid4().hex[:8]}"
    study = send_study(chain, tmp_path, other, HOSP_A, count=4)
    sent = [dcmread(p, stop_before_pixels=True) for p in tmp_path.iterdir()]
    series = {}
    for ds in sent:
        series.setdefault(ds.SeriesInstanceUID, []).append(ds.SOPInstanceUID)
    a, b = linked_patient(chain)
    register(chain, affinity_id(chain, b, HOSP_B), kos(study, series, location="1.2.3.4.999"))
    from tests.consumer.consumer_side import Consumer
    c = Consumer(None, chain.consumer_http, chain.consumer_mllp, None)
    status = c.finished(c.fetch(local(b)), 60)
    [job] = status["jobs"]
    assert job["state"] == "stored" and job["retrieved_by"] == "c-move"
    got = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in chain.pacs.files()}
    assert {ds.SOPInstanceUID for ds in sent} <= got.keys()
    one = dcmread(got[sent[0].SOPInstanceUID], stop_before_pixels=True)
    assert one.PatientID == b and one.AccessionNumber == "A-ACC77"


def test_c_get_with_a_report_beside_the_study(chain, extra_consumer, tmp_path):
    a, b = linked_patient(chain)
    study = send_study(chain, tmp_path, a, HOSP_A, count=3)
    published(chain, study)
    report = b"CT chest: no acute findings.\nImpression: normal."
    register(chain, affinity_id(chain, b, HOSP_B), report, format_code=TEXT_FORMAT,
             reference_ids=(f"{study}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",))
    c = extra_consumer(retrieve_order='["c-get"]', reports="store", held_mb_per_study=0.05)   # held, then written
    status = c.finished(c.fetch(local(b)), 90)
    [job] = status["jobs"]
    assert job["state"] == "stored" and job["retrieved_by"] == "c-get" and job["report_state"] == "stored"
    received = [dcmread(f) for f in c.pacs.files()]
    assert len(received) == 4 and {ds.PatientID for ds in received} == {b}
    [sr] = [ds for ds in received if ds.Modality == "SR"]
    assert sr.StudyInstanceUID == study and "no acute findings" in sr.ContentSequence[0].TextValue
    dump = subprocess.run(["/usr/bin/dcmdump", str(c.pacs.files()[0])], capture_output=True, text=True).stdout
    assert "XDSI RECONCILED" in dump and f"[{a}]" in dump


def test_a_restart_resumes_and_a_second_fetch_stores_nothing_twice(chain, extra_consumer, tmp_path):
    a, b = linked_patient(chain)
    published(chain, send_study(chain, tmp_path, a, HOSP_A, count=6))
    c = extra_consumer(held_mb_per_study=0.05)      # the RAD-69 answer: one instance held, the rest spooled
    first = c.finished(c.fetch(local(b)), 90)
    assert [j["state"] for j in first["jobs"]] == ["stored"] and len(c.pacs.files()) == 6
    second = c.finished(c.fetch(local(b)), 30)
    assert second["jobs"] == [] and len(c.pacs.files()) == 6
    assert stored_for(chain, b) == []              # the chain's own consumer was never asked


PDF_FORMAT = ("urn:ihe:rad:PDF", "1.3.6.1.4.1.19376.1.2.3")


def _report_beside(chain, a, b, tmp_path, data: bytes, format_code, mime_type: str) -> str:
    study = send_study(chain, tmp_path, a, HOSP_A, count=3)
    published(chain, study)
    register(chain, affinity_id(chain, b, HOSP_B), data, format_code=format_code, mime_type=mime_type,
             reference_ids=(f"{study}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",))
    return study


@pytest.fixture
def hl7_receiver():
    receiver = Hl7Receiver()
    yield receiver
    receiver.stop()


def _fetched_with_report(extra_consumer, b, report_state: str, **settings):
    """A consumer with ``settings`` fetches ``b``'s study; its one job is stored, its report
    ``report_state``; the consumer."""
    c = extra_consumer(**settings)
    status = c.finished(c.fetch(local(b)), 90)
    [job] = status["jobs"]
    assert job["state"] == "stored" and job["report_state"] == report_state, job
    return c


def test_a_pdf_report_is_stored_and_the_pacs_gets_its_order_first(chain, extra_consumer, tmp_path, hl7_receiver):
    """The whole chain: a PDF registered beside the study arrives in the PACS as an Encapsulated
    PDF of the reconciled study, and the PACS order interface gets the ORM before any image."""
    a, b = linked_patient(chain)
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    study = _report_beside(chain, a, b, tmp_path, pdf, PDF_FORMAT, "application/pdf")
    c = _fetched_with_report(extra_consumer, b, "stored", reports="store", pacs_orders=hl7_receiver.address)
    received = {p: dcmread(p) for p in c.pacs.files()}
    assert {ds.PatientID for ds in received.values()} == {b}
    [report] = [ds for ds in received.values() if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"]
    assert report.StudyInstanceUID == study and report.EncapsulatedDocument.startswith(pdf)
    assert report.MIMETypeOfEncapsulatedDocument == "application/pdf"
    [(ordered_at, orm)] = hl7_receiver.of_type("ORM^O01")
    pid = next(s for s in orm if s.startswith("PID|")).split("|")
    assert pid[3].startswith(f"{b}^^^") and HOSP_B in pid[3]
    assert any(study in s for s in orm)
    first_image = min(p.stat().st_mtime for p, ds in received.items() if ds.Modality == "CT")
    assert ordered_at <= first_image


def test_a_text_report_is_forwarded_as_oru(chain, extra_consumer, tmp_path, hl7_receiver):
    a, b = linked_patient(chain)
    _report_beside(chain, a, b, tmp_path, b"MR knee: meniscal tear.", TEXT_FORMAT, "text/plain")
    c = _fetched_with_report(extra_consumer, b, "sent", reports="oru", report_oru=hl7_receiver.address)
    [(_, oru)] = hl7_receiver.of_type("ORU^R01")
    assert next(s for s in oru if s.startswith("PID|")).split("|")[3].startswith(f"{b}^^^")
    assert any("meniscal tear" in s for s in oru if s.startswith("OBX|"))
    assert all(ds.Modality == "CT" for ds in map(dcmread, c.pacs.files()))    # the report is not stored too
