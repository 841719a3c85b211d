"""ITI-81 Retrieve ATNA Audit Event, sans-IO: FHIR search parameters to ``Criteria``, and a stored DICOM audit
message to a FHIR R4 ``AuditEvent`` (the DICOM to FHIR mapping IHE's RESTful ATNA uses)."""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl

from affinity_domain import audit_codes as c
from affinity_domain import xmlsafe
from affinity_domain.audit import syslog

from .store import Criteria


class SearchError(ValueError):
    """A search the server cannot answer as asked: 400 with an OperationOutcome."""


_DATE = re.compile(r"^(eq|ge|gt|le|lt)?(\d{4}(-\d\d(-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?)?)?)?)$")
IGNORED = {"_format", "_pretty"}


def _date_range(text: str) -> tuple[dt.datetime, dt.datetime]:
    """The interval a FHIR date value stands for: a year, month, day or instant."""
    if "T" in text:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return value, value + dt.timedelta(microseconds=1)
    parts = [int(p) for p in text.split("-")]
    start = dt.datetime(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1,
                        tzinfo=dt.timezone.utc)
    if len(parts) == 3:
        end = start + dt.timedelta(days=1)
    elif len(parts) == 2:
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    else:
        end = start.replace(year=start.year + 1)
    return start, end


def add_date(criteria: Criteria, value: str) -> None:
    m = _DATE.match(value)
    if not m:
        raise SearchError(f"date={value!r}: expected [eq|ge|gt|le|lt]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]")
    prefix, text = m.group(1) or "eq", m.group(2)
    try:
        start, end = _date_range(text)
    except ValueError as e:
        raise SearchError(f"date={value!r}: {e}") from None
    if prefix in ("eq", "ge"):
        criteria.after.append((">=", start))
    if prefix == "gt":
        criteria.after.append((">=", end))
    if prefix in ("eq", "le"):
        criteria.before.append(("<", end))
    if prefix == "lt":
        criteria.before.append(("<", start))


def _token(value: str) -> str:
    """``system|code`` or ``code``: the code (systems are not told apart here)."""
    return value.rpartition("|")[2]


def _patient(value: str) -> str:
    """``patient.identifier=urn:oid:OID|ID`` as the CX the audit messages carry; a bare id or a CX as is."""
    system, bar, ident = value.rpartition("|")
    if bar and system.startswith("urn:oid:"):
        return f"{ident}^^^&{system[8:]}&ISO"
    return ident if bar else value


def criteria(query_string: str, max_results: int) -> Criteria:
    """The ``Criteria`` of ``GET /AuditEvent?…``: date, patient (patient.identifier, entity-identifier), type
    (EventID or EventTypeCode), subtype, agent (user, agent-name, altid), outcome, source, _count. Any other
    parameter is refused (a typo must not turn into "everything")."""
    c_ = Criteria(limit=max_results)
    for name, value in parse_qsl(query_string, keep_blank_values=True, max_num_fields=100):
        values = [v for v in value.split(",") if v]
        if name == "date":
            add_date(c_, value)
        elif name in ("patient", "patient.identifier", "entity-identifier"):
            c_.patients += [_patient(v) for v in values]
        elif name == "type":
            c_.codes += [_token(v) for v in values]
        elif name == "subtype":
            c_.subtypes += [_token(v) for v in values]
        elif name in ("user", "agent", "agent-name", "altid", "agent.identifier"):
            c_.users += [_token(v) for v in values]
        elif name == "outcome":
            codes = [_token(v) for v in values]
            if not all(x in ("0", "4", "8", "12") for x in codes):
                raise SearchError(f"outcome={value!r}: use 0, 4, 8 or 12")
            c_.outcomes += [int(x) for x in codes]
        elif name in ("source", "site"):
            c_.sources += values
        elif name == "_count":
            if not value.isdigit() or int(value) < 1:
                raise SearchError(f"_count={value!r}: a positive number")
            c_.limit = min(int(value), max_results)
        elif name not in IGNORED:
            raise SearchError(f"unknown search parameter {name!r}")
    return c_


# ------------------------------------------------------------------ AuditEvent

def _coding(el) -> dict:
    system = el.get("codeSystemName") or el.get("codeSystem") or ""
    coding = {"system": c.FHIR_SYSTEMS.get(system, system), "code": el.get("csd-code") or el.get("code")}
    meaning = el.get("originalText") or el.get("displayName")
    if meaning:
        coding["display"] = meaning
    return {k: v for k, v in coding.items() if v}


