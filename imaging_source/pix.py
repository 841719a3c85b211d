"""ITI-9 PIX Query as a PIX Consumer: QBP^Q23 out, RSP^K23 in (the message text is pure; ``ask``
sends it over MLLP). The source never publishes under a guessed id: anything but an
affinity-domain identifier in the answer means "not yet"."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from affinity_domain import mllp
from affinity_domain.hl7 import Cx, decode

_counter = itertools.count(1)


@dataclass(frozen=True)
class Answer:
    patient_id: str = ""     # the affinity-domain CX, when the PIX manager knows one
    reason: str = ""         # why there is none


def query(local: Cx, domain_oid: str, control_id: str = "", sending_app: str = "XDSI_SOURCE") -> bytes:
    control_id = control_id or f"SRC{time.time_ns()}{next(_counter)}"
    segments = [
        f"MSH|^~\\&|{sending_app}|XDSI|PIX_MANAGER|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
        f"{control_id}|P|2.5",
        f"QPD|IHE PIX Query|{control_id}|{local.id}^^^{local.namespace}&{local.authority}&ISO|^^^&{domain_oid}&ISO",
        "RCP|I",
    ]
    return ("\r".join(segments) + "\r").encode()


def read_answer(raw: bytes, domain_oid: str) -> Answer:
    fields = {}
    for segment in decode(raw).split("\r"):
        parts = segment.split("|")
        if parts[0] in ("MSA", "QAK", "PID", "ERR") and parts[0] not in fields:
            fields[parts[0]] = parts
    msa = fields.get("MSA", [])
    if len(msa) < 2:
        return Answer(reason="the answer has no MSA segment")
    if msa[1] not in ("AA", "CA"):
        err = "|".join(fields.get("ERR", [])[1:])
        return Answer(reason=f"PIX manager answered {msa[1]} {err}".strip())
    qak = fields.get("QAK", [])
    if len(qak) > 2 and qak[2] != "OK":
        return Answer(reason=f"PIX manager knows no identifier in {domain_oid} ({qak[2]})")
    pid = fields.get("PID", [])
    for rep in (pid[3].split("~") if len(pid) > 3 else []):
        cx = Cx.parse(rep)
        if cx.id and cx.authority == domain_oid:
            return Answer(patient_id=f"{cx.id}^^^&{domain_oid}&ISO")
    return Answer(reason=f"no identifier in {domain_oid} in the answer")


def ask(host: str, port: int, local: Cx, domain_oid: str, timeout: float = 10.0) -> Answer:
    """Raises OSError/ConnectionError when the PIX manager cannot be reached."""
    return read_answer(mllp.send(host, port, query(local, domain_oid), timeout), domain_oid)
