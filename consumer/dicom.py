"""The consumer's DICOM side (pynetdicom): the AE ``XDSI_CONSUMER`` that C-MOVE sub-operations arrive
at, the C-MOVE/C-GET requests to a source, and C-STORE into the local PACS."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, AllStoragePresentationContexts, build_context, build_role, evt
from pynetdicom.status import Status
from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove, Verification)

from affinity_domain import audit, audit_codes, dicom_limits, dicom_listener, dicom_status, part10, secure_node, uids
from affinity_domain.audit import dicom as audit_dicom, events as audit_events, xds as audit_xds
from affinity_domain.audit.message import Study
from affinity_domain.dicom_net import TUNED, install, nodelay, received_part10
from affinity_domain.exceptions import XdsiError
from affinity_domain.transfer_syntax import COMPRESSED, UNCOMPRESSED

install()
log = logging.getLogger("xdsi.consumer")
ACCEPTED = [*UNCOMPRESSED, *COMPRESSED]
STORED = (Status.SUCCESS, dicom_status.COERCION_OF_DATA_ELEMENTS, dicom_status.ELEMENTS_DISCARDED,
          dicom_status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING)
RETRIEVED = (Status.SUCCESS, dicom_status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES)   # the instances are then counted


# A retrieved instance: its Part-10 bytes, or the file holding them.
Instance = bytes | Path


def opened(instance: Instance) -> Path | BytesIO:
    """Something pydicom's dcmread reads the instance from."""
    return BytesIO(instance) if isinstance(instance, bytes) else instance


