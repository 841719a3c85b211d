"""Test helpers for the consumer's side: another consumer process with its own database and local
PACS, the affinity-domain id of a patient, documents registered by ITI-41, hand-made KOS manifests."""
from __future__ import annotations

import json
import time
import urllib.request
import uuid
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage, generate_uid

from affinity_domain.errors import UNKNOWN_PATIENT_ID

from tests.repository import pnr
from tests.services import SOURCE_RUID, StoreScp, free_port, launch, wait_until
from tests.xds import Doc, mllp_send

DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"
KOS_FORMAT = (KeyObjectSelectionDocumentStorage, "1.2.840.10008.2.6.1")


@dataclass
class Consumer:
    process: object
    http: str
    mllp: int
    pacs: StoreScp | None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self.pacs:
            self.pacs.stop()

    def fetch(self, patient: str, **body) -> int:
        req = urllib.request.Request(f"{self.http}/fetches", method="POST",
                                     data=json.dumps({"patient": patient, **body}).encode())
        return json.load(urllib.request.urlopen(req))["fetch"]

    def status(self, fetch: int) -> dict:
        return json.load(urllib.request.urlopen(f"{self.http}/fetches/{fetch}"))

    def finished(self, fetch: int, timeout: float = 90) -> dict:
        return wait_until(lambda: (lambda s: s if s["progress"]["finished"] else None)(self.status(fetch)),
                          timeout, 0.3)


def start_consumer(chain, database: str, mktemp, pacs: bool = True, **settings) -> Consumer:
    mllp, http, dicom = free_port(), free_port(), int(settings.pop("dicom_port", 0)) or free_port()
    local = StoreScp.start(mktemp("pacs"), "LOCALPACS") if pacs else None
    base = {"mllp_port": mllp, "http_port": http, "dicom_port": dicom, "pix": f"127.0.0.1:{chain.pix.mllp[1]}",
            "registry_url": chain.registry.url,
            "repositories": f'{{ "1.3.6.1.4.1.21367.13.40.301" = "{chain.repository.url}" }}',
            "sources": f'{{ "{SOURCE_RUID}" = "{chain.source_url}" }}',
            "dicom_sources": f'{{ XDSI_SOURCE = "127.0.0.1:{chain.source_dicom_port}" }}',
            "local_pacs": f"LOCALPACS@127.0.0.1:{local.port if local else free_port()}",
            "accession_prefix": "A-", "max_attempts": 3, "retry_base_seconds": 0.3}
    proc, _ = launch("consumer", mktemp("consumer"), database, {**base, **settings}, [mllp, http, dicom])
    return Consumer(proc, f"http://127.0.0.1:{http}", mllp, local)


def affinity_id(chain, pid: str, oid: str) -> str:
    qbp = (f"MSH|^~\\&|T|T|XDSI_PIX|X|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|{uuid.uuid4().hex[:10]}|P|2.5\r"
           f"QPD|IHE PIX Query|q{uuid.uuid4().hex[:6]}|{pid}^^^&{oid}&ISO|^^^&{DOMAIN}&ISO\rRCP|I\r").encode()
    reply = mllp_send(chain.pix.mllp, qbp)
    pid3 = next(line.split("|")[3] for line in reply.split("\r") if line.startswith("PID|"))
    return next(i for i in pid3.split("~") if DOMAIN in i)


def register(chain, patient: str, data: bytes, format_code=KOS_FORMAT, reference_ids=(), service_start="20260110080000",
             mime_type="text/plain"):
    """ITI-41 to the chain's repository: one document for ``patient`` (affinity-domain CX)."""
    doc = pnr.with_hash(Doc(format_code=format_code, reference_ids=reference_ids, service_start=service_start,
                            mime_type=mime_type), data)
    # The PIX manager feeds the affinity-domain id to the registry on its own time.
    answer = wait_until(lambda: (lambda a: a if a.error_codes != [UNKNOWN_PATIENT_ID] else None)(
        pnr.provide(chain.repository.url, patient, [(doc, data)])), 30, 0.5)
    assert answer.status_name == "Success", answer.error_codes
    return doc.unique_id


def kos(study_uid: str, series: dict[str, list[str]], location: str = SOURCE_RUID, ae: str = "XDSI_SOURCE",
        sop_class: str = "1.2.840.10008.5.1.4.1.1.2") -> bytes:
    """A minimal KOS manifest (113030) referencing ``series``: enough for the consumer to act on."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = KeyObjectSelectionDocumentStorage, generate_uid()
    ds.PatientID, ds.StudyInstanceUID, ds.Modality = "X", study_uid, "KO"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "113030", "DCM", "Manifest"
    ds.ConceptNameCodeSequence = Sequence([title])
    items = []
    for series_uid, sops in series.items():
        s = Dataset()
        s.SeriesInstanceUID, s.RetrieveAETitle, s.RetrieveLocationUID = series_uid, ae, location
        refs = []
        for uid in sops:
            r = Dataset()
            r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = sop_class, uid
            refs.append(r)
        s.ReferencedSOPSequence = Sequence(refs)
        items.append(s)
    study = Dataset()
    study.StudyInstanceUID, study.ReferencedSeriesSequence = study_uid, Sequence(items)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()

