"""The DICOM door: C-ECHO, C-STORE (intake), Study Root C-FIND, C-MOVE and C-GET, and Storage
Commitment (``commitment``) over pynetdicom.

Only translation lives here: statuses and datasets in, calls to intake/query/store, statuses and
datasets out. Associations are tuned by ``affinity_domain.dicom_net`` (TCP_NODELAY, a reactor that
waits instead of polling). Received datasets are kept undecoded: in memory by default, or spooled
to files by pynetdicom as they arrive (``spool_received``; bounded memory, but pynetdicom's
per-instance temporary file and meta writing halve its C-STORE rate). Instances sent by
C-MOVE/C-GET go out as their stored bytes (``dicom_net.StoredInstance``), decoded only when the
destination did not accept their transfer syntax.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.status import Status
from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove, Verification)

from . import query
from .commitment import STORAGE_COMMITMENT, StorageCommitment
from affinity_domain import access, audit, audit_codes, dicom_listener, dicom_net, secure_node
from affinity_domain.audit import dicom as audit_dicom, events as audit_events
from affinity_domain.dicom_status import IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, NOT_AUTHORIZED, UNABLE_TO_PROCESS
from affinity_domain.content import FileStore
from affinity_domain.transfer_syntax import COMPRESSED, UNCOMPRESSED
from .indexer import NotIndexed
from .intake import Intake
from .settings import ImagingSourceSettings
from .store import Index

log = logging.getLogger("xdsi.imaging_source.dimse")

_config.LOG_HANDLER_LEVEL = "none"
# Received values are indexed as they are; pydicom's per-value checks (a regex per UID read) only
# warn, so the server skips them.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
dicom_net.install()

TRANSFER_SYNTAXES = [*UNCOMPRESSED, uid.DeflatedExplicitVRLittleEndian,
                     uid.ExplicitVRBigEndian,            # retired, still sent by old modalities
                     *COMPRESSED]


class DicomDoor:
    def __init__(self, index: Index, content: FileStore, intake: Intake, settings: ImagingSourceSettings):
        self.index, self.content, self.intake = index, content, intake
        self.ae_title = settings.ae_title
        self.destinations = settings.destinations
        self.max_results = settings.max_query_results
        self.spooled = settings.spool_received
        _config.STORE_RECV_CHUNKED_DATASET = self.spooled
        if self.spooled:
            # pynetdicom spools with NamedTemporaryFile in the default temp dir: point it at the
            # store's spool so that keeping an instance is a rename.
            tempfile.tempdir = str(content.spool_dir)
        self.limits = settings.dicom_limits
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = settings.max_pdu_bytes
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = settings.network_timeout
        for cx in AllStoragePresentationContexts:
            # scu_role/scp_role: accept the role selection that a C-GET requestor proposes.
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for sop in (Verification, StudyRootQueryRetrieveInformationModelFind,
                    StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet):
            ae.add_supported_context(sop, list(UNCOMPRESSED))
        # Storage Commitment: the requestor is its SCU (a role selection proposing that is accepted).
        ae.add_supported_context(STORAGE_COMMITMENT, list(UNCOMPRESSED), scu_role=True, scp_role=False)
        self.commitment = StorageCommitment(index, content, settings)
        self.ae = ae
        self.admit = access.dicom_gate("imaging-source", self.ae_title, settings.dicom_peers,
                                       settings.loopback_grant, NOT_AUTHORIZED, log)

    def start(self, host: str, port: int):
        handlers = dicom_net.TUNED + [(evt.EVT_C_ECHO, lambda e: Status.SUCCESS), (evt.EVT_C_STORE, self.on_store),
                              (evt.EVT_C_FIND, self.on_find), (evt.EVT_C_MOVE, self.on_move),
                              (evt.EVT_C_GET, self.on_get), (evt.EVT_N_ACTION, self.commitment.on_action),
                              (evt.EVT_CONN_CLOSE, audit_dicom.association_end)]
        if self.spooled:
            handlers.append((evt.EVT_CONN_CLOSE, _drop_partial_spool))
        return dicom_listener.start_server(self.ae, (host, port), handlers, self.limits, admit=self.admit)

    # ------------------------------------------------------------ C-STORE

    def on_store(self, event):
        calling = event.assoc.requestor.ae_title
        received = event.dataset_path if self.spooled else dicom_net.received_part10(event)
        may_reject = access.may(event.assoc, "reject")
        may_replace = may_reject or access.may(event.assoc, "replace")
        seen: list = []
        status, comment = self.intake.accept(received, calling, event.request.AffectedSOPInstanceUID or "",
                                             may_reject, may_replace, seen)
        if status == NOT_AUTHORIZED:
            log.warning("C-STORE refused: not authorized", extra={"calling_ae": calling, "reason": comment})
            audit.record(access.refusal_alert(reporter=self.ae_title, who=calling, host=event.assoc.requestor.address,
                                              description=f"imaging-source: {comment}"))
        if seen:        # recorded per association and patient when the association ends
            got = seen[0]
            audit_dicom.of(event.assoc).add(got.identity.cx, got.study_uid, got.sop_class, got.sop_uid,
                                            status == Status.SUCCESS)
        if status == Status.SUCCESS:
            return Status.SUCCESS
        ds = Dataset()
        ds.Status = status
        if comment:
            ds.ErrorComment = comment[:64]
        return ds

    # ------------------------------------------------------------ C-FIND

    def on_find(self, event):
        outcome = [audit_codes.SUCCESS, None]
        try:
            yield from self._find(event, outcome)
        finally:
            if audit.recording():
                audit.record(audit_dicom.query(event, _patients_asked(event), *outcome))

    def _find(self, event, outcome: list):
        try:
            identifier = event.identifier
            level, conditions = query.plan(identifier)
        except (query.QueryError, ValueError, AttributeError) as e:
            log.warning("C-FIND refused", extra={"reason": str(e)})
            outcome[:] = [audit_codes.SERIOUS_FAILURE, str(e)]
            yield _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(e)), None
            return
        try:
            rows = self.index.find(level, conditions, self.max_results)
        except NotIndexed as e:
            log.error("C-FIND refused", extra={"reason": str(e)})
            outcome[:] = [audit_codes.SERIOUS_FAILURE, "not indexed yet"]
            yield _failure(UNABLE_TO_PROCESS, "instances received are not all indexed yet"), None
            return
        except Exception:
            log.exception("C-FIND failed")
            outcome[:] = [audit_codes.SERIOUS_FAILURE, "query failed"]
            yield _failure(UNABLE_TO_PROCESS, "query failed"), None
            return
        for row in rows:
            if event.is_cancelled:
                outcome[:] = [audit_codes.MINOR_FAILURE, "cancelled"]
                yield Status.CANCEL, None
                return
            yield Status.PENDING, query.response(identifier, row, self.ae_title)

    # ------------------------------------------------------------ C-MOVE / C-GET

    def _matches(self, identifier: Dataset) -> list[dict]:
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in query.LEVELS:
            raise query.QueryError(f"Query/Retrieve Level {level!r}")

        def uids(keyword):
            value = identifier.get(keyword)
            if value in (None, ""):
                return []
            return [str(v) for v in (value if isinstance(value, (list, tuple)) or type(value).__name__ ==
                                     "MultiValue" else [value])]
        study, series, sop = uids("StudyInstanceUID"), uids("SeriesInstanceUID"), uids("SOPInstanceUID")
        if not (study or series or sop):
            raise query.QueryError("no unique key to retrieve by")
        return self.index.instances(study, series if level != "STUDY" else [], sop if level == "IMAGE" else [])

    def _datasets(self, rows: list[dict], event):
        for row in rows:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            path = self.content.path(row["sha1"])
            if not path.exists():
                log.error("indexed instance has no bytes", extra={"sop_uid": row["sop_uid"]})
                yield Status.PENDING, Dataset()       # counted as a failed sub-operation
                continue
            yield Status.PENDING, dicom_net.StoredInstance(path, row["sop_class"], row["sop_uid"],
                                                           row["transfer_syntax"])

    def on_move(self, event):
        destination = self.destinations.get((event.move_destination or "").strip())
        if destination is None:
            log.warning("C-MOVE to unknown destination", extra={"destination": event.move_destination})
            yield None, None            # pynetdicom answers Status.MOVE_DESTINATION_UNKNOWN
            return
        try:
            rows = self._matches(event.identifier)
        except (query.QueryError, ValueError, AttributeError, NotIndexed) as e:
            yield destination[0], destination[1], {"contexts": [build_context(Verification)],
                                                   "evt_handlers": dicom_net.TUNED,
                                                   "tls_args": secure_node.dicom_tls_args(destination[0])}
            yield 1                     # pynetdicom reports a failure yielded inside the sub-operations
            yield _failure(_refusal(e), str(e)), None
            return
        contexts = _contexts_for(rows)
        yield destination[0], destination[1], {"contexts": contexts, "evt_handlers": dicom_net.TUNED,
                                               "tls_args": secure_node.dicom_tls_args(destination[0])}
        yield len(rows)
        acc = event.assoc.acceptor
        self._transfer_audit(rows, event, audit_dicom.ae(acc.ae_title, acc.address, sender=True, requestor=False),
                             audit_dicom.ae(event.move_destination.strip(), destination[0], sender=False,
                                            requestor=False), moved=True)
        yield from self._datasets(rows, event)
        self._transfer_audit(rows, event, None, None, moved=True, done=True)

    def on_get(self, event):
        try:
            rows = self._matches(event.identifier)
        except (query.QueryError, ValueError, AttributeError, NotIndexed) as e:
            yield 1
            yield _failure(_refusal(e), str(e)), None
            return
        yield len(rows)
        self._transfer_audit(rows, event, None, None, moved=False)
        yield from self._datasets(rows, event)
        self._transfer_audit(rows, event, None, None, moved=False, done=True)

    def _transfer_audit(self, rows: list[dict], event, sender, receiver, moved: bool, done: bool = False) -> None:
        """Begin Transferring before a C-MOVE/C-GET sends, DICOM Instances Transferred (R) after: one record
        per patient. A C-MOVE's requestor is a third participant; a C-GET's receives."""
        if not audit.recording() or not rows:
            return
        req, acc = event.assoc.requestor, event.assoc.acceptor
        if not done:
            asker = audit_dicom.ae(req.ae_title, req.address, sender=False, requestor=True)
            sender = sender or audit_dicom.ae(acc.ae_title, acc.address, sender=True, requestor=False)
            receiver = receiver or asker
            event.assoc._xdsi_retrieve = (sender, receiver, (asker,) if moved else ())
        sender, receiver, others = getattr(event.assoc, "_xdsi_retrieve")
        by_patient: dict[str, list] = {}
        for r in rows:
            by_patient.setdefault(f"{r['patient_id']}^^^&{r['issuer']}&ISO", []).append(
                (r["study_uid"], r["sop_class"], r["sop_uid"]))
        cancelled = done and event.is_cancelled
        for patient, items in by_patient.items():
            studies = audit_dicom.studies_of(items)
            if not done:
                audit.record(audit_events.begin_transferring(sender=sender, receiver=receiver, studies=studies,
                                                             patient=patient, others=others))
            else:
                audit.record(audit_events.instances_transferred(
                    action=audit_codes.READ, sender=sender, receiver=receiver, studies=studies, patient=patient,
                    others=others, outcome=audit_codes.MINOR_FAILURE if cancelled else audit_codes.SUCCESS,
                    description="cancelled" if cancelled else None))


def _patients_asked(event) -> list[str]:
    try:
        identifier = event.identifier
        pid = str(identifier.get("PatientID", "") or "").strip()
        issuer = str(identifier.get("IssuerOfPatientID", "") or "").strip()
    except Exception:       # an identifier that does not decode: the query names no patient
        return []
    if not pid or "*" in pid or "?" in pid:
        return []
    return [f"{pid}^^^&{issuer}&ISO" if issuer else pid]


def _drop_partial_spool(event) -> None:
    """A connection that closed mid C-STORE leaves pynetdicom's half-written spool file: delete it."""
    message = event.assoc.dimse.message
    spool = getattr(message, "_data_set_file", None)
    if spool is not None:
        spool.close()
        Path(spool.name).unlink(missing_ok=True)


def _refusal(e: Exception) -> int:
    return UNABLE_TO_PROCESS if isinstance(e, NotIndexed) else IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _contexts_for(rows: list[dict]) -> list:
    """One presentation context per SOP class, offering each stored transfer syntax (and the
    uncompressed ones, to which pynetdicom can convert)."""
    by_class: dict[str, list[str]] = {}
    for r in rows:
        syntaxes = by_class.setdefault(r["sop_class"], [])
        if r["transfer_syntax"] not in syntaxes:
            syntaxes.append(r["transfer_syntax"])
    contexts = []
    for sop_class, syntaxes in list(by_class.items())[:128]:
        contexts.append(build_context(sop_class, syntaxes + [t for t in UNCOMPRESSED if t not in syntaxes]))
    return contexts