def sop_class_and_syntax(instance: Instance) -> tuple[str, str]:
    """(SOP Class UID, Transfer Syntax UID) from an instance's meta."""
    if isinstance(instance, Path):
        meta = read_file_meta_info(instance)          # reads the meta alone
    else:
        found = part10.file_meta(instance)
        if found is not None and {0x00020002, 0x00020010} <= found[0].keys():
            return found[0][0x00020002], found[0][0x00020010]
        meta = dcmread(BytesIO(instance), stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


class DicomRefused(XdsiError):
    """A DICOM peer would not associate, or answered with a failure status: it may later."""

    retryable = True


def instance_file(uid: str) -> str:
    """The file name an instance is kept under: the SHA-1 of its SOP Instance UID, so that the job
    that asked for that UID finds it, and no character a peer sent is ever part of a path."""
    return hashlib.sha1(uid.encode()).hexdigest() + ".dcm"


def write_instance(directory: Path, uid: str, data: bytes) -> Path:
    """A received instance's Part-10 bytes as ``<dir>/<instance_file(uid)>``, whole or not at all."""
    fd, part = tempfile.mkstemp(dir=directory, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        target = directory / instance_file(uid)
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    return target


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _dataset_sop_instance(event) -> str:
    """The SOP Instance UID (0008,0018) of a received C-STORE's dataset, read without decoding it
    (pydicom decodes the syntaxes ``part10`` does not walk)."""
    implicit = part10.implicit_vr(event.context.transfer_syntax)
    if implicit is None:
        return str(event.dataset.get("SOPInstanceUID", "") or "")
    with event.request.DataSet.getbuffer() as data:
        for tag, _, value_at, stop in part10.top_level(data, 0, implicit=implicit):
            if tag == 0x00080018:
                return bytes(data[value_at:stop]).rstrip(b"\0 ").decode("latin-1")
            if tag > 0x00080018:
                break
    return ""


def affected_sop_instance(event) -> str:
    """A C-STORE command's Affected SOP Instance UID, without the NUL that pads it on the wire."""
    return str(event.request.AffectedSOPInstanceUID or "").rstrip("\0")


def refusal(event) -> Dataset | None:
    """A C-STORE's failure answer when its SOP Instance UID, in the command or in the dataset, is
    not a DICOM UID, or the two differ (None when it may be kept). Its UID names the file."""
    command = affected_sop_instance(event)
    try:
        dataset = _dataset_sop_instance(event)
    except Exception:                    # part10.Unreadable, or pydicom's own errors
        log.warning("C-STORE refused: unreadable dataset", extra={"sop_uid": command[:64]})
        return _failure(dicom_status.CANNOT_UNDERSTAND, "the dataset cannot be read")
    for what, value in (("Affected SOP Instance UID", command), ("SOP Instance UID", dataset)):
        if (problem := uids.uid_problem(value, what)) is not None:
            log.warning("C-STORE refused", extra={"reason": problem, "calling_ae": event.assoc.requestor.ae_title})
            return _failure(dicom_status.INVALID_SOP_INSTANCE, problem)
    if command != dataset:
        log.warning("C-STORE refused: the command and the dataset name different instances",
                    extra={"sop_uid": command, "dataset_sop_uid": dataset})
        return _failure(dicom_status.CANNOT_UNDERSTAND, "SOP Instance UID differs from the command's")
    return None


def start_scp(ae_title: str, host: str, port: int, incoming: Path, limits: dicom_limits.Limits, max_pdu: int,
              timeout: float, admit=None):
    """The C-MOVE destination: every instance lands in ``incoming``, where the job that asked waits."""
    incoming.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = timeout
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ACCEPTED)
    ae.add_supported_context(Verification)

    def on_store(event):
        refused = refusal(event)
        if refused is not None:
            return refused
        try:
            write_instance(incoming, affected_sop_instance(event), received_part10(event))
            return Status.SUCCESS
        except OSError:
            log.exception("could not keep a received instance")
            return dicom_status.OUT_OF_RESOURCES

    handlers = TUNED + [(evt.EVT_C_STORE, on_store),
                (evt.EVT_C_ECHO, lambda e: Status.SUCCESS)]
    return dicom_listener.start_server(ae, (host, port), handlers, limits, admit=admit)


def _identifier(study_uid: str, series_uid: str, sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sops
    return ds


def _final(responses, what: str) -> None:
    last = None
    for status, _ in responses:
        if status is not None:
            last = status
    if last is None:
        raise DicomRefused(f"{what}: no final response (association aborted or timed out)")
    if last.Status not in RETRIEVED:
        raise DicomRefused(f"{what}: status 0x{last.Status:04X} {last.get('ErrorComment', '')}".strip())


def _retrieved(calling_ae: str, peer: tuple[str, str, int], study_uid: str, series: dict[str, list[str]],
               patient: str, outcome: int, description: str | None) -> None:
    """The consumer's DICOM Instances Transferred (C) for a C-MOVE or C-GET it asked for."""
    if not audit.recording():
        return
    ae_title, host, _ = peer
    audit.record(audit_events.instances_transferred(
        action=audit_codes.CREATE, sender=audit_dicom.ae(ae_title, host, sender=True, requestor=False),
        receiver=audit_dicom.ae(calling_ae, audit_xds.ourselves().host, sender=False, requestor=True),
        studies=[Study(study_uid, {"": tuple(u for uids in series.values() for u in uids)})], patient=patient or None,
        outcome=outcome, description=description))


def move(calling_ae: str, peer: tuple[str, str, int], destination_ae: str, study_uid: str,
         series: dict[str, list[str]], timeout: float, patient: str = "") -> None:
    """C-MOVE each series' instances to ``destination_ae`` (this consumer's SCP)."""
    try:
        _move(calling_ae, peer, destination_ae, study_uid, series, timeout)
    except DicomRefused as e:
        _retrieved(calling_ae, peer, study_uid, series, patient, audit_codes.SERIOUS_FAILURE, str(e))
        raise
    _retrieved(calling_ae, peer, study_uid, series, patient, audit_codes.SUCCESS, None)


def _move(calling_ae: str, peer: tuple[str, str, int], destination_ae: str, study_uid: str,
          series: dict[str, list[str]], timeout: float) -> None:
    ae_title, host, port = peer
    ae = AE(calling_ae)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(host, port, ae_title=ae_title, tls_args=secure_node.dicom_tls_args(host))
    if not assoc.is_established:
        raise DicomRefused(f"{ae_title}@{host}:{port} refused the C-MOVE association")
    nodelay(assoc)
    try:
        for series_uid, sops in series.items():
            _final(assoc.send_c_move(_identifier(study_uid, series_uid, sops), destination_ae,
                                     StudyRootQueryRetrieveInformationModelMove), f"C-MOVE from {ae_title}")
    finally:
        assoc.release()


def get(calling_ae: str, peer: tuple[str, str, int], study_uid: str, series: dict[str, list[str]],
        sop_classes: set[str], take: Callable[[str, bytes], None], timeout: float, patient: str = "") -> None:
    """C-GET each series' instances over one association; ``take(uid, part10 bytes)`` gets each."""
    try:
        _get(calling_ae, peer, study_uid, series, sop_classes, take, timeout)
    except DicomRefused as e:
        _retrieved(calling_ae, peer, study_uid, series, patient, audit_codes.SERIOUS_FAILURE, str(e))
        raise
    _retrieved(calling_ae, peer, study_uid, series, patient, audit_codes.SUCCESS, None)


def _get(calling_ae: str, peer: tuple[str, str, int], study_uid: str, series: dict[str, list[str]],
         sop_classes: set[str], take: Callable[[str, bytes], None], timeout: float) -> None:
    ae_title, host, port = peer
    ae = AE(calling_ae)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = sorted(sop_classes)[:120]          # 128 presentation contexts at most
    for uid in classes:
        ae.add_requested_context(uid, ACCEPTED)
    roles = [build_role(uid, scp_role=True) for uid in classes]

    def on_store(event):
        refused = refusal(event)
        if refused is not None:
            return refused
        take(affected_sop_instance(event), received_part10(event))
        return Status.SUCCESS
    assoc = ae.associate(host, port, ae_title=ae_title, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)],
                         tls_args=secure_node.dicom_tls_args(host))
    if not assoc.is_established:
        raise DicomRefused(f"{ae_title}@{host}:{port} refused the C-GET association")
    nodelay(assoc)
    try:
        for series_uid, sops in series.items():
            _final(assoc.send_c_get(_identifier(study_uid, series_uid, sops),
                                    StudyRootQueryRetrieveInformationModelGet), f"C-GET from {ae_title}")
    finally:
        assoc.release()


