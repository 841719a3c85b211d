"""The DICOM audit message (PS3.15 A.5.1) as plain data, and its XML.

Element order and attribute names are the schema's; every coded value carries csd-code, codeSystemName and
originalText, as the schema requires. Values that may hold anything a peer sent (queries, details) are
base64 in the XML, as the schema types them."""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from lxml import etree

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


def _code(parent, tag: str, code: Code):
    return etree.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                          "originalText": code.meaning})


def access_point_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return IP_ADDRESS
    except ValueError:
        return URI_ACCESS_POINT if "://" in host else MACHINE_NAME


def timestamp(when: dt.datetime) -> str:
    """xsd:dateTime in UTC, to the microsecond."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_element(message: AuditMessage) -> etree._Element:
    if message.source is None:
        raise ValueError("an audit message needs its AuditSourceIdentification")
    if not message.participants:
        raise ValueError("an audit message needs at least one ActiveParticipant")
    root = etree.Element("AuditMessage")
    event = etree.SubElement(root, "EventIdentification", {"EventDateTime": timestamp(message.time),
                                                           "EventOutcomeIndicator": str(message.outcome)})
    if message.action:
        event.set("EventActionCode", message.action)
    _code(event, "EventID", message.event_id)
    for code in message.types:
        _code(event, "EventTypeCode", code)
    if message.outcome_description:
        etree.SubElement(event, "EventOutcomeDescription").text = message.outcome_description
    for code in message.purposes:
        _code(event, "PurposeOfUse", code)
    for p in message.participants:
        ap = etree.SubElement(root, "ActiveParticipant", {"UserID": p.user_id,
                                                          "UserIsRequestor": "true" if p.requestor else "false"})
        for name, value in (("AlternativeUserID", p.alt_user_id), ("UserName", p.user_name)):
            if value:
                ap.set(name, value)
        if p.host:
            ap.set("NetworkAccessPointID", p.host)
            ap.set("NetworkAccessPointTypeCode", access_point_type(p.host))
        for code in p.roles:
            _code(ap, "RoleIDCode", code)
    source = etree.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": message.source.id})
    if message.source.site:
        source.set("AuditEnterpriseSiteID", message.source.site)
    for code in message.source.types:
        _code(source, "AuditSourceTypeCode", code)
    for o in message.objects:
        _object(root, o)
    return root


def _object(root, o: ParticipantObject) -> None:
    po = etree.SubElement(root, "ParticipantObjectIdentification", {"ParticipantObjectID": o.id})
    for name, value in (("ParticipantObjectTypeCode", o.type_code), ("ParticipantObjectTypeCodeRole", o.role),
                        ("ParticipantObjectDataLifeCycle", o.life_cycle)):
        if value is not None:
            po.set(name, str(value))
    _code(po, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:     # the schema allows a name or a query, not both
        etree.SubElement(po, "ParticipantObjectQuery").text = _b64(o.query)
    elif o.name is not None:
        etree.SubElement(po, "ParticipantObjectName").text = o.name
    for kind, value in o.details:
        etree.SubElement(po, "ParticipantObjectDetail", {"type": kind, "value": _b64(value)})
    if o.study is not None:
        description = etree.SubElement(po, "ParticipantObjectDescription")
        if o.study.accession:
            etree.SubElement(description, "Accession", {"Number": o.study.accession})
        for sop_class, instances in sorted(o.study.sop_classes.items()):
            sop = etree.SubElement(description, "SOPClass", {"UID": sop_class,
                                                             "NumberOfInstances": str(len(instances))})
            for uid in instances:
                etree.SubElement(sop, "Instance", {"UID": uid})


def to_xml(message: AuditMessage) -> bytes:
    """The message as UTF-8 XML on one line, declaration included (receivers that frame by line split nothing)."""
    return b'<?xml version="1.0" encoding="UTF-8"?>' + etree.tostring(to_element(message), encoding="UTF-8")