def audit_event(record_id: int, raw: bytes, max_bytes: int) -> dict:
    """The ``AuditEvent`` of a stored record. One that was not a readable audit message still answers, with
    what the syslog header says and an extension-free ``outcomeDesc`` saying why."""
    resource: dict = {"resourceType": "AuditEvent", "id": str(record_id)}
    try:
        root = xmlsafe.parse(syslog.parse(raw).msg, max_bytes)
    except (syslog.SyslogError, xmlsafe.UnsafeXml) as e:
        resource.update(type={"system": c.FHIR_DCM, "code": c.AUDIT_LOG_USED.code, "display": "unreadable"},
                        recorded="1970-01-01T00:00:00Z", outcome="8", outcomeDesc=f"not readable: {e}",
                        agent=[{"requestor": False, "who": {"display": "unknown"}}],
                        source={"observer": {"display": "unknown"}})
        return resource
    event = root.find("EventIdentification")
    event = event if event is not None else root
    event_id = event.find("EventID")
    if event_id is not None:
        resource["type"] = _coding(event_id)
    subtypes = [_coding(t) for t in event.findall("EventTypeCode")]
    if subtypes:
        resource["subtype"] = subtypes
    for key, attribute in (("action", "EventActionCode"), ("recorded", "EventDateTime"),
                           ("outcome", "EventOutcomeIndicator")):
        if event.get(attribute):
            resource[key] = event.get(attribute)
    if event.findtext("EventOutcomeDescription"):
        resource["outcomeDesc"] = event.findtext("EventOutcomeDescription")
    purposes = [{"coding": [_coding(p)]} for p in event.findall("PurposeOfUse")]
    if purposes:
        resource["purposeOfEvent"] = purposes
    resource["agent"] = [_agent(p) for p in root.iterfind("ActiveParticipant")]
    resource["source"] = _source(root.find("AuditSourceIdentification"))
    entities = [_entity(o) for o in root.iterfind("ParticipantObjectIdentification")]
    if entities:
        resource["entity"] = entities
    return resource


def _agent(p) -> dict:
    agent: dict = {"who": {"identifier": {"value": p.get("UserID", "")}},
                   "requestor": p.get("UserIsRequestor") in ("true", "1")}
    roles = [_coding(r) for r in p.findall("RoleIDCode")]
    if roles:
        agent["type"] = {"coding": roles[:1]}
        if len(roles) > 1:
            agent["role"] = [{"coding": [r]} for r in roles[1:]]
    if p.get("AlternativeUserID"):
        agent["altId"] = p.get("AlternativeUserID")
    if p.get("UserName"):
        agent["name"] = p.get("UserName")
    if p.get("NetworkAccessPointID"):
        agent["network"] = {"address": p.get("NetworkAccessPointID")}
        if p.get("NetworkAccessPointTypeCode"):
            agent["network"]["type"] = p.get("NetworkAccessPointTypeCode")
    return agent


def _source(s) -> dict:
    if s is None:
        return {"observer": {"display": "unknown"}}
    source: dict = {"observer": {"display": s.get("AuditSourceID", "")}}
    if s.get("AuditEnterpriseSiteID"):
        source["site"] = s.get("AuditEnterpriseSiteID")
    types = [{"system": c.FHIR_SOURCE_TYPE, "code": t.get("csd-code") or t.get("code")}
             for t in s.findall("AuditSourceTypeCode")]
    if types:
        source["type"] = types
    return source


def _entity(o) -> dict:
    entity: dict = {"what": {"identifier": {"value": o.get("ParticipantObjectID", "")}}}
    id_type = o.find("ParticipantObjectIDTypeCode")
    if id_type is not None:
        entity["what"]["identifier"]["type"] = {"coding": [_coding(id_type)]}
    if o.get("ParticipantObjectTypeCode"):
        entity["type"] = {"system": c.FHIR_ENTITY_TYPE, "code": o.get("ParticipantObjectTypeCode")}
    if o.get("ParticipantObjectTypeCodeRole"):
        entity["role"] = {"system": c.FHIR_OBJECT_ROLE, "code": o.get("ParticipantObjectTypeCodeRole")}
    if o.get("ParticipantObjectDataLifeCycle"):
        entity["lifecycle"] = {"code": o.get("ParticipantObjectDataLifeCycle")}
    if o.findtext("ParticipantObjectName"):
        entity["name"] = o.findtext("ParticipantObjectName")
    if o.findtext("ParticipantObjectQuery"):
        entity["query"] = o.findtext("ParticipantObjectQuery").strip()
    details = [{"type": d.get("type", ""), "valueBase64Binary": d.get("value", "")}
               for d in o.findall("ParticipantObjectDetail")]
    if details:
        entity["detail"] = details
    return entity


def bundle(resources: list[dict], self_url: str) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "link": [{"relation": "self", "url": self_url}],
            "entry": [{"fullUrl": f"AuditEvent/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}


def operation_outcome(text: str, code: str = "invalid") -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
