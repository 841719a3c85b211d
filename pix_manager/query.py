"""ITI-9 PIX Query, pure: read QBP^Q23, decide, and write RSP^K23 (ITI TF-2a 3.9)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from affinity_domain import hl7
from affinity_domain.hl7 import Cx, Hl7Error

from .domains import Domains

# ITI-9 is HL7 v2.5 (ITI TF-2a 3.9.3); consumers of the v2.5 family send 2.5.1 too. QBP has no
# v2.3.1 form, so that and any other version are refused.
VERSIONS = ("2.5", "2.5.1")


@dataclass
class PixQuery:
    raw: bytes
    qpd: list[str]                 # the QPD segment's fields
    person: Cx                     # QPD-3
    domains: list[str] = field(default_factory=list)   # QPD-4 universal ids wanted (empty: all)


def read(raw: bytes, domains: Domains = Domains()) -> PixQuery:
    """QPD-3 and QPD-4 with their domains' OIDs (by namespace where only that is given)."""
    text = hl7.check_structure(raw)
    hl7.check_version(raw, VERSIONS)
    event = (hl7.msh_fields(raw)["type"].split("^") + [""])[1]
    if event != "Q23":   # QBP also carries PDQ (Q22) and others this listener does not answer
        raise Hl7Error(f"query event {event} is not supported; PIX Query is QBP^Q23", code="201",
                       location="MSH^1^9^1^2", ack="AR")
    qpd = hl7.first_segment(text, "QPD")
    if qpd is None:
        raise Hl7Error("QPD segment is required", code="100", location="QPD", ack="AE")
    person = domains.resolve(Cx.parse(qpd[3])) if len(qpd) > 3 and qpd[3] else None
    if person is None or not person.id:
        raise Hl7Error("QPD-3 must hold the patient identifier", code="101", location="QPD^1^3^1^1")
    error = hl7.authority_error(qpd[3], "QPD^1^3^1")
    if error is not None:
        raise error
    wanted = []
    for i, rep in enumerate(qpd[4].split("~") if len(qpd) > 4 and hl7.content(qpd[4]) else [], start=1):
        error = hl7.authority_error(rep, f"QPD^1^4^{i}")
        if error is not None:
            raise error
        wanted.append(domains.resolve(Cx.parse(rep)).authority)
    return PixQuery(raw, qpd, person, wanted)


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
    # The queried id is never among those returned (ITI TF-2a 3.9.4.2.2), however its authority was spelt.
    others = [c for c in cross_references
              if c.key != q.person.key and (not q.domains or c.authority in q.domains)]
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
