"""Storage Commitment Push Model, as SCP (PS3.4 Annex J): how a modality learns that the instances
it sent are safe before it deletes them.

An N-ACTION (Action Type 1) names instances by SOP Class and SOP Instance UID under a Transaction
UID; it is answered at once, and the result follows as an N-EVENT-REPORT: Event Type 1 when every
instance is committed, 2 with a Failed SOP Sequence otherwise. The report goes on the same
association while the modality keeps it open, else on a new one to the calling AE's address in
``move_destinations`` (proposing the SCP role, J.3.3). An instance is committed only once it is in
the index and its file, its name and the index's commit are on disk, whatever ``durability`` says:
a fast store is synced here.

Reading the request and deciding are pure (``read_request``, ``decide``, ``event_report``); the
class below is the pynetdicom adapter.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from io import BytesIO
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode

from affinity_domain import dicom_net, secure_node
from affinity_domain.uids import is_uid
from affinity_domain.content import FileStore
from affinity_domain.dicom_status import (CLASS_INSTANCE_CONFLICT, INVALID_ARGUMENT_VALUE, NO_SUCH_ACTION,
                                          NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE, RESOURCE_LIMITATION)
from affinity_domain.transfer_syntax import UNCOMPRESSED
from .settings import ImagingSourceSettings

log = logging.getLogger("xdsi.imaging_source.commitment")

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"               # Storage Commitment Push Model SOP Class
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"            # its one SOP Instance (J.3.5)
REQUEST_STORAGE_COMMITMENT = 1                           # Action Type ID
ALL_COMMITTED, FAILURES_EXIST = 1, 2                     # Event Type IDs
LOOKUP_CHUNK = 1000                                      # SOP Instance UIDs per index query

Reference = tuple[str, str]                              # (SOP Class UID, SOP Instance UID)


@dataclass(frozen=True)
class Request:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def _uid(value) -> str:
    return str(value or "").strip().rstrip("\0")


def read_request(action_type: int | None, requested_instance: str, info: Dataset | None) -> Request | Refusal:
    """A Storage Commitment request from an N-ACTION, or the N-ACTION status that refuses it."""
    if action_type != REQUEST_STORAGE_COMMITMENT:
        return Refusal(NO_SUCH_ACTION, f"Action Type ID {action_type}")
    if _uid(requested_instance) != WELL_KNOWN_INSTANCE:
        return Refusal(NO_SUCH_OBJECT_INSTANCE, f"Requested SOP Instance UID {requested_instance}")
    if info is None:
        return Refusal(INVALID_ARGUMENT_VALUE, "no Action Information")
    try:
        transaction = _uid(info.get("TransactionUID"))
        items = info.get("ReferencedSOPSequence") or []
        references = tuple((_uid(item.get("ReferencedSOPClassUID")), _uid(item.get("ReferencedSOPInstanceUID")))
                           for item in items)
    except Exception as e:           # pydicom decodes lazily: anything malformed surfaces here
        return Refusal(INVALID_ARGUMENT_VALUE, f"unreadable Action Information: {e}"[:64])
    if not is_uid(transaction):
        return Refusal(INVALID_ARGUMENT_VALUE, "Transaction UID missing or not a UID")
    if not references:
        return Refusal(INVALID_ARGUMENT_VALUE, "empty Referenced SOP Sequence")
    return Request(transaction, references)


def decide(references: tuple[Reference, ...], stored: dict[str, str],
           on_disk: set[str]) -> tuple[list[Reference], list[tuple[str, str, int]]]:
    """Committed references, and failed ones with their Failure Reason. ``stored``: SOP Instance
    UID -> SOP Class UID of the indexed instances; ``on_disk``: those whose file is synced."""
    committed, failed = [], []
    for sop_class, sop_uid in references:
        if not is_uid(sop_uid) or sop_uid not in stored:
            failed.append((sop_class, sop_uid, NO_SUCH_OBJECT_INSTANCE))
        elif stored[sop_uid] != sop_class:
            failed.append((sop_class, sop_uid, CLASS_INSTANCE_CONFLICT))
        elif sop_uid not in on_disk:
            failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
        else:
            committed.append((sop_class, sop_uid))
    return committed, failed


def _item(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item


def event_report(transaction_uid: str, committed: list[Reference], failed: list[tuple[str, str, int]],
                 retrieve_ae: str) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information (J.3.3, Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.RetrieveAETitle = retrieve_ae
        ds.ReferencedSOPSequence = [_item(c, u) for c, u in committed]
    if failed:
        items = []
        for sop_class, sop_uid, reason in failed:
            item = _item(sop_class, sop_uid)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return (FAILURES_EXIST if failed else ALL_COMMITTED), ds


class StorageCommitment:
    """The N-ACTION handler, and one thread per request being decided and reported (at most
    ``max_pending_commitments``)."""

    def __init__(self, index, content: FileStore, settings: ImagingSourceSettings):
        self.index, self.content = index, content
        self.ae_title = settings.ae_title
        self.destinations = settings.destinations
        self.timeout = settings.network_timeout
        self.attempts, self.retry_seconds = settings.commitment_attempts, settings.commitment_retry_seconds
        self._slots = threading.BoundedSemaphore(settings.max_pending_commitments)
        self._message_ids = itertools.count()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def on_action(self, event):
        """EVT_N_ACTION: answer at once; the report follows from a thread of its own."""
        try:
            info = event.action_information
        except Exception:
            info = None
        got = read_request(event.action_type, event.request.RequestedSOPInstanceUID, info)
        calling = event.assoc.requestor.ae_title.strip()
        if isinstance(got, Refusal):
            log.warning("Storage Commitment request refused", extra={"calling_ae": calling, "reason": got.reason})
            return got.status, None
        if not self._slots.acquire(blocking=False):
            log.warning("Storage Commitment request refused: too many at once", extra={"calling_ae": calling})
            return RESOURCE_LIMITATION, None
        answered = _when_answered(event.assoc, event.request.MessageID)
        threading.Thread(target=self._commit, args=(got, event.assoc, calling, answered),
                         name="storage-commitment", daemon=True).start()
        return 0x0000, None

    def _commit(self, request: Request, assoc, calling: str, answered: threading.Event) -> None:
        try:
            event_type, report = event_report(request.transaction_uid, *self._decide(request.references),
                                              self.ae_title)
            if not answered.wait(self.timeout):
                log.warning("Storage Commitment request never answered: no report",
                            extra={"calling_ae": calling, "transaction_uid": request.transaction_uid})
                return
            failed = len(report.get("FailedSOPSequence") or [])
            how = self._report(assoc, calling, event_type, report)
            log.info("Storage Commitment reported" if how else "Storage Commitment report not delivered",
                     extra={"calling_ae": calling, "transaction_uid": request.transaction_uid, "on": how,
                            "committed": len(request.references) - failed, "failed": failed})
        except Exception:
            log.exception("Storage Commitment failed", extra={"transaction_uid": request.transaction_uid})
        finally:
            self._slots.release()

    def _decide(self, references: tuple[Reference, ...]):
        """Which references are committed: indexed (once the indexer has caught up), with the same
        SOP Class, their files synced and the index's commits flushed."""
        uids = [u for _, u in references if is_uid(u)]
        try:
            rows = [row for i in range(0, len(uids), LOOKUP_CHUNK)
                    for row in self.index.instances(sop_uids=uids[i:i + LOOKUP_CHUNK])]
            on_disk_sha1 = self.content.sync({row["sha1"] for row in rows})
            if not self.index.wait_durable(self.timeout):
                raise TimeoutError("PostgreSQL did not flush its WAL in time")
        except Exception as e:
            log.error("Storage Commitment lookup failed", extra={"error": str(e)})
            return [], [(c, u, PROCESSING_FAILURE) for c, u in references]
        stored = {row["sop_uid"]: row["sop_class"] for row in rows}
        on_disk = {row["sop_uid"] for row in rows if row["sha1"] in on_disk_sha1}
        return decide(references, stored, on_disk)

    def _report(self, assoc, calling: str, event_type: int, report: Dataset) -> str:
        """Send the N-EVENT-REPORT; on which association it was taken ("same", "new"), or ""."""
        if assoc.is_established and not assoc.acse.is_release_requested():
            if report_on(assoc, event_type, report, next(self._message_ids) % 0xFFFF + 1, self.timeout) == 0x0000:
                return "same"
        where = self.destinations.get(calling)
        if where is None:
            log.error("Storage Commitment report has nowhere to go: no address for the calling AE "
                      "in [imaging_source] move_destinations", extra={"calling_ae": calling})
            return ""
        for attempt in range(self.attempts):
            if attempt and self._stop.wait(self.retry_seconds):
                break
            if self._report_anew(where, calling, event_type, report):
                return "new"
        return ""

    def _report_anew(self, where: tuple[str, int], calling: str, event_type: int, report: Dataset) -> bool:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        context = build_context(STORAGE_COMMITMENT, list(UNCOMPRESSED))
        assoc = ae.associate(where[0], where[1], [context], ae_title=calling,
                             ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
                             evt_handlers=dicom_net.TUNED, tls_args=secure_node.dicom_tls_args(where[0]))
        if not assoc.is_established:
            log.warning("Storage Commitment report: association refused or failed",
                        extra={"calling_ae": calling, "at": f"{where[0]}:{where[1]}"})
            return False
        try:
            status, _ = assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
            return getattr(status, "Status", None) == 0x0000
        finally:
            if assoc.is_established:
                assoc.release()


