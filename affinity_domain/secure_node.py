"""This process as an ATNA Secure Node (ITI-19): the actor's ``[tls]`` settings, set once by its
``serve()`` (``setup``), which every listener and every outbound client of the process then uses.
One actor is one node with one certificate, so the doors and clients ask here rather than have the
settings passed down to each of them.

- Listeners: ``check_listener`` (no plain listener off loopback unless ``allow_plaintext``),
  ``server_context`` and ``on_refused`` (a refused handshake is audited as a Security Alert).
- Clients: ``client_context`` (None without TLS), ``dicom_tls_args`` for pynetdicom's associate,
  ``url`` (a peer's ``http://`` URL is dialled as ``https://`` with TLS on)."""
from __future__ import annotations

import logging
import socket
import ssl
import urllib.request

from . import audit, audit_codes, tls
from .audit.message import Participant
from .config import Config, ConfigError
from .tls import TlsSettings

log = logging.getLogger("xdsi.tls")
PLAIN = TlsSettings(cert="", key="", ca="", require_client_cert=True, allow_plaintext=False, handshake_timeout=10.0)

_settings: TlsSettings = PLAIN
_actor = ""
_server: ssl.SSLContext | None = None
_client: ssl.SSLContext | None = None


def setup(config: Config, actor: str) -> TlsSettings:
    """Read ``[tls]`` (with ``[ACTOR.tls]`` over it) and build the contexts: a wrong path or key is a
    configuration error now, before anything listens."""
    return use(tls.tls_settings(config, actor), actor)


def use(settings: TlsSettings, actor: str = "") -> TlsSettings:
    global _settings, _actor, _server, _client
    server = tls.server_context(settings) if settings.enabled else None
    client = tls.client_context(settings) if settings.enabled else None
    _settings, _actor, _server, _client = settings, actor, server, client
    return settings


def urlopen(request: urllib.request.Request | str, timeout: float = 30.0):
    """``urllib.request.urlopen`` as this node dials: https with its certificate while TLS is on (the
    commands' JSON calls)."""
    if isinstance(request, str):
        request = urllib.request.Request(request)
    request.full_url = url(request.full_url)
    return urllib.request.urlopen(request, timeout=timeout, context=_client)


def settings() -> TlsSettings:
    return _settings


def enabled() -> bool:
    return _settings.enabled


def server_context() -> ssl.SSLContext | None:
    return _server


def client_context() -> ssl.SSLContext | None:
    return _client


def handshake_timeout() -> float:
    return float(_settings.handshake_timeout)


def check_listener(host: str, port: int, listener: str, settings: TlsSettings | None = None) -> None:
    """Raise ConfigError for a plain listener off loopback (unless allowed); log the allowed one."""
    settings = settings or _settings
    why = tls.plaintext_refusal(host, port, settings, listener)
    if why:
        log.error(why)
        raise ConfigError(why)
    warning = tls.plaintext_warning(host, port, settings, listener)
    if warning:
        log.warning(warning)


def on_refused(listener: str):
    """What a TLS listener calls with a refused peer: a Security Alert (Node Authentication failed)."""
    def report(peer: tuple, why: str) -> None:
        host = str(peer[0]) if peer else ""
        audit.record(audit.events.security_alert(
            kind=audit_codes.NODE_AUTHENTICATION,
            reporter=Participant(_actor or "xdsi", False, host=socket.gethostname()),
            performers=(Participant(host or "unknown", True, host=host or None),),
            subject=f"{host}:{peer[1]}" if peer and len(peer) > 1 else host,
            description=f"{listener}: TLS handshake refused: {why}"))
    return report


def url(address: str) -> str:
    """A peer's URL as this node dials it: ``https://`` when TLS is on, whatever the configuration says."""
    if _client is not None and address.startswith("http://"):
        return "https://" + address[len("http://"):]
    return address


def shown(where: str, settings: TlsSettings) -> str:
    """An endpoint as printed and recorded for ``xdsi status``: ``https://`` under TLS."""
    if settings.enabled and where.startswith("http://"):
        return "https://" + where[len("http://"):]
    return where


def wrap_client(sock: socket.socket, host: str, timeout: float) -> socket.socket:
    """``sock`` (connected to ``host``) with the client handshake done, or as it is without TLS."""
    if _client is None:
        return sock
    return tls.handshake(sock, _client, timeout, server_side=False, server_hostname=host)


def dicom_tls_args(host: str) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``associate(..., tls_args=…)``: None (plain) without TLS."""
    return (_client, host) if _client is not None else None
