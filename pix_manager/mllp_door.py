"""The PIX manager's MLLP door: ITI-8 (ADT) and ITI-9 (QBP^Q23) on one listener, one answer each."""
from __future__ import annotations

import logging

from affinity_domain import hl7
from affinity_domain.hl7 import Hl7Error

from . import messages, query
from .index import PatientIndex

log = logging.getLogger("xdsi.pix")


def handler(index: PatientIndex, facility_authorities: dict[str, str]):
    def handle(raw: bytes) -> bytes:
        kind = hl7.msh_fields(raw)["type"].split("^")[0]
        try:
            if kind == "QBP":
                q = query.read(raw)
                known, ids = index.cross_references(q.person)
                return query.answer(q, known, ids)
            done = index.feed(messages.read_feed(raw, facility_authorities))
            # What was done, without the ids (the audit trail names the patients): "linked", "review", "new", ...
            log.info("feed", extra={"applied": sorted({part.split(" ", 1)[0] for part in done.split("; ")})})
            return hl7.ack(raw, "AA", application="XDSI_PIX")
        except Hl7Error as e:
            log.warning("rejected", extra={"reason": e.text, "code": e.code})
            return hl7.ack(raw, e.ack, e, application="XDSI_PIX")
        except Exception:
            log.exception("message failed")
            return hl7.ack(raw, "AE", Hl7Error("the PIX manager could not process the message", code="207"),
                           application="XDSI_PIX")
    return handle