def _when_answered(assoc, message_id: int) -> threading.Event:
    """Set once the N-ACTION response to ``message_id`` is queued on ``assoc``: the report must not
    overtake it. The association's DIMSE send is wrapped until then (the reactor sends the response
    right after the handler returns, before it serves another message)."""
    answered = threading.Event()
    dimse = assoc.dimse
    send = dimse.send_msg

    def send_msg(primitive, context_id):
        try:
            send(primitive, context_id)
        finally:
            if isinstance(primitive, N_ACTION) and primitive.MessageIDBeingRespondedTo == message_id:
                dimse.send_msg = send
                if primitive.Status == 0x0000:
                    answered.set()
    dimse.send_msg = send_msg
    return answered


def report_on(assoc, event_type: int, report: Dataset, message_id: int, timeout: float) -> int | None:
    """Send the N-EVENT-REPORT on the modality's own association; the status it answered, or None.

    pynetdicom's ``send_n_event_report`` takes the next message to arrive as the answer, so a
    C-STORE or another N-ACTION the modality sends meanwhile would end the association. Here the
    answer is picked out by its Message ID as it arrives, and the reactor goes on serving the rest."""
    context = next((cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STORAGE_COMMITMENT), None)
    if context is None:
        return None
    syntax = context.transfer_syntax[0]
    request = N_EVENT_REPORT()
    request.MessageID, request.EventTypeID = message_id, event_type
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
    request.EventInformation = BytesIO(encode(report, syntax.is_implicit_VR, syntax.is_little_endian,
                                              syntax.is_deflated))
    with assoc.__dict__.setdefault("_commitment_reports", threading.Lock()):    # one at a time per association
        return _send_and_pick_answer(assoc, request, context.context_id, timeout)


def _send_and_pick_answer(assoc, request: N_EVENT_REPORT, context_id: int, timeout: float) -> int | None:
    answered, answer = threading.Event(), []
    arrived = assoc.dimse.msg_queue
    put = arrived.put
    message_id = request.MessageID

    def pick_out(item, *args, **kwargs):
        message = item[1]
        if isinstance(message, N_EVENT_REPORT) and message.MessageIDBeingRespondedTo == message_id:
            answer.append(message)
            answered.set()
        else:
            put(item, *args, **kwargs)
    arrived.put = pick_out
    try:
        # The reactor is held while the request goes out, as pynetdicom's own send_* calls hold it.
        deadline = time.monotonic() + timeout
        assoc._reactor_checkpoint.clear()
        try:
            while not assoc._is_paused:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.0005)
            if not assoc.is_established:
                return None
            assoc.dimse.send_msg(request, context_id)
        finally:
            assoc._reactor_checkpoint.set()
        while not answered.wait(0.05):          # an association released meanwhile will not answer
            if not assoc.is_established or time.monotonic() > deadline:
                return None
        return answer[0].Status
    finally:
        arrived.put = put
