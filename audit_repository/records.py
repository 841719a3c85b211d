"""A received syslog message as the row the repository stores (sans-IO): the RFC 5424 header, and the fields of
its DICOM audit message that reviews search by. Whatever a peer sends is kept: a message that is not RFC 5424 or
not a DICOM audit message is stored with its ``problem`` and no indexed fields."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from affinity_domain import xmlsafe
from affinity_domain.audit import syslog
from affinity_domain.audit.syslog import SyslogError


@dataclass
class Row:
    digest: bytes
    received_at: dt.datetime
    transport: str
    peer: str
    message: bytes
    syslog_time: dt.datetime | None = None
    syslog_host: str | None = None
    syslog_app: str | None = None
    syslog_procid: str | None = None
    syslog_msgid: str | None = None
    event_id: str | None = None
    event_system: str | None = None
    event_types: list[str] = field(default_factory=list)
    action: str | None = None
    outcome: int | None = None
    event_time: dt.datetime | None = None
    patient_ids: list[str] = field(default_factory=list)
    patient_numbers: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    source_id: str | None = None
    problem: str | None = None


COLUMNS = tuple(f for f in Row.__dataclass_fields__)


def _code(el) -> str | None:
    # DICOM's csd-code; RFC 3881 messages (older peers) say code
    return None if el is None else (el.get("csd-code") or el.get("code"))


def _datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def index_audit_message(row: Row, xml: bytes, max_bytes: int) -> None:
    """Fill ``row``'s indexed fields from a DICOM (or RFC 3881) audit message."""
    root = xmlsafe.parse(xml, max_bytes)
    if root.tag != "AuditMessage":
        raise xmlsafe.UnsafeXml(f"the root element is {root.tag!r}, not AuditMessage")
    event = root.find("EventIdentification")
    if event is None:
        raise xmlsafe.UnsafeXml("no EventIdentification")
    event_id = event.find("EventID")
    row.event_id, row.event_system = _code(event_id), None if event_id is None else event_id.get("codeSystemName")
    row.event_types = [c for c in (_code(t) for t in event.findall("EventTypeCode")) if c]
    row.action = event.get("EventActionCode")
    outcome = event.get("EventOutcomeIndicator")
    row.outcome = int(outcome) if outcome and outcome.isdigit() and len(outcome) <= 2 else None
    row.event_time = _datetime(event.get("EventDateTime"))
    users = []
    for p in root.iterfind("ActiveParticipant"):
        users += [v for v in (p.get("UserID"), p.get("AlternativeUserID"), p.get("UserName")) if v]
    row.user_ids = list(dict.fromkeys(users))
    source = root.find("AuditSourceIdentification")
    row.source_id = None if source is None else source.get("AuditSourceID")
    patients = [o.get("ParticipantObjectID") for o in root.iterfind("ParticipantObjectIdentification")
                if o.get("ParticipantObjectTypeCode") == "1" and o.get("ParticipantObjectTypeCodeRole") == "1"
                and o.get("ParticipantObjectID")]
    row.patient_ids = list(dict.fromkeys(patients))
    row.patient_numbers = list(dict.fromkeys(p.split("^", 1)[0] for p in patients))


def row_of(data: bytes, transport: str, peer: str, received_at: dt.datetime, max_bytes: int) -> Row:
    row = Row(hashlib.sha256(data).digest(), received_at, transport, peer, data)
    try:
        message = syslog.parse(data)
    except SyslogError as e:
        row.problem = f"not an RFC 5424 message: {e}"
        return row
    row.syslog_time, row.syslog_host, row.syslog_app = message.timestamp, message.hostname, message.app_name
    row.syslog_procid, row.syslog_msgid = message.procid, message.msgid
    try:
        index_audit_message(row, message.msg, max_bytes)
    except xmlsafe.UnsafeXml as e:
        row.problem = f"not a DICOM audit message: {e}"
    return row
