"""The SOAP 1.2 door every actor's service uses: hardened intake, MTOM, WS-Addressing, dispatch by ``wsa:Action``.

Two pure steps and a thin WSGI adapter:

- ``read_request(environ, …) -> Envelope | SoapFault``: one parse of the request, checked
  against the routes;
- ``reply(envelope, route, body, parts) -> Response`` and ``reply_fault(fault, envelope)``:
  the answer's status, headers and body.

Handlers are plain functions ``handler(envelope) -> response element`` bound to a ``wsa:Action``.
A route with ``attachments=True`` (large documents) is instead called as
``handler(envelope, attachments)``: the door reads an MTOM body with ``mtom.read_multipart``
(parts spooled to files, hashed, never inlined as base64), leaves the ``xop:Include`` elements in
place, and may answer ``Reply(element, parts)`` to send file-backed parts back as MTOM.

An MTOM request is a fault when two parts share a Content-ID, and, unless its route takes
``loose_parts`` (ITI-41 answers them ``XDSMissingDocumentMetadata``), when a part is named by no
``xop:Include``. No spool file outlives its request: those the handler did not take are deleted.
Each request is counted (``metrics``) by transaction, outcome and error code, and each request of an
audited transaction leaves its server-side audit record (``audit.xds``; a no-op until ``audit.start``).

With ``xua`` settings (ITI-40), the door checks the request's ``wsse:Security`` before any handler
runs: a failed check is answered with the WS-Security fault and audited (User Authentication,
failed); otherwise the ``xua.Principal`` (anonymous without an assertion) is ``envelope.principal``
for the handler's access decisions and audit records.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lxml import etree

from . import audit, audit_codes, consent, metrics, mtom, ns, soap, xmlsafe, xua as xua_check
from .audit import events
from .audit import xds as audit_xds
from .web import BODY_REFUSED

log = logging.getLogger("xdsi.soap")

Handler = Callable[..., "etree._Element | Reply"]
_SOAP_TYPE = "application/soap+xml; charset=UTF-8"


@dataclass
class Route:
    request: str          # Clark name of the body element, e.g. "{urn:...:query:3.0}AdhocQueryRequest"
    response_action: str
    handler: Handler
    attachments: bool = False    # handler(envelope, {content-id: mtom.Attachment}); needs spool_dir
    loose_parts: bool = False    # parts no xop:Include names reach the handler (else: a fault)
    transaction: str | Callable[[soap.Envelope], str] = ""   # for metrics; empty: ns.TRANSACTIONS


@dataclass
class Reply:
    """A handler's answer with MTOM parts (always sent as multipart/related)."""
    body: etree._Element
    parts: list[mtom.OutPart] = field(default_factory=list)


@dataclass
class Limits:
    max_bytes: int = xmlsafe.DEFAULT_MAX_BYTES     # a SOAP envelope, or a whole plain request
    spool_dir: Path | None = None                  # where MTOM parts of attachments routes go
    max_stream_bytes: int = 0                      # the largest such request
    max_parts: int = mtom.MAX_PARTS                # MIME parts of an MTOM request
    max_part_header_bytes: int = mtom.MAX_PART_HEADER_BYTES


@dataclass
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


def _too_large(limit: int) -> soap.SoapFault:
    return soap.SoapFault(f"request larger than {limit} bytes", status="413 Payload Too Large")


def _content_length(environ) -> int:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _action_hint(root: etree._Element) -> str:
    """The wsa:Action of a parsed envelope, before it is validated (to pick the route's intake)."""
    el = root.find(f"{{{ns.SOAP12}}}Header/{{{ns.WSA}}}Action")
    return (el.text or "").strip() if el is not None else ""


def read_request(environ, routes: dict[str, Route], limits: Limits) -> soap.Envelope | soap.SoapFault:
    """The request's envelope, with its attachments and whether it came as MTOM; or the fault
    to answer. Spool files of a fault are removed here; those of an envelope are the caller's."""
    if environ.get("REQUEST_METHOD") != "POST":
        return soap.SoapFault("POST a SOAP 1.2 request", status="405 Method Not Allowed")
    content_type = environ.get("CONTENT_TYPE", "")
    multipart = mtom.is_multipart(content_type)
    length = _content_length(environ)
    streaming = multipart and limits.spool_dir is not None and any(r.attachments for r in routes.values())
    limit = limits.max_stream_bytes if streaming else limits.max_bytes
    if environ.get(BODY_REFUSED) or length > limit:     # the server refused it unread, or we do now
        return _too_large(environ.get(BODY_REFUSED) or limit)
    spooled: dict[str, mtom.Attachment] | None = None
    envelope: soap.Envelope | soap.SoapFault | None = None
    try:
        if streaming:
            message = mtom.read_multipart(environ["wsgi.input"], content_type, limits.spool_dir,
                                          length, limits.max_bytes, max_parts=limits.max_parts,
                                          max_header_bytes=limits.max_part_header_bytes)
            body, spooled = message.root, message.attachments
        else:
            body = environ["wsgi.input"].read(length) if length else b""
        envelope = _envelope(body, content_type, multipart, spooled, routes, limits)
    except (mtom.MtomError, xmlsafe.UnsafeXml) as e:
        envelope = soap.SoapFault(str(e))
    except soap.SoapFault as e:
        envelope = e
    except OSError as e:
        log.error("cannot read the request", extra={"error": str(e)})
        envelope = soap.SoapFault(f"the service cannot take the request now: {e.strerror or e}", code="Receiver",
                                  status="503 Service Unavailable")
    finally:
        if spooled and not isinstance(envelope, soap.Envelope):
            mtom.SpooledMessage(b"", "", spooled).discard()
    return envelope


