"""The audit record of one HL7 v2 exchange over MLLP (ITI-8 Patient Identity Feed, ITI-9 PIX Query, ITI-10 PIX
Update Notification), as either end records it: a pure function of the message, its answer and the two nodes.

IHE's participants (ITI TF-2 3.8.5.1, 3.9.5.1, 3.10.5.1): the sender is the Source, UserID MSH-3|MSH-4, with its
IP address; the receiver the Destination, UserID MSH-5|MSH-6. Patients are PID-3's identifiers (and MRG-1's of a
merge) with MSH-10; an ITI-9 query object is the QPD segment, and its patients the id asked about and those
answered."""
from __future__ import annotations

import logging
import socket

from .. import audit_codes as c, hl7
from ..hl7 import Hl7Error
from . import events
from .message import AuditMessage

log = logging.getLogger("xdsi.audit")
_CREATE = {"A01", "A04", "A05"}
_LOCAL = socket.gethostname()


def _ids(segment: list[str] | None, n: int) -> list[str]:
    return [str(cx) for cx in hl7.identifiers(hl7.field(segment, n)) if cx.id]


def outcome_of_ack(reply: bytes | None) -> tuple[int, str | None]:
    """AA/CA 0; AE/CE 4 (the message was in error, the receiver is fine); AR/CR, no answer: 8."""
    if reply is None:
        return c.SERIOUS_FAILURE, "no answer"
    try:
        segments = hl7.read(reply)
    except Hl7Error as e:
        return c.SERIOUS_FAILURE, f"the answer is not HL7: {e}"
    code = hl7.field(segments.get("MSA", [None])[0], 1)
    if code in ("AA", "CA"):
        return c.SUCCESS, None
    err = segments.get("ERR", [None])[0]
    text = f"{code} {'|'.join(err[1:]) if err else ''}".strip() or "no MSA"
    return (c.MINOR_FAILURE if code in ("AE", "CE") else c.SERIOUS_FAILURE), text[:200]


def record(raw: bytes, reply: bytes | None, *, sender_host: str | None, receiver_host: str | None,
           description: str | None = None) -> AuditMessage | None:
    """The record of the exchange ``raw`` → ``reply`` (None: not an ITI-8/9/10 message, or not HL7). Both ends
    record the same content; ``sender_host``/``receiver_host`` are the nodes' addresses as the recorder knows
    them."""
    try:
        segments = hl7.read(raw)
    except Hl7Error:
        return None
    msh = hl7.msh_fields(raw)
    kind = msh["type"].split("^")
    event = kind[1] if len(kind) > 1 else ""
    control = msh["control_id"]
    sender = events.source(events.hl7_application(msh["sending_app"], msh["sending_facility"]), host=sender_host)
    receiver = events.destination(events.hl7_application(msh["receiving_app"], msh["receiving_facility"]),
                                  host=receiver_host)
    code, why = outcome_of_ack(reply)
    why = description or why
    first = lambda name: segments.get(name, [None])[0]  # noqa: E731
    if kind[0] == "QBP":
        qpd = first("QPD")
        answered = []
        if reply is not None:
            try:
                answered = _ids(hl7.read(reply).get("PID", [None])[0], 3)
            except Hl7Error:
                pass
        query = ("|".join(qpd)).encode() if qpd else b""
        return events.iti9_pix_query(consumer=sender, manager=receiver, query=query, control_id=control,
                                     patients=[*_ids(qpd, 3), *answered], outcome=code, description=why)
    if kind[0] != "ADT":
        return None
    patients = _ids(first("PID"), 3) + _ids(first("MRG"), 1)
    if event == "A31":
        return events.iti10_pix_update_notification(manager=sender, consumer=receiver, patients=patients,
                                                     control_id=control, outcome=code, description=why)
    return events.iti8_patient_identity_feed(sender=sender, receiver=receiver, patients=patients,
                                             control_id=control, action=c.CREATE if event in _CREATE else c.UPDATE,
                                             outcome=code, description=why)


def audited(handler, host: str | None = None):
    """An MLLP handler whose every exchange leaves the receiver's record (``host``: this listener's address)."""
    from . import record as keep, recording
    from ..mllp import peer

    def handle(raw: bytes) -> bytes:
        reply = handler(raw)
        if recording():
            _keep(keep, raw, reply, peer() or None, host)
        return reply
    return handle


def send(host: str, port: int, message: bytes, timeout: float = 10.0) -> bytes:
    """``mllp.send``, leaving the sender's record of the exchange (a failure to reach the peer included)."""
    from . import record as keep, recording
    from .. import mllp
    reply = None
    try:
        reply = mllp.send(host, port, message, timeout)
        return reply
    finally:
        if recording():
            _keep(keep, message, reply, _LOCAL, host)


def _keep(keep, raw: bytes, reply: bytes | None, sender_host: str | None, receiver_host: str | None) -> None:
    try:
        message = record(raw, reply, sender_host=sender_host, receiver_host=receiver_host)
    except Exception:       # a message we cannot describe must not cost its answer
        log.exception("audit record not made")
        return
    if message is not None:
        keep(message)
