"""ITI-9 PIX Query, pure: read QBP^Q23, decide, and write RSP^K23 (ITI TF-2a 3.9)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from affinity_domain import hl7
from affinity_domain.hl7 import Cx, Hl7Error


@dataclass
class PixQuery:
    raw: bytes
    qpd: list[str]                 # the QPD segment's fields
    person: Cx                     # QPD-3
    domains: list[str] = field(default_factory=list)   # QPD-4 universal ids wanted (empty: all)


def read(raw: bytes) -> PixQuery:
    text = hl7.check_structure(raw)
    event = (hl7.msh_fields(raw)["type"].split("^") + [""])[1]
    if event != "Q23":   # QBP also carries PDQ (Q22) and others this listener does not answer
        raise Hl7Error(f"query event {event} is not supported; PIX Query is QBP^Q23", code="201",
                       location="MSH^1^9^1^2", ack="AR")
    qpd = hl7.first_segment(text, "QPD")
    if qpd is None:
        raise Hl7Error("QPD segment is required", code="100", location="QPD", ack="AE")
    person = Cx.parse(qpd[3]) if len(qpd) > 3 and qpd[3] else None
    if person is None or not person.id:
        raise Hl7Error("QPD-3 must hold the patient identifier", code="101", location="QPD^1^3^1^1")
    domains = []
    for rep in (qpd[4].split("~") if len(qpd) > 4 and qpd[4] else []):
        authority = rep.split("^")[3].split("&") if len(rep.split("^")) > 3 else []
        domains.append(authority[1] if len(authority) > 1 else "")
    return PixQuery(raw, qpd, person, domains)


def answer(q: PixQuery, known_domains: set[str], cross_references: list[Cx] | None) -> bytes:
    """``cross_references``: every id of the person (None: the id is unknown)."""
    if q.person.authority not in known_domains:
        return _response(q, "AE", "AE", [], Hl7Error("unknown domain in QPD-3", code="204",
                                                     location="QPD^1^3^1^4"))
    for i, domain in enumerate(q.domains, start=1):
        if domain not in known_domains:
            return _response(q, "AE", "AE", [], Hl7Error(f"unknown domain {domain} in QPD-4", code="204",
                                                         location=f"QPD^1^4^{i}"))
    if cross_references is None:
        return _response(q, "AE", "AE", [], Hl7Error("unknown patient identifier in QPD-3", code="204",
                                                     location="QPD^1^3^1^1"))
    others = [c for c in cross_references if c != q.person and (not q.domains or c.authority in q.domains)]
    return _response(q, "AA", "OK" if others else "NF", others)


def _response(q: PixQuery, ack_code: str, status: str, ids: list[Cx], error: Hl7Error | None = None) -> bytes:
    msh = hl7.msh_fields(q.raw)
    version = msh["version"] if msh["version"].startswith("2.5") else "2.5"
    segments = [
        f"MSH|^~\\&|XDSI_PIX|XDSI|{msh['sending_app']}|{msh['sending_facility']}|{time.strftime('%Y%m%d%H%M%S')}"
        f"||RSP^K23^RSP_K23|XDSI{time.time_ns()}|{msh['processing']}|{version}",
        f"MSA|{ack_code}|{msh['control_id']}",
    ]
    if error is not None:
        segments.append(hl7.err_segment(error, version))
    segments.append(f"QAK|{q.qpd[2] if len(q.qpd) > 2 else ''}|{status}")
    segments.append("|".join(q.qpd))
    if ids:
        segments.append("PID|||" + "~".join(str(c) for c in ids) + "||^^^^^^S")
    return hl7.framable("\r".join(segments) + "\r").encode()
