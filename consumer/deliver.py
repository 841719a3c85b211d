"""Delivering one outside study to the local side: its instances reconciled and stored into the
local PACS by C-STORE (an ORM^O01 first, for a PACS that needs one), each stored instance
recorded; then its report, stored beside it or sent as an ORU^R01."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

from affinity_domain import hl7, mllp
from affinity_domain.hl7 import Cx
from affinity_domain.soap_client import TransportError

from . import dicom, manifest, messages, reports, retrieve, rewrite, rules
from .dicom import Instance
from .jobs import Permanent
from .settings import ConsumerSettings
from .store import Store

PROGRESS_EVERY = 20          # instances between two durable progress records


def reconciliation(s: ConsumerSettings, local: Cx, parsed: manifest.Manifest) -> rules.Reconciliation:
    """How the study's instances (and its report) become local: the rules for its source site."""
    source = parsed.series[0].retrieve_location_uid or parsed.series[0].retrieve_ae_title
    prefix = s.accession_prefixes.get(source, s.accession_prefix)
    # An outside accession is kept apart from ours: by its site's prefix, or by naming its issuer
    # (the one configured for the source, else the source's own uid).
    named = s.accession_mode == "issuer" or (s.accession_mode == "auto" and not prefix)
    issuer = s.accession_issuers.get(source, source) if named else ""
    return rules.Reconciliation(local.id, local.authority, prefix, s.procedure_codes, source, issuer)


def store_study(store: Store, s: ConsumerSettings, job: dict, instances: list[Instance], recon: rules.Reconciliation,
                done: int) -> None:
    """C-STORE of ``instances`` over one association; ``done`` were stored by earlier attempts."""
    if s.pacs_orders_address:
        order_for_pacs(s, instances[0], recon)
    pacs = dicom.LocalPacs(s.ae_title, s.pacs, instances, s.timeout, job["local_patient"], job.get("study_uid") or "")
    batch: list[str] = []
    # The next instance is reconciled while the PACS stores the current one.
    ahead = ThreadPoolExecutor(1, thread_name_prefix="reconcile")
    reconciler = rewrite.Reconciler(recon)
    try:
        upcoming = ahead.submit(_reconciled, instances[0], reconciler) if instances else None
        for i in range(len(instances)):
            ds = upcoming.result()
            upcoming = ahead.submit(_reconciled, instances[i + 1], reconciler) if i + 1 < len(instances) else None
            pacs.store(ds)
            batch.append(str(ds.SOPInstanceUID))
            if len(batch) == PROGRESS_EVERY:
                done += len(batch)
                store.mark_stored(job["id"], job["local_patient"], batch, done)
                batch = []
    finally:
        ahead.shutdown(cancel_futures=True)
        if batch:              # what the PACS took is recorded even when a later store fails
            store.mark_stored(job["id"], job["local_patient"], batch, done + len(batch))
        pacs.close()


def order_for_pacs(s: ConsumerSettings, sample: Instance, recon: rules.Reconciliation) -> None:
    ds = rules.reconcile(dcmread(dicom.opened(sample), stop_before_pixels=True), recon)
    procedure = ds.ProcedureCodeSequence[0].get("CodeValue", "") if ds.get("ProcedureCodeSequence") else ""
    msg = messages.order(recon.local_patient_id, recon.local_authority, str(ds.get("PatientName", "")),
                         str(ds.get("AccessionNumber", "")), str(ds.StudyInstanceUID), procedure)
    try:
        reply = hl7.decode(mllp.send(*s.pacs_orders_address, msg, timeout=s.timeout))
    except OSError as e:
        raise TransportError(f"the local PACS order interface is unreachable: {e}", False) from None
    if not hl7.accepted(reply):
        msa = hl7.first_segment(reply, "MSA") or ["no MSA"]
        raise dicom.DicomRefused(f"the local PACS did not accept the order: {'|'.join(msa)}")


def report(store: Store, s: ConsumerSettings, job: dict, parsed: manifest.Manifest, recon: rules.Reconciliation,
           work: Path) -> None:
    """The study's report (ITI-43), stored into the local PACS or sent as an ORU, once."""
    if not job["report_unique_id"] or s.reports == "skip" or job.get("report_state") in ("stored", "sent"):
        return
    data, mime = retrieve.document(s, job["report_repository"], job["report_unique_id"], job["home"],
                                    job["local_patient"])
    mime = mime or job["report_mime"]
    # Patient and study attributes of the outside study, from the KOS (it copies them from the images).
    header = dcmread(retrieve.manifest_path(s, job), stop_before_pixels=True)
    if s.reports == "oru":
        if not s.report_oru_address:
            raise Permanent("reports = 'oru' but no report_oru address is configured")
        study = rules.reconcile(header, recon)
        msg = messages.report(recon.local_patient_id, recon.local_authority, str(study.get("PatientName", "")),
                              str(study.get("AccessionNumber", "")), parsed.study_uid, reports.text_of(data, mime))
        try:
            reply = hl7.decode(mllp.send(*s.report_oru_address, msg, timeout=s.timeout))
        except OSError as e:
            raise TransportError(f"the report receiver is unreachable: {e}", False) from None
        if not hl7.accepted(reply):
            raise TransportError("the report receiver did not accept the ORU", False)
        state = "sent"
    else:
        ds = rules.reconcile(reports.as_dicom(data, mime, header), recon)
        path = work / "report.dcm"
        ds.save_as(path, enforce_file_format=True)
        pacs = dicom.LocalPacs(s.ae_title, s.pacs, [path], s.timeout, job["local_patient"])
        try:
            pacs.store(ds)
        finally:
            pacs.close()
        state = "stored"
    store.set_job(job["id"], report_state=state)
    store.note(job["id"], f"report {job['report_unique_id']} ({mime}) {state}")


def _reconciled(instance: Instance, reconciler: rewrite.Reconciler):
    """An instance reconciled for the local PACS: its touched elements re-encoded, or (a syntax
    the reconciler cannot rewrite) the whole dataset decoded."""
    data = instance if isinstance(instance, bytes) else instance.read_bytes()
    return reconciler.part10(data) or rules.reconcile(dcmread(BytesIO(data)), reconciler.recon)
