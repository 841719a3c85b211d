"""The SOAP 1.2 + WS-Addressing client every actor uses to call another: plain or MTOM/XOP.

zeep cannot send MTOM, and XDS needs it (ITI-41, RAD-68, ITI-43, RAD-69), so this is a small
transport of our own on ``http.client``: attachments are streamed from files, MTOM answers are
read part by part into a spool directory, and every call has a time-out. Connections are kept
alive between calls (a repository registers every submission with the same registry). Under the
node's ``[tls]`` (``secure_node``) every call is HTTPS with our certificate, whatever the URL's scheme.
"""
from __future__ import annotations

import http.client
import logging
import os
import select
import socket
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lxml import etree

from . import audit, mtom, ns, secure_node, soap, xmlsafe
from .audit import xds as audit_xds
from .exceptions import XdsiError

log = logging.getLogger("xdsi.soap")
SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
IDLE_SECONDS = 20.0      # well under the idle timeouts of common servers (waitress: 120 s)
MAX_IDLE = 8
_STALE = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


class TransportError(XdsiError):
    """No usable answer. ``maybe_processed``: the request was sent whole, so the peer may have
    acted on it (a time-out while waiting); False when it certainly did not (connection refused)."""

    retryable = True

    def __init__(self, message: str, maybe_processed: bool):
        super().__init__(message)
        self.maybe_processed = maybe_processed


@dataclass
class Response:
    http_status: int
    envelope: soap.Envelope | None
    fault: str = ""                  # the Reason of a SOAP Fault answer
    attachments: dict[str, mtom.Attachment] = field(default_factory=dict)

    @property
    def body(self) -> etree._Element | None:
        return self.envelope.body if self.envelope else None

    def discard(self) -> None:
        mtom.SpooledMessage(b"", "", self.attachments).discard()


def assertion_file(path: str | Path) -> Callable[[], etree._Element]:
    """An assertion an X-Assertion Provider wrote to ``path``, read again when the file changes
    (a renewed assertion replaces an expiring one)."""
    cached: list = [None, None]     # (mtime, element)

    def current() -> etree._Element:
        mtime = os.stat(path).st_mtime_ns
        if cached[0] != mtime:
            cached[:] = [mtime, xmlsafe.parse(Path(path).read_bytes())]
        return cached[1]
    return current


