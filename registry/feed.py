"""The registry's ITI-8 door: ADT feed of affinity-domain patient ids, one ACK per message.
``read`` is pure (bytes in, what to do out); ``apply`` does it to the store."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from affinity_domain import access, hl7, mllp
from affinity_domain.hl7 import Hl7Error

from .store import Store

log = logging.getLogger("xdsi.registry.feed")

CREATE_OR_UPDATE = {"A01", "A04", "A05", "A08"}
MERGE = {"A40"}


@dataclass(frozen=True)
class FeedMessage:
    event: str
    ids: list[str]                  # PID-3's identifiers in the affinity domain
    demographics: dict[str, str]
    subsumed: list[str] = field(default_factory=list)    # MRG-1's (A40)


def _domain_ids(value: str, domain: str) -> list[str]:
    return [str(hl7.Cx(c.id, c.authority)) for c in hl7.identifiers(value) if c.authority == domain and c.id]


def read(raw: bytes, domain: str) -> FeedMessage:
    """The feed message's meaning, or Hl7Error."""
    segments = hl7.read(raw)
    kind = hl7.msh_fields(raw)["type"].split("^")
    if kind[0] != "ADT":
        raise Hl7Error(f"message type {kind[0]} is not accepted by the identity feed", code="200",
                       location="MSH^1^9", ack="AR")
    event = kind[1] if len(kind) > 1 else ""
    if event not in CREATE_OR_UPDATE | MERGE:
        raise Hl7Error(f"event {event} is not supported", code="201", location="MSH^1^9", ack="AR")
    if "PID" not in segments:
        raise Hl7Error("PID segment is required", code="100", location="PID", ack="AE")
    pid = segments["PID"][0]
    ids = _domain_ids(pid[3] if len(pid) > 3 else "", domain)
    if not ids:
        raise Hl7Error(f"PID-3 has no identifier in the affinity domain {domain}", code="204",
                       location="PID^1^3")
    demographics = {"name": hl7.field(pid, 5), "birth_date": hl7.field(pid, 7), "sex": hl7.field(pid, 8)}
    if event in CREATE_OR_UPDATE:
        return FeedMessage(event, ids, demographics)
    mrg = segments.get("MRG", [[]])[0]
    subsumed = _domain_ids(mrg[1] if len(mrg) > 1 else "", domain)
    if not subsumed:
        raise Hl7Error("MRG-1 has no identifier in the affinity domain", code="101", location="MRG^1^1")
    return FeedMessage(event, ids, demographics, subsumed)


def apply(store: Store, domain: str, raw: bytes) -> str:
    """Apply one feed message; return a short description, or raise Hl7Error."""
    m = read(raw, domain)
    if m.event in CREATE_OR_UPDATE:
        for pid_id in m.ids:
            store.upsert_patient(pid_id, m.demographics)
        return f"{m.event} {', '.join(m.ids)}"
    for old in m.subsumed:
        store.merge_patients(m.ids[0], old, m.demographics)
    return f"A40 {', '.join(m.subsumed)} -> {m.ids[0]}"


def handler(store: Store, domain: str, senders=(), loopback_senders: bool = True):
    """``senders`` (``access.Hl7Sender``): who may feed identities (of the affinity domain, the only ones kept)."""
    def handle(raw: bytes) -> bytes:
        try:
            msh, host = hl7.msh_fields(raw), mllp.peer()
            reason = access.hl7_refusal(senders, loopback_senders, msh["sending_app"], msh["sending_facility"],
                                        host, {domain})
            if reason:
                raise access.hl7_refused("registry", msh["sending_app"], msh["sending_facility"], host, reason, log)
            done = apply(store, domain, raw)
        except Hl7Error as e:
            log.warning("feed rejected", extra={"reason": e.text, "code": e.code})
            return hl7.ack(raw, e.ack, e)
        except Exception:
            log.exception("feed failed")
            return hl7.ack(raw, "AE", Hl7Error("the registry could not store the message", code="207"))
        log.info("feed", extra={"applied": done.split(" ", 1)[0]})   # the event; the ids are in the audit trail
        return hl7.ack(raw, "AA")
    return handle
