"""HL7 v2 messages the PIX manager reads (ADT feed) and writes (to the registry and subscribers)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from affinity_domain import hl7
from affinity_domain.hl7 import Cx, Hl7Error

from .demographics import Demographics, from_pid_fields, parse_birth_date
from .domains import Domains

# ITI-8 is HL7 v2.3.1 (ITI TF-2a 3.8); identity feeds of the v2.5 family (PAM's ITI-30 sources,
# US v2.5.1 feeds) send the same ADT events, so those are read too. Anything else is refused.
VERSIONS = ("2.3.1", "2.5", "2.5.1")
CREATE = {"A01", "A04", "A05"}
UPDATE = {"A08"}
MERGE = {"A40"}
_counter = itertools.count(1)


@dataclass
class FeedMessage:
    event: str
    ids: list[Cx]                  # PID-3, each with its assigning authority
    demographics: Demographics
    subsumed: list[Cx]             # MRG-1 (A40)
    warnings: list[Hl7Error] = field(default_factory=list)   # accepted, but said in the ACK (severity W)


def _ids(value: str, default_authority: str, location: str, domains: Domains) -> list[Cx]:
    """Each repetition of a CX field with its domain's OID; HL7's null ``""`` is no id."""
    ids = []
    for n, rep in enumerate(value.split("~"), start=1):
        if not rep or rep == hl7.NULL:
            continue
        where = f"{location}^{n}"
        error = hl7.authority_error(rep, where)
        if error is not None:
            raise error
        cx = domains.resolve(Cx.parse(rep))
        if not cx.id:
            raise Hl7Error("identifier has no id value", code="101", location=f"{where}^1")
        if not cx.authority:
            if not default_authority:
                known = f"namespace {cx.namespace!r} is no configured domain" if cx.namespace else \
                    "it has no assigning authority"
                raise Hl7Error(f"identifier {cx.id!r}: {known}, and the sending facility has no domain "
                               "configured", code="204", location=f"{where}^4")
            cx = Cx(cx.id, default_authority, domains.namespace_of.get(default_authority, ""))
        ids.append(cx)
    return ids


def read_feed(raw: bytes, facility_authorities: dict[str, str], domains: Domains = Domains()) -> FeedMessage:
    hl7.check_structure(raw)
    hl7.check_version(raw, VERSIONS)
    msh = hl7.msh_fields(raw)
    kind = msh["type"].split("^")
    if kind[0] != "ADT":
        raise Hl7Error(f"message type {kind[0]} is not accepted by the identity feed", code="200",
                       location="MSH^1^9", ack="AR")
    event = kind[1] if len(kind) > 1 else ""
    if event not in CREATE | UPDATE | MERGE:
        raise Hl7Error(f"event {event} is not supported", code="201", location="MSH^1^9", ack="AR")
    segments = hl7.read_segments(hl7.decode(raw))
    if "PID" not in segments:
        raise Hl7Error("PID segment is required", code="100", location="PID", ack="AE")
    pid = segments["PID"][0]
    default = facility_authorities.get(msh["sending_facility"].split("^")[0], "")
    ids = _ids(pid[3] if len(pid) > 3 else "", default, "PID^1^3", domains)
    if not ids:
        raise Hl7Error("PID-3 holds no identifier", code="101", location="PID^1^3")
    demographics = from_pid_fields(pid)
    warnings = []
    birth = pid[7].split("~")[0].split("^")[0] if len(pid) > 7 else ""
    if parse_birth_date(birth) is None:   # a typo loses no identity: accepted, the date unknown
        warnings.append(Hl7Error(f"PID-7 {birth!r} is not a date; taken as unknown", code="102",
                                 location="PID^1^7", ack="AA", severity="W"))
    subsumed = []
    if event in MERGE:
        mrg = segments.get("MRG", [[]])[0]
        subsumed = _ids(mrg[1] if len(mrg) > 1 else "", default, "MRG^1^1", domains)
        if not subsumed:
            raise Hl7Error("MRG-1 is required for A40", code="101", location="MRG^1^1")
    return FeedMessage(event, ids, demographics, subsumed, warnings)


def _msh(event: str, structure: str) -> str:
    return (f"MSH|^~\\&|XDSI_PIX|XDSI|XDSI|XDSI|{time.strftime('%Y%m%d%H%M%S')}||ADT^{event}^{structure}|"
            f"PIX{time.time_ns()}{next(_counter)}|P|2.3.1")


def _pid(ids: list[str], d: Demographics) -> str:
    return (f"PID|||{'~'.join(ids)}||{d.family}^{d.given}||{d.birth_date}|{d.sex}|||"
            f"{d.street}^^{d.city}^^{d.postal_code}")


def patient_feed(affinity_id: str, d: Demographics) -> bytes:
    """ITI-8 A01 telling the registry about an affinity-domain patient id."""
    return "\r".join([_msh("A01", "ADT_A01"), f"EVN|A01|{time.strftime('%Y%m%d%H%M%S')}",
                      _pid([affinity_id], d), "PV1||N"]).encode() + b"\r"


def merge_feed(surviving: str, subsumed: str, d: Demographics) -> bytes:
    """ITI-8 A40: the registry's documents of ``subsumed`` are now the ``surviving`` patient's."""
    return "\r".join([_msh("A40", "ADT_A39"), f"EVN|A40|{time.strftime('%Y%m%d%H%M%S')}",
                      _pid([surviving], d), f"MRG|{subsumed}"]).encode() + b"\r"


def update_notification(ids: list[str]) -> bytes:
    """ITI-10 ADT^A31 (v2.5): every identifier the person now has; no demographics."""
    return "\r".join([_msh("A31", "ADT_A05").replace("|2.3.1", "|2.5"),
                      f"EVN||{time.strftime('%Y%m%d%H%M%S')}", f"PID|||{'~'.join(ids)}||^^^^^^S",
                      "PV1||N"]).encode() + b"\r"
