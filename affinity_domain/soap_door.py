"""The SOAP door every actor's service uses: hardened intake, MTOM, WS-Addressing, then spyne dispatch.

Handlers are plain functions ``handler(envelope) -> response element`` bound to a ``wsa:Action``.
A route with ``attachments=True`` (large documents) is instead called as
``handler(envelope, attachments)``: the door reads an MTOM body with ``mtom.read_multipart``
(parts spooled to files, hashed, never inlined as base64), leaves the ``xop:Include`` elements in
place, and may answer ``Reply(element, parts)`` to send file-backed parts back as MTOM.
spyne (Python 3.11 only) is imported here and nowhere else, so it can be replaced without
touching any actor's core.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lxml import etree
from spyne import AnyXml, Application, ServiceBase, rpc
from spyne.protocol.soap import Soap12
from spyne.server.wsgi import WsgiApplication

from . import mtom, soap, xmlsafe

log = logging.getLogger("xdsi.soap")

Handler = Callable[[soap.Envelope], etree._Element]


@dataclass
class Route:
    request: str          # Clark name of the body element, e.g. "{urn:...:query:3.0}AdhocQueryRequest"
    response_action: str
    handler: Handler
    attachments: bool = False    # handler(envelope, {content-id: mtom.Attachment}); needs spool_dir


@dataclass
class Reply:
    """A handler's answer with MTOM parts (always sent as multipart/related)."""
    body: etree._Element
    parts: list[mtom.OutPart] = field(default_factory=list)


class _BadRequest(Exception):
    def __init__(self, fault: soap.SoapFault, status: str = "400 Bad Request"):
        self.fault, self.status = fault, status


def _forward(routes: dict[str, Route], name: str = "call"):
    def call(ctx, _body):
        envelope: soap.Envelope = ctx.transport.req_env["xdsi.envelope"]
        route = routes[envelope.action]
        env = ctx.transport.req_env
        env["xdsi.response_action"] = route.response_action
        if not route.attachments:
            return route.handler(envelope)
        reply = route.handler(envelope, env.get("xdsi.attachments", {}))
        if isinstance(reply, Reply):
            env["xdsi.parts"] = reply.parts
            return reply.body
        return reply
    call.__name__ = call.__qualname__ = name    # spyne keys methods by function name
    return call


def _spyne_app(ns: str, names: list[str], routes: dict[str, Route]) -> WsgiApplication:
    """One spyne application per request namespace (spyne resolves methods against its tns)."""
    methods = {name: rpc(AnyXml, _body_style="bare", _in_message_name=f"{{{ns}}}{name}",
                         _returns=AnyXml)(_forward(routes, name)) for name in names}
    service = type(f"{names[0]}Service", (ServiceBase,), {"__namespace__": ns, **methods})
    app = Application([service], tns=ns, name="xdsi",
                      in_protocol=Soap12(validator=None), out_protocol=Soap12())
    app.event_manager.add_listener("method_return_document", _unwrap_and_address)
    return WsgiApplication(app)


def _unwrap_and_address(ctx) -> None:
    """spyne wraps returned elements in ``<tns:methodResponse>``; XDS wants them bare, with WS-A headers."""
    env = ctx.transport.req_env
    request: soap.Envelope = env["xdsi.envelope"]
    body = ctx.out_document.find(f"{{{soap.SOAP12}}}Body")
    wrapper = body[0]
    payload = wrapper[0] if len(wrapper) else None
    ctx.out_document = soap.envelope(payload, env["xdsi.response_action"], relates_to=request.message_id)


