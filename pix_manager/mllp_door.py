"""The PIX manager's MLLP door: ITI-8 (ADT) and ITI-9 (QBP^Q23) on one listener, one answer each."""
from __future__ import annotations

import logging

from affinity_domain import access, hl7, mllp
from affinity_domain.hl7 import Hl7Error

from . import messages, query
from .index import PatientIndex

log = logging.getLogger("xdsi.pix")


def handler(index: PatientIndex, facility_authorities: dict[str, str], senders=(), loopback_senders: bool = True):
    """``senders`` (``access.Hl7Sender``): who may query, and send identities of which authorities."""
    def refused(msh: dict, authorities) -> None:
        host = mllp.peer()
        reason = access.hl7_refusal(senders, loopback_senders, msh["sending_app"], msh["sending_facility"], host,
                                    authorities)
        if reason:
            raise access.hl7_refused("pix", msh["sending_app"], msh["sending_facility"], host, reason, log)

    def handle(raw: bytes) -> bytes:
        msh = hl7.msh_fields(raw)
        kind = msh["type"].split("^")[0]
        try:
            if kind == "QBP":
                refused(msh, ())
                q = query.read(raw, index.s.authorities)
                known, ids = index.cross_references(q.person)
                return query.answer(q, known, ids)
            message = messages.read_feed(raw, facility_authorities, index.s.authorities)
            refused(msh, {cx.authority for cx in (*message.ids, *message.subsumed)})
            done = index.feed(message)
            # What was done, without the ids (the audit trail names the patients): "linked", "review", "new", ...
            log.info("feed", extra={"applied": sorted({part.split(" ", 1)[0] for part in done.split("; ")})})
            return hl7.ack(raw, "AA", application="XDSI_PIX", warnings=message.warnings)
        except Hl7Error as e:
            log.warning("rejected", extra={"reason": e.text, "code": e.code})
            return hl7.ack(raw, e.ack, e, application="XDSI_PIX")
        except Exception:
            log.exception("message failed")
            return hl7.ack(raw, "AE", Hl7Error("the PIX manager could not process the message", code="207"),
                           application="XDSI_PIX")
    return handle