def _envelope(body: bytes, content_type: str, multipart: bool, spooled: dict[str, mtom.Attachment] | None,
              routes: dict[str, Route], limits: Limits) -> soap.Envelope:
    if not multipart and content_type.startswith("text/xml"):
        raise soap.SoapFault("SOAP 1.1 (text/xml) is not supported: use SOAP 1.2", code="VersionMismatch")
    parts: dict[str, tuple[str, bytes]] = {}
    if multipart and spooled is None:
        body, _, parts = mtom.split(body, content_type, limits.max_parts, limits.max_part_header_bytes)
    root = xmlsafe.parse(body, limits.max_bytes)
    hinted = routes.get(_action_hint(root))
    streamed = spooled is not None and hinted is not None and hinted.attachments
    if spooled is not None and not streamed:
        # A plain route behind a streaming door: inlined, within max_bytes.
        if sum(a.size for a in spooled.values()) > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        parts = {cid: (a.content_type, a.read()) for cid, a in spooled.items()}
    stray = mtom.unreferenced(root, spooled if streamed else parts)
    if multipart and not streamed:
        mtom.inline_includes(root, parts)
    envelope = soap.read_envelope(root)
    envelope.mtom, envelope.attachments = multipart, spooled or {}
    if not envelope.action:
        raise soap.SoapFault("wsa:Action header is required", subcode="wsa:MessageAddressingHeaderRequired")
    route = routes.get(envelope.action)
    if route is None:
        raise soap.SoapFault(f"action {envelope.action} is not supported here", subcode="wsa:ActionNotSupported")
    if envelope.body.tag != route.request:
        raise soap.SoapFault(f"{envelope.action} expects {route.request}, got {envelope.body.tag}")
    if stray and not (streamed and route.loose_parts):
        raise soap.SoapFault(f"MIME part <{stray[0]}> is named by no xop:Include")
    return envelope


def reply(envelope: soap.Envelope, route: Route, answer: etree._Element | Reply) -> Response:
    """The answer to ``envelope``: MTOM when the handler gave parts or the request was MTOM."""
    body, parts = (answer.body, answer.parts) if isinstance(answer, Reply) else (answer, None)
    xml = soap.to_bytes(soap.envelope(body, route.response_action, relates_to=envelope.message_id))
    if parts is None and not envelope.mtom:
        return Response("200 OK", [("Content-Type", _SOAP_TYPE), ("Content-Length", str(len(xml)))], [xml])
    # Answer MTOM with MTOM, as peers built on Axis2/Metro expect.
    streamed = mtom.StreamedBody(xml, parts or [], route.response_action)
    return Response("200 OK", [("Content-Type", streamed.content_type),
                               ("Content-Length", str(streamed.length))], streamed)


def reply_fault(fault: soap.SoapFault, envelope: soap.Envelope | None = None) -> Response:
    xml = soap.to_bytes(soap.fault_envelope(fault, envelope.message_id if envelope else ""))
    headers = [("Content-Type", _SOAP_TYPE), ("Content-Length", str(len(xml)))]
    if fault.status.startswith("405"):
        headers.append(("Allow", "POST"))
    return Response(fault.status, headers, [xml])


