"""The registry's ITI-8 door: ADT feed of affinity-domain patient ids, one ACK per message."""
from __future__ import annotations

import logging

from affinity_domain import hl7
from affinity_domain.hl7 import Hl7Error

from .store import Store

log = logging.getLogger("xdsi.registry.feed")

CREATE_OR_UPDATE = {"A01", "A04", "A05", "A08"}
MERGE = {"A40"}


def _field(segment, name: str) -> str:
    try:
        return getattr(segment, name).to_er7()
    except Exception:  # hl7apy raises for fields a version does not define
        return ""


def _domain_ids(reps, domain: str) -> list[str]:
    return [str(hl7.Cx(c.id, c.authority)) for c in hl7.identifiers(reps) if c.authority == domain and c.id]


def apply(store: Store, domain: str, raw: bytes) -> str:
    """Apply one feed message; return a short description, or raise Hl7Error."""
    message = hl7.parse(raw)
    kind = hl7.msh_fields(raw)["type"].split("^")
    if kind[0] != "ADT":
        raise Hl7Error(f"message type {kind[0]} is not accepted by the identity feed", code="200",
                       location="MSH^1^9", ack="AR")
    event = kind[1] if len(kind) > 1 else ""
    if event not in CREATE_OR_UPDATE | MERGE:
        raise Hl7Error(f"event {event} is not supported", code="201", location="MSH^1^9", ack="AR")
    pids = hl7.segments(message, "PID")
    if not pids:
        raise Hl7Error("PID segment is required", code="100", location="PID", ack="AE")
    pid = pids[0]
    ids = _domain_ids(pid.pid_3, domain)
    if not ids:
        raise Hl7Error(f"PID-3 has no identifier in the affinity domain {domain}", code="204",
                       location="PID^1^3")
    demographics = {"name": _field(pid, "pid_5"), "birth_date": _field(pid, "pid_7"),
                    "sex": _field(pid, "pid_8")}
    if event in CREATE_OR_UPDATE:
        for pid_id in ids:
            store.upsert_patient(pid_id, demographics)
        return f"{event} {', '.join(ids)}"
    mrgs = hl7.segments(message, "MRG")
    subsumed = _domain_ids(mrgs[0].mrg_1, domain) if mrgs else []
    if not subsumed:
        raise Hl7Error("MRG-1 has no identifier in the affinity domain", code="101", location="MRG^1^1")
    for old in subsumed:
        store.merge_patients(ids[0], old, demographics)
    return f"A40 {', '.join(subsumed)} -> {ids[0]}"


def handler(store: Store, domain: str):
    def handle(raw: bytes) -> bytes:
        try:
            done = apply(store, domain, raw)
        except Hl7Error as e:
            log.warning("feed rejected", extra={"reason": e.text, "code": e.code})
            return hl7.ack(raw, e.ack, e)
        except Exception:
            log.exception("feed failed")
            return hl7.ack(raw, "AE", Hl7Error("the registry could not store the message", code="207"))
        log.info("feed", extra={"applied": done})
        return hl7.ack(raw, "AA")
    return handle
