"""The DICOM audit message (PS3.15 A.5.1) as plain data, and its XML.

Element order and attribute names are the schema's; every coded value carries csd-code, codeSystemName and
originalText, as the schema requires. Values that may hold anything a peer sent (queries, details) are
base64 in the XML, as the schema types them."""
from __future__ import annotations

import base64
import functools
import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field, replace

from ..audit_codes import IP_ADDRESS, MACHINE_NAME, URI_ACCESS_POINT, Code


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a node, process or person. ``host`` becomes NetworkAccessPointID (its type
    is read from its form: IP address, URI or machine name)."""

    user_id: str
    requestor: bool = False
    roles: tuple[Code, ...] = ()
    alt_user_id: str | None = None
    user_name: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class Human:
    """The person behind a request (an XUA assertion's subject, an authenticated API user): the Human
    Requestor participant, and the purposes of use of the event."""

    user_id: str
    name: str | None = None
    organization: str | None = None
    roles: tuple[Code, ...] = ()
    purposes: tuple[Code, ...] = ()

    def participant(self) -> Participant:
        name = ", ".join(p for p in (self.name, self.organization) if p) or None
        return Participant(self.user_id, True, self.roles, user_name=name)


@dataclass(frozen=True)
class Study:
    """A study in a ParticipantObjectDescription: its SOP classes, each with its instance UIDs."""

    uid: str
    sop_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    accession: str | None = None


@dataclass(frozen=True)
class ParticipantObject:
    id: str
    id_type: Code
    type_code: int | None = None
    role: int | None = None
    life_cycle: int | None = None
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    study: Study | None = None


@dataclass(frozen=True)
class AuditSource:
    id: str
    site: str | None = None
    types: tuple[Code, ...] = ()


@dataclass(frozen=True)
class AuditMessage:
    event_id: Code
    outcome: int
    time: dt.datetime
    action: str | None = None
    types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    purposes: tuple[Code, ...] = ()
    participants: tuple[Participant, ...] = ()
    objects: tuple[ParticipantObject, ...] = ()
    source: AuditSource | None = None    # None: the recording actor's, filled in by ``audit.record``


@functools.lru_cache(maxsize=1024)
def access_point_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return IP_ADDRESS
    except ValueError:
        return URI_ACCESS_POINT if "://" in host else MACHINE_NAME


def timestamp(when: dt.datetime) -> str:
    """xsd:dateTime in UTC, to the microsecond."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_SPECIAL = re.compile('[&<>"\t\n\r]')
_MARKUP = frozenset('&<>"')


def _x(value) -> str:
    """Text for an attribute or element: characters XML cannot carry become U+FFFD (a peer's bytes are data,
    never a reason to lose the record), the rest is escaped, line ends included (the message stays one line)."""
    value = str(value)
    if value.isascii() and value.isprintable() and not _MARKUP.intersection(value):   # most values: as they are
        return value
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], _NOT_XML.sub("\ufffd", str(value)))


def _attrs(pairs) -> str:
    return "".join(f' {name}="{_x(value)}"' for name, value in pairs if value is not None and value != "")