class SoapDoor:
    """WSGI application: POST a SOAP 1.2 (or MTOM) request of one of ``routes``' actions."""

    def __init__(self, routes: dict[str, Route], max_bytes: int = xmlsafe.DEFAULT_MAX_BYTES,
                 spool_dir: str | Path | None = None, max_stream_bytes: int = 0,
                 max_parts: int = mtom.MAX_PARTS, max_part_header_bytes: int = mtom.MAX_PART_HEADER_BYTES,
                 xua: xua_check.XuaSettings | None = None, node: str = ""):
        self.routes = routes
        self.xua, self.node = xua, node     # node: this actor, as the audit records name it
        self.limits = Limits(max_bytes, Path(spool_dir) if spool_dir is not None else None, max_stream_bytes,
                             max_parts, max_part_header_bytes)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        envelope = read_request(environ, self.routes, self.limits)
        if isinstance(envelope, soap.SoapFault):
            log.warning("soap fault", extra={"reason": envelope.reason, "status": envelope.status})
            response, transaction, outcome = reply_fault(envelope), "SOAP", ("fault", _fault_code(envelope))
        elif isinstance(fault := self._authenticate(envelope, environ), xua_check.XuaFault):
            mtom.SpooledMessage(b"", "", envelope.attachments).discard()
            log.warning("xua refused", extra={"action": envelope.action, "reason": fault.reason})
            response = reply_fault(xua_check.soap_fault(fault), envelope)
            transaction, outcome = _transaction(self.routes[envelope.action], envelope), ("fault", f"wsse:{fault.code}")
        else:
            envelope.peer = environ.get("REMOTE_ADDR", "")
            answer, facts = None, _facts(envelope)
            try:
                response, transaction, outcome, answer = self._dispatch(envelope)
            finally:
                _audit(environ, envelope, facts, answer)
                # The spool files the handler did not take.
                mtom.SpooledMessage(b"", "", envelope.attachments).discard()
            log.info("soap", extra={"action": envelope.action, "status": response.status[:3],
                                    "ms": round((time.perf_counter() - started) * 1000, 2)})
        metrics.observe(transaction, *outcome, time.perf_counter() - started)
        start_response(response.status, response.headers)
        return response.body

    def _authenticate(self, envelope: soap.Envelope, environ) -> xua_check.XuaFault | None:
        if self.xua is None:
            return None
        result = xua_check.check(envelope.headers, self.xua)
        if isinstance(result, xua_check.XuaFault):
            peer = environ.get("REMOTE_ADDR", "")
            audit.record(events.user_authentication(
                login=True, user=events.source(peer or "unknown", host=peer or None),
                node=events.destination(self.node or "xdsi", alt=envelope.action),
                outcome=audit_codes.MINOR_FAILURE, description=f"XUA assertion refused: {result.reason}"))
            return result
        envelope.principal = result
        if (who := consent.human(result)) is not None:      # the exchange's audit record names the user
            envelope.audit.setdefault("human", who)
        return None

    def _dispatch(self, envelope: soap.Envelope) -> tuple[Response, str, tuple[str, str], etree._Element | None]:
        route = self.routes[envelope.action]
        transaction = _transaction(route, envelope)
        try:
            answer = (route.handler(envelope, envelope.attachments) if route.attachments
                      else route.handler(envelope))
            response = reply(envelope, route, answer)
        except Exception:
            log.exception("handler failed", extra={"action": envelope.action})
            fault = soap.SoapFault("the service failed to process the request", code="Receiver")
            return reply_fault(fault, envelope), transaction, ("fault", "Receiver"), None
        body = answer.body if isinstance(answer, Reply) else answer
        return response, transaction, metrics.xds_outcome(body), body


def _facts(envelope: soap.Envelope) -> audit_xds.Facts | None:
    """What the audit record takes from the request, read before the handler may take it apart."""
    if envelope.action not in audit_xds.AUDITED or not audit.recording():
        return None
    try:
        return audit_xds.facts(envelope.action, envelope.body)
    except Exception:
        log.exception("audit record not made", extra={"action": envelope.action})
        return None


def _audit(environ, envelope: soap.Envelope, facts: audit_xds.Facts | None, answer: etree._Element | None) -> None:
    """The server side's audit record; a request is never failed by its record."""
    if facts is None:
        return
    try:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        endpoint = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{environ.get('SCRIPT_NAME', '')}" \
                   f"{environ.get('PATH_INFO', '')}"
        message = audit_xds.record(
            envelope.action, facts, answer, server=True,
            requestor=audit_xds.requestor_of(envelope.reply_to, envelope.peer),
            responder=audit_xds.Node(envelope.to or endpoint, host.rsplit(":", 1)[0] or None), **envelope.audit)
    except Exception:
        log.exception("audit record not made", extra={"action": envelope.action})
        return
    if message is not None:
        audit.record(message)


def _transaction(route: Route, envelope: soap.Envelope) -> str:
    if callable(route.transaction):
        try:
            return route.transaction(envelope)
        except Exception:       # naming a request for metrics must never fail it
            log.exception("cannot name the transaction", extra={"action": envelope.action})
    return route.transaction or ns.TRANSACTIONS.get(envelope.action, envelope.action)


def _fault_code(fault: soap.SoapFault) -> str:
    return fault.subcode or fault.code