def _patient_of(ds) -> str:
    if not isinstance(ds, Dataset):
        return ""
    pid, issuer = str(ds.get("PatientID", "") or ""), str(ds.get("IssuerOfPatientID", "") or "")
    return f"{pid}^^^&{issuer}&ISO" if issuer and pid else pid


class LocalPacs:
    """One association to the local PACS for a study's instances (C-STORE SCU)."""

    def __init__(self, calling_ae: str, peer: tuple[str, str, int], instances: list[Instance], timeout: float,
                 patient: str = "", study_uid: str = ""):
        """``patient``, ``study_uid``: what the instances are, for the audit record (else read from each)."""
        self.peer, self.calling_ae = peer, calling_ae
        self.patient, self.study_uid = patient, study_uid
        self.sent = audit_dicom.Transfers()
        pairs = {}
        for instance in instances:
            sop_class, syntax = sop_class_and_syntax(instance)
            pairs.setdefault(sop_class, set()).add(syntax)
        ae = AE(calling_ae)
        ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = timeout
        ae.requested_contexts = [build_context(uid, sorted(ts | {UNCOMPRESSED[0]}))
                                 for uid, ts in sorted(pairs.items())][:128]
        ae_title, host, port = peer
        self.assoc = ae.associate(host, port, ae_title=ae_title, tls_args=secure_node.dicom_tls_args(host))
        if not self.assoc.is_established:
            raise DicomRefused(f"the local PACS {ae_title}@{host}:{port} refused the association")
        nodelay(self.assoc)

    def store(self, ds: Dataset) -> None:
        status = self.assoc.send_c_store(ds)
        self.sent.add(self.patient or _patient_of(ds), self.study_uid or str(getattr(ds, "StudyInstanceUID", "")),
                      str(ds.SOPClassUID), str(ds.SOPInstanceUID), bool(status) and status.Status in STORED)
        if not status or status.Status not in STORED:
            code = f"0x{status.Status:04X}" if status else "none (association lost)"
            raise DicomRefused(f"the local PACS {self.peer[0]} refused {ds.SOPInstanceUID}: status {code}")

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        if audit.recording():       # DICOM Instances Transferred (R), one per patient of the association
            ae_title, host, _ = self.peer
            for message in self.sent.messages(
                    audit_codes.READ, audit_dicom.ae(self.calling_ae, audit_xds.ourselves().host, sender=True,
                                                     requestor=True),
                    audit_dicom.ae(ae_title, host, sender=False, requestor=False)):
                audit.record(message)