class SoapDoor:
    """WSGI application: POST a SOAP 1.2 (or MTOM) request of one of ``routes``' actions."""

    def __init__(self, routes: dict[str, Route], max_bytes: int = xmlsafe.DEFAULT_MAX_BYTES,
                 spool_dir: str | Path | None = None, max_stream_bytes: int = 0):
        """``spool_dir``/``max_stream_bytes``: where MTOM parts of ``attachments`` routes are
        spooled, and the largest such request accepted."""
        self.routes, self.max_bytes = routes, max_bytes
        self.spool_dir, self.max_stream_bytes = spool_dir, max_stream_bytes
        self.streaming = spool_dir is not None and any(r.attachments for r in routes.values())
        by_ns: dict[str, list[str]] = {}
        for clark in sorted({r.request for r in routes.values()}):
            ns, name = clark[1:].split("}")
            by_ns.setdefault(ns, []).append(name)
        self.spyne = {ns: _spyne_app(ns, names, routes) for ns, names in by_ns.items()}
        for app in self.spyne.values():
            app.max_content_length = max_bytes * 2

    def _read(self, environ) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.max_bytes:
            raise _BadRequest(soap.SoapFault(f"request larger than {self.max_bytes} bytes"),
                              "413 Payload Too Large")
        return environ["wsgi.input"].read(length) if length else b""

    def _read_streaming(self, environ) -> tuple[bytes, dict[str, mtom.Attachment]]:
        """An MTOM body read part by part: (root part, spooled attachments)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.max_stream_bytes:
            raise _BadRequest(soap.SoapFault(f"request larger than {self.max_stream_bytes} bytes"),
                              "413 Payload Too Large")
        try:
            message = mtom.read_multipart(environ["wsgi.input"], environ.get("CONTENT_TYPE", ""),
                                          self.spool_dir, length, self.max_bytes)
        except mtom.MtomError as e:
            raise _BadRequest(soap.SoapFault(str(e))) from None
        return message.root, message.attachments

    def _envelope(self, environ, body: bytes,
                  spooled: dict[str, mtom.Attachment] | None = None) -> tuple[soap.Envelope, bool]:
        content_type = environ.get("CONTENT_TYPE", "")
        multipart = mtom.is_multipart(content_type)
        parts = {}
        if spooled is not None:
            pass                      # already split by _read_streaming
        elif multipart:
            try:
                body, _, parts = mtom.split(body, content_type)
            except mtom.MtomError as e:
                raise _BadRequest(soap.SoapFault(str(e))) from None
        elif content_type.startswith("text/xml"):
            raise _BadRequest(soap.SoapFault("SOAP 1.1 (text/xml) is not supported: use SOAP 1.2",
                                             code="VersionMismatch"))
        try:
            root = xmlsafe.parse(body, self.max_bytes)
        except xmlsafe.UnsafeXml as e:
            raise _BadRequest(soap.SoapFault(str(e))) from None
        route = self.routes.get(_action_hint(root))
        if spooled is not None and not (route and route.attachments):
            # A plain route behind a streaming door: inline as the door always did, within max_bytes.
            if sum(a.size for a in spooled.values()) > self.max_bytes:
                raise _BadRequest(soap.SoapFault(f"request larger than {self.max_bytes} bytes"),
                                  "413 Payload Too Large")
            parts = {cid: (a.content_type, a.read()) for cid, a in spooled.items()}
        if (parts or multipart) and not (spooled is not None and route and route.attachments):
            try:
                mtom.inline_includes(root, parts)
            except mtom.MtomError as e:
                raise _BadRequest(soap.SoapFault(str(e))) from None
        try:
            envelope = soap.read_envelope(root)
        except soap.SoapFault as e:
            raise _BadRequest(e) from None
        if not envelope.action:
            raise _BadRequest(soap.SoapFault("wsa:Action header is required",
                                             subcode="wsa:MessageAddressingHeaderRequired"))
        route = self.routes.get(envelope.action)
        if route is None:
            raise _BadRequest(soap.SoapFault(f"action {envelope.action} is not supported here",
                                             subcode="wsa:ActionNotSupported"))
        if envelope.body.tag != route.request:
            raise _BadRequest(soap.SoapFault(
                f"{envelope.action} expects {route.request}, got {envelope.body.tag}"))
        return envelope, multipart

    def __call__(self, environ, start_response):
        try:
            return self._serve(environ, start_response)
        finally:
            if environ.get("xdsi.attachments"):   # the spool files the handler did not take
                mtom.SpooledMessage(b"", "", environ["xdsi.attachments"]).discard()

    def _serve(self, environ, start_response):
        started = time.perf_counter()
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
            return [b"POST a SOAP 1.2 request\n"]
        envelope, spooled = None, None
        try:
            if self.streaming and mtom.is_multipart(environ.get("CONTENT_TYPE", "")):
                root, spooled = self._read_streaming(environ)
                environ["xdsi.attachments"] = spooled
                envelope, multipart = self._envelope(environ, root, spooled)
            else:
                envelope, multipart = self._envelope(environ, self._read(environ))
            status, body = self._dispatch(environ, envelope)
            content_type = "application/soap+xml; charset=UTF-8"
            if environ.get("xdsi.parts") is not None and status.startswith("200"):
                streamed = mtom.StreamedBody(body, environ["xdsi.parts"], environ["xdsi.response_action"])
                start_response(status, [("Content-Type", streamed.content_type),
                                        ("Content-Length", str(streamed.length))])
                log.info("soap", extra={"action": envelope.action, "status": status[:3],
                                        "parts": len(environ["xdsi.parts"]),
                                        "ms": round((time.perf_counter() - started) * 1000, 2)})
                return streamed
            if multipart and status.startswith("200"):
                # Answer MTOM with MTOM, as peers built on Axis2/Metro expect.
                content_type, body = mtom.build(body, action=environ["xdsi.response_action"])
        except _BadRequest as e:
            status, content_type = e.status, "application/soap+xml; charset=UTF-8"
            body = soap.to_bytes(soap.fault_envelope(e.fault, envelope.message_id if envelope else ""))
            log.warning("soap fault", extra={"reason": e.fault.reason, "status": status})
        if envelope is not None:
            log.info("soap", extra={"action": envelope.action, "status": status[:3],
                                    "ms": round((time.perf_counter() - started) * 1000, 2)})
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def _dispatch(self, environ, envelope: soap.Envelope) -> tuple[str, bytes]:
        plain = soap.to_bytes(envelope.body.getroottree().getroot())
        inner = dict(environ, CONTENT_TYPE="application/soap+xml; charset=UTF-8",
                     CONTENT_LENGTH=str(len(plain)))
        inner["xdsi.envelope"] = envelope
        inner["xdsi.attachments"] = environ.get("xdsi.attachments", {})
        inner["wsgi.input"] = io.BytesIO(plain)
        captured = {}

        def start(status, headers, exc_info=None):
            captured["status"] = status

        spyne = self.spyne[etree.QName(envelope.body).namespace]
        body = b"".join(spyne(inner, start))
        environ["xdsi.response_action"] = inner.get("xdsi.response_action", "")
        if "xdsi.parts" in inner:
            environ["xdsi.parts"] = inner["xdsi.parts"]
        if not captured["status"].startswith("200"):
            log.error("handler failed", extra={"action": envelope.action, "status": captured["status"],
                                               "detail": body[-600:].decode("utf-8", "replace")})
            fault = soap.SoapFault("the service failed to process the request", code="Receiver")
            return "500 Internal Server Error", soap.to_bytes(
                soap.fault_envelope(fault, envelope.message_id))
        return "200 OK", body


def _action_hint(root: etree._Element) -> str:
    """The wsa:Action of a parsed envelope, before it is validated (to pick the route's intake)."""
    el = root.find(f"{{{soap.SOAP12}}}Header/{{{soap.WSA}}}Action")
    return (el.text or "").strip() if el is not None else ""
