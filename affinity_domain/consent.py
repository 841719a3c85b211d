"""Patient opt-out (the consent rule of ELGA and GDPR-minded domains): who may still see an
opted-out patient's entries and documents, and the audit record of each such answer. Sans-IO;
the registry keeps the choices (its ``consent`` table) and answers the other actors' questions.

An opted-out patient is answered to nobody but a break-glass requester: an XUA principal whose
role or purpose of use is an emergency one (``EMERGENCY_CODES``)."""
from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Iterable

from . import audit, audit_codes, secure_node
from .audit import events
from .audit.message import Human
from .exceptions import XdsiError

MAX_ANSWER_BYTES = 4 * 1024 * 1024

# Role ``emergency`` (this domain's break-glass role); PurposeOfUse EMERGENCY (NHIN,
# 2.16.840.1.113883.3.18.7.1), ETREAT (HL7 v3 emergency treatment) and BTG (break the glass).
EMERGENCY_CODES = frozenset({"emergency", "EMERGENCY", "ETREAT", "BTG"})


def break_glass(principal) -> bool:
    """``principal``: an ``xua.Principal`` or None (no assertion checked)."""
    if principal is None:
        return False
    return any(c.code in EMERGENCY_CODES for c in (*principal.roles, *principal.purpose_of_use))


def human(principal) -> Human | None:
    """The XUA principal as an audit record's Human Requestor (subject, organisation, roles,
    purposes of use); None when anonymous."""
    if principal is None or principal.anonymous:
        return None
    code = lambda c: audit_codes.Code(c.code, c.code_system, c.display_name or c.code)   # noqa: E731
    return Human(principal.subject, principal.subject_name or None, principal.organization or None,
                 tuple(code(c) for c in principal.roles), tuple(code(c) for c in principal.purpose_of_use))


def record(patients: Iterable[str], principal, *, node: str, transaction: str, peer: str = "") -> None:
    """Audit an answer about opted-out ``patients``: withheld, or given under break-glass
    (Security Alert: Emergency Override Started)."""
    glass = break_glass(principal)
    who = human(principal)
    performers = [] if who else [events.source(peer or "anonymous", host=peer or None)]
    for pid in dict.fromkeys(patients):
        audit.record(events.security_alert(
            kind=audit_codes.EMERGENCY_OVERRIDE_STARTED if glass else audit_codes.USE_OF_RESTRICTED_FUNCTION,
            reporter=events.destination(node, requestor=False), subject=pid, subject_type=audit_codes.PATIENT_NUMBER,
            performers=performers, human=who, outcome=audit_codes.SUCCESS if glass else audit_codes.MINOR_FAILURE,
            description=(f"{transaction}: opted-out patient's entries answered under break-glass" if glass
                         else f"{transaction}: opted-out patient's entries withheld")))


# ------------------------------------------------------------ asking the registry

class ConsentUnavailable(XdsiError):
    """The registry did not say whose documents are withheld: nothing is served (fail closed)."""


def withheld_url(registry_url: str) -> str:
    """The registry's consent API beside its SOAP door (same scheme, host and port)."""
    u = urllib.parse.urlsplit(registry_url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/consent/withheld", "", ""))


def ask_withheld(url: str, documents: list[str] = (), studies: list[str] = (), timeout: float = 10.0,
                 context: ssl.SSLContext | None = None) -> dict[str, dict[str, str]]:
    """{"documents": {uid: patient}, "studies": {uid: patient}} of opted-out patients, from the
    registry's ``POST /consent/withheld`` (over the node's TLS when it has one)."""
    url = secure_node.url(url)
    context = context or secure_node.client_context()
    u = urllib.parse.urlsplit(url)
    conn = (http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=context)
            if u.scheme == "https" else http.client.HTTPConnection(u.hostname, u.port, timeout=timeout))
    body = json.dumps({"documents": list(documents), "studies": list(studies)}).encode()
    try:
        conn.request("POST", u.path, body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read(MAX_ANSWER_BYTES + 1)
    except (OSError, http.client.HTTPException) as e:
        raise ConsentUnavailable(f"the registry's consent API at {url} failed: {e}") from None
    finally:
        conn.close()
    if reply.status != 200 or len(data) > MAX_ANSWER_BYTES:
        raise ConsentUnavailable(f"the registry's consent API at {url} answered HTTP {reply.status}")
    try:
        answer = json.loads(data)
        return {"documents": dict(answer["documents"]), "studies": dict(answer["studies"])}
    except (ValueError, KeyError, TypeError) as e:
        raise ConsentUnavailable(f"the registry's consent API at {url} answered no consent: {e}") from None