def _code(tag: str, code: Code) -> str:
    return f'<{tag} csd-code="{_x(code.code)}" codeSystemName="{_x(code.system)}" originalText="{_x(code.meaning)}"/>'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_xml(message: AuditMessage) -> bytes:
    """The message as UTF-8 XML on one line, declaration included (receivers that frame by line split nothing).
    Written as text: it is made in the request's path, and string building costs a fraction of a tree's."""
    if message.source is None:
        raise ValueError("an audit message needs its AuditSourceIdentification")
    if not message.participants:
        raise ValueError("an audit message needs at least one ActiveParticipant")
    out = ['<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification',
           _attrs((("EventActionCode", message.action), ("EventDateTime", timestamp(message.time)),
                   ("EventOutcomeIndicator", message.outcome))), ">", _code("EventID", message.event_id)]
    out += [_code("EventTypeCode", t) for t in message.types]
    if message.outcome_description:
        out.append(f"<EventOutcomeDescription>{_x(message.outcome_description)}</EventOutcomeDescription>")
    out += [_code("PurposeOfUse", p) for p in message.purposes]
    out.append("</EventIdentification>")
    for p in message.participants:
        out.append("<ActiveParticipant" + _attrs((
            ("UserID", p.user_id), ("AlternativeUserID", p.alt_user_id), ("UserName", p.user_name),
            ("UserIsRequestor", "true" if p.requestor else "false"), ("NetworkAccessPointID", p.host),
            ("NetworkAccessPointTypeCode", access_point_type(p.host) if p.host else None))) + ">")
        out += [_code("RoleIDCode", r) for r in p.roles]
        out.append("</ActiveParticipant>")
    src = message.source
    out.append("<AuditSourceIdentification" + _attrs((("AuditEnterpriseSiteID", src.site),
                                                      ("AuditSourceID", src.id))) + ">")
    out += [_code("AuditSourceTypeCode", t) for t in src.types]
    out.append("</AuditSourceIdentification>")
    for o in message.objects:
        out.append(_object(o))
    out.append("</AuditMessage>")
    return "".join(out).encode("utf-8")


def _object(o: ParticipantObject) -> str:
    out = ["<ParticipantObjectIdentification" + _attrs((
        ("ParticipantObjectID", o.id), ("ParticipantObjectTypeCode", o.type_code),
        ("ParticipantObjectTypeCodeRole", o.role), ("ParticipantObjectDataLifeCycle", o.life_cycle))) + ">",
        _code("ParticipantObjectIDTypeCode", o.id_type)]
    if o.query is not None:     # the schema allows a name or a query, not both
        out.append(f"<ParticipantObjectQuery>{_b64(o.query)}</ParticipantObjectQuery>")
    elif o.name is not None:
        out.append(f"<ParticipantObjectName>{_x(o.name)}</ParticipantObjectName>")
    out += [f'<ParticipantObjectDetail type="{_x(kind)}" value="{_b64(value)}"/>' for kind, value in o.details]
    if o.study is not None:
        out.append("<ParticipantObjectDescription>")
        if o.study.accession:
            out.append(f'<Accession Number="{_x(o.study.accession)}"/>')
        for sop_class, instances in sorted(o.study.sop_classes.items()):
            out.append(f'<SOPClass UID="{_x(sop_class)}" NumberOfInstances="{len(instances)}">')
            out += [f'<Instance UID="{_x(uid)}"/>' for uid in instances]
            out.append("</SOPClass>")
        out.append("</ParticipantObjectDescription>")
    out.append("</ParticipantObjectIdentification>")
    return "".join(out)


def fit(message: AuditMessage, limit: int) -> AuditMessage:
    """A message whose XML is at most ``limit`` bytes: first each query is cut to what fits (a peer's request
    can be of any size), then participant objects are left out from the last, and the outcome description
    says what was cut. A record too large for its destination would otherwise be refused again and again."""
    if len(to_xml(message)) <= limit:
        return message
    notes, objects = [], list(message.objects)
    share = max(limit // 4, 256)
    if any(o.query is not None and len(o.query) > share for o in objects):
        objects = [replace(o, query=o.query[:share]) if o.query is not None and len(o.query) > share else o
                   for o in objects]
        notes.append(f"queries cut to their first {share} bytes")
    dropped = 0

    def attempt() -> AuditMessage:
        note = "; ".join(notes + ([f"{dropped} participant objects left out"] if dropped else []))
        text = "; ".join(t for t in (message.outcome_description, f"audit record shortened: {note}") if t)
        return replace(message, objects=tuple(objects), outcome_description=text)

    shorter = attempt()
    while len(to_xml(shorter)) > limit and objects:
        over = len(to_xml(shorter)) - limit
        while over > 0 and objects:         # drop about as many objects as the excess takes
            over -= len(_object(objects.pop()))
            dropped += 1
        shorter = attempt()
    return shorter