class SoapClient:
    def __init__(self, url: str, timeout: float = 30.0, spool_dir: str | Path | None = None,
                 max_response_bytes: int = xmlsafe.DEFAULT_MAX_BYTES, memory_budget: int = 0,
                 assertion: Callable[[], etree._Element | None] | None = None):
        """``memory_budget``: bytes of a response's attachments held in memory; the rest are
        spooled to files in ``spool_dir``. ``assertion``: gives the XUA (ITI-40) SAML assertion
        each request carries in ``wsse:Security`` (None: none), e.g. ``assertion_file(path)``."""
        self.assertion = assertion
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an HTTP URL: {url}")
        url = secure_node.url(url)
        self.url, self._u = url, urllib.parse.urlsplit(url)
        self.timeout, self.max_response_bytes = timeout, max_response_bytes
        self.spool_dir = Path(spool_dir) if spool_dir else Path(tempfile.gettempdir())
        self.memory_budget = memory_budget
        self._context = secure_node.client_context()
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept-alive connection that the peer has not closed, else a new one; and whether it was reused."""
        while True:
            with self._lock:
                conn, since = self._idle.pop() if self._idle else (None, 0.0)
            if conn is None:
                break
            # Readable while idle means the peer closed it (or sent what we did not ask for).
            if time.monotonic() - since < IDLE_SECONDS and not select.select([conn.sock], [], [], 0)[0]:
                return conn, True
            conn.close()
        if self._context is not None:
            return http.client.HTTPSConnection(self._u.hostname, self._u.port, timeout=self.timeout,
                                               context=self._context), False
        cls = http.client.HTTPSConnection if self._u.scheme == "https" else http.client.HTTPConnection
        return cls(self._u.hostname, self._u.port, timeout=self.timeout), False

    def _release(self, conn: http.client.HTTPConnection, reply: http.client.HTTPResponse | None) -> None:
        if reply is None or reply.will_close or not reply.isclosed() or conn.sock is None:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def call(self, action: str, body: etree._Element, parts: list[mtom.OutPart] = (),
             use_mtom: bool | None = None, audit_patients: Iterable[str] = (), human=None) -> Response:
        """Send ``body`` with ``wsa:Action`` ``action``; MTOM when there are parts or ``use_mtom``. An audited
        transaction leaves the client side's audit record (``audit.xds``), naming ``audit_patients`` when the
        messages do not name the patient (a retrieve) and ``human`` (an ``audit.message.Human``) if given."""
        answer: Response | None = None
        try:
            answer = self._call(action, body, parts, use_mtom)
            return answer
        finally:
            if action in audit_xds.AUDITED and audit.recording():
                self._audit(action, body, answer, audit_patients, human)

    def _audit(self, action, body, answer: Response | None, patients, human) -> None:
        try:
            message = audit_xds.record(action, body, answer.body if answer else None, server=False,
                                       requestor=audit_xds.ourselves(), responder=audit_xds.Node(
                                           self.url, self._u.hostname), patients=patients, human=human,
                                       description=(answer.fault or None) if answer else "no answer")
        except Exception:
            log.exception("audit record not made", extra={"action": action})
            return
        if message is not None:
            audit.record(message)

    def _call(self, action: str, body: etree._Element, parts, use_mtom) -> Response:
        saml = self.assertion() if self.assertion else None
        headers = (soap.security_header(saml),) if saml is not None else ()
        xml = soap.to_bytes(soap.envelope(body, action, to=self.url, headers=headers))
        if parts or use_mtom:
            payload = mtom.StreamedBody(xml, list(parts), action)
            content_type, length, chunks = payload.content_type, payload.length, payload
        else:
            content_type = f'{SOAP_CONTENT_TYPE}; action="{action}"'
            length, chunks = len(xml), [xml]
        try:
            while True:
                conn, reused = self._connection()
                sent, reply = False, None
                try:
                    conn.putrequest("POST", self._u.path or "/", skip_accept_encoding=True)
                    conn.putheader("Content-Type", content_type)
                    conn.putheader("Content-Length", str(length))
                    conn.endheaders()
                    for chunk in chunks:
                        conn.send(chunk)
                    sent = True
                    reply = conn.getresponse()
                    return self._read(reply)
                except _STALE:
                    # A kept-alive connection the peer closed before it had our whole request: a plain
                    # body goes again on a new connection (a streamed one cannot be replayed). Once
                    # the request is out, a close may follow its processing (a peer killed before it
                    # answered), and a POST is not sent twice: the caller learns it may have been done.
                    reply = None
                    if sent or not (reused and isinstance(chunks, list)):
                        raise TransportError(f"{self.url} failed: connection closed",
                                             maybe_processed=sent) from None
                except (OSError, http.client.HTTPException) as e:
                    reply = None
                    what = "timed out" if isinstance(e, socket.timeout) else f"failed: {e}"
                    raise TransportError(f"{self.url} {what}", maybe_processed=sent) from None
                finally:
                    self._release(conn, reply)
        finally:
            if isinstance(chunks, mtom.StreamedBody):
                chunks.close()

    def _read(self, reply: http.client.HTTPResponse) -> Response:
        content_type = reply.getheader("Content-Type", "")
        length = reply.getheader("Content-Length")
        attachments: dict[str, mtom.Attachment] = {}
        try:
            if mtom.is_multipart(content_type):
                message = mtom.read_multipart(reply, content_type, self.spool_dir,
                                              int(length) if length else None, self.max_response_bytes,
                                              self.memory_budget)
                raw, attachments = message.root, message.attachments
            else:
                raw = reply.read(self.max_response_bytes + 1)
                if len(raw) > self.max_response_bytes:
                    raise TransportError(f"{self.url} answered more than {self.max_response_bytes} bytes",
                                         maybe_processed=True)
            envelope = soap.read_envelope(xmlsafe.parse(raw, self.max_response_bytes))
        except (mtom.MtomError, xmlsafe.UnsafeXml, soap.SoapFault) as e:
            mtom.SpooledMessage(b"", "", attachments).discard()
            raise TransportError(f"{self.url} answered HTTP {reply.status} that is not SOAP 1.2: {e}",
                                 maybe_processed=True) from None
        fault = ""
        if envelope.body.tag == f"{{{ns.SOAP12}}}Fault":
            reason = envelope.body.findtext(f"{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text")
            fault = (reason or "SOAP Fault").strip()
        return Response(reply.status, envelope, fault, attachments)
