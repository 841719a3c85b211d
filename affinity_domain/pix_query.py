"""ITI-9 PIX Query as a PIX Consumer, shared by the imaging source and the consumer: the QBP^Q23
text and the reading of the RSP^K23 are pure; ``ask`` sends one over MLLP. Anything but an
affinity-domain identifier in the answer means "none yet": nobody acts under a guessed id."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from . import hl7
from .audit import hl7v2 as audit_hl7
from .hl7 import Cx, Hl7Error


@dataclass(frozen=True)
class Answer:
    patient_id: str = ""     # the affinity-domain CX, when the PIX manager knows one
    reason: str = ""         # why there is none
    known: bool = False      # the PIX manager accepted the query: it knows the local id


def query(local: Cx, domain_oid: str, sending_app: str, control_id: str = "") -> bytes:
    """QBP^Q23 for ``local``'s identifier in ``domain_oid``; the control id is also the query tag.
    A ``Cx`` holds its components as HL7 text (``Cx.parse`` of a field keeps its escapes), so
    ``str(local)`` goes into QPD-3 as it is."""
    control_id = control_id or f"Q{uuid.uuid4().hex[:16]}"
    segments = [
        f"MSH|^~\\&|{sending_app}|XDSI|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
        f"{control_id}|P|2.5",
        f"QPD|IHE PIX Query|{control_id}|{local}|^^^&{domain_oid}&ISO",
        "RCP|I",
    ]
    return ("\r".join(segments) + "\r").encode()


def read_answer(raw: bytes, domain_oid: str) -> Answer:
    try:
        segments = hl7.read(raw)
    except Hl7Error as e:
        return Answer(reason=f"the answer is not HL7: {e}")
    first = lambda name: segments.get(name, [None])[0]  # noqa: E731
    ack_code = hl7.field(first("MSA"), 1)
    if not ack_code:
        return Answer(reason="the answer has no MSA segment")
    if ack_code not in ("AA", "CA"):
        err = first("ERR")
        return Answer(reason=f"PIX manager answered {ack_code} {'|'.join(err[1:]) if err else ''}".strip())
    status = hl7.field(first("QAK"), 2)
    if status and status != "OK":
        return Answer(reason=f"PIX manager knows no identifier in {domain_oid} ({status})", known=True)
    pid = first("PID")
    for cx in hl7.identifiers(pid[3] if pid is not None and len(pid) > 3 else ""):
        if cx.id and cx.authority == domain_oid:
            return Answer(patient_id=f"{cx.id}^^^&{domain_oid}&ISO", known=True)
    return Answer(reason=f"no identifier in {domain_oid} in the answer", known=True)


def ask(host: str, port: int, local: Cx, domain_oid: str, sending_app: str, timeout: float = 10.0) -> Answer:
    """Raises OSError when the PIX manager cannot be reached or does not answer within ``timeout``."""
    return read_answer(audit_hl7.send(host, port, query(local, domain_oid, sending_app), timeout), domain_oid)
