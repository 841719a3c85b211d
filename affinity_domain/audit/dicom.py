"""Audit records of DICOM exchanges (PS3.15 A.5.3): who the two AEs are, and the instances an association moved,
kept per association and recorded once when it ends (one DICOM Instances Transferred per patient, as A.5.3.3
asks: a record per instance would cost more than the C-STORE itself).

Sans-IO but for ``association_end``, the pynetdicom event handler that hands the records to ``audit.record``."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable

from .. import audit_codes as c
from . import events
from .message import AuditMessage, Participant, Study

_ATTR = "_xdsi_transfers"


def ae(title: str, host: str | None, *, sender: bool, requestor: bool) -> Participant:
    """An AE as ActiveParticipant: UserID its AE title (AlternativeUserID ``AETITLES=``, as A.5.3 suggests)."""
    build = events.source if sender else events.destination
    title = (title or "").strip() or "?"
    return build(title, host=host or None, alt=f"AETITLES={title}", requestor=requestor)


def studies_of(items: Iterable[tuple[str, str, str]]) -> list[Study]:
    """(study uid, SOP class uid, SOP instance uid) triples as Studies, each with its classes' instances."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for study, sop_class, sop in items:
        grouped.setdefault(study, {}).setdefault(sop_class, []).append(sop)
    return [Study(uid, {k: tuple(v) for k, v in classes.items()}) for uid, classes in grouped.items()]


@dataclass
class Transfers:
    """What one association moved, by patient: (study, class, instance) triples and whether any failed."""
    by_patient: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, patient: str, study: str, sop_class: str, sop: str, ok: bool = True) -> None:
        with self.lock:
            self.by_patient.setdefault(patient or "", []).append((study, sop_class, sop))
            if not ok:
                self.failed[patient or ""] = self.failed.get(patient or "", 0) + 1

    def messages(self, action: str, sender: Participant, receiver: Participant,
                 others: Iterable[Participant] = ()) -> list[AuditMessage]:
        with self.lock:
            groups, failed = dict(self.by_patient), dict(self.failed)
            self.by_patient, self.failed = {}, {}
        out = []
        for patient, items in groups.items():
            bad = failed.get(patient, 0)
            outcome = c.SUCCESS if not bad else (c.MINOR_FAILURE if bad < len(items) else c.SERIOUS_FAILURE)
            out.append(events.instances_transferred(
                action=action, sender=sender, receiver=receiver, studies=studies_of(items), patient=patient or None,
                others=tuple(others), outcome=outcome,
                description=f"{bad} of {len(items)} instances failed" if bad else None))
        return out


def of(assoc) -> Transfers:
    """The association's Transfers (made on first use)."""
    transfers = getattr(assoc, _ATTR, None)
    if transfers is None:
        transfers = Transfers()
        setattr(assoc, _ATTR, transfers)
    return transfers


def association_end(event) -> None:
    """EVT_CONN_CLOSE handler of a Storage SCP: the instances it received, as the receiver records them (C)."""
    from . import record, recording
    transfers = getattr(event.assoc, _ATTR, None)
    if transfers is None or not recording():
        return
    req, acc = event.assoc.requestor, event.assoc.acceptor
    sender = ae(req.ae_title, req.address, sender=True, requestor=True)
    receiver = ae(acc.ae_title, acc.address, sender=False, requestor=False)
    for message in transfers.messages(c.CREATE, sender, receiver):
        record(message)


def query(event, patients: Iterable[str], outcome: int = c.SUCCESS, description: str | None = None
          ) -> AuditMessage:
    """A C-FIND as its SCP records it: the request identifier as it came, in the context's transfer syntax."""
    req, acc = event.assoc.requestor, event.assoc.acceptor
    identifier = event.request.Identifier
    raw = identifier.getvalue() if identifier is not None else b""
    return events.dicom_query(
        requestor=Participant(req.ae_title.strip(), True, (c.SOURCE_ROLE,), f"AETITLES={req.ae_title.strip()}",
                              host=req.address),
        responder=Participant(acc.ae_title.strip(), False, (c.DESTINATION_ROLE,),
                              f"AETITLES={acc.ae_title.strip()}", host=acc.address),
        sop_class_uid=str(event.request.AffectedSOPClassUID or ""), identifier=raw,
        transfer_syntax=str(event.context.transfer_syntax), patients=patients, outcome=outcome,
        description=description)
