"""ITI-19 Authenticate Node: mutual TLS settings, the server and client contexts every door and
client wraps its sockets with, the handshake with its timeout and the reason of a refusal, the
peer's identity, and the rule that keeps plain listeners on loopback. Nothing here opens a socket
or a listener: the doors do, and decide with these.

The TLS 1.2 cipher suites are those of the ATNA "STX: TLS 1.2 Floor using BCP195" option (ITI TF-2
3.19.6.2.3) that RFC 9325 4.2 recommends: ECDHE key exchange with an AEAD cipher. The option's two
TLS_DHE_RSA suites are left out (finite-field DHE in TLS 1.2 is deprecated by the TLS working
group's update of RFC 9325, draft-ietf-tls-deprecate-obsolete-kex); the ECDHE_ECDSA and
CHACHA20-POLY1305 variants are in, for EC certificates and peers without AES hardware. No CBC,
no RSA key transport. TLS 1.3, preferred when both sides have it, only has AEAD suites.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from .config import Config, ConfigError, Seconds, build_overlaid

log = logging.getLogger("xdsi.tls")

# OpenSSL names; IANA: TLS_ECDHE_{RSA,ECDSA}_WITH_AES_{128,256}_GCM_SHA{256,384} and
# TLS_ECDHE_{RSA,ECDSA}_WITH_CHACHA20_POLY1305_SHA256.
BCP195_TLS12_CIPHERS = (
    "ECDHE-RSA-AES128-GCM-SHA256",      # ITI TF-2 3.19.6.2.3
    "ECDHE-RSA-AES256-GCM-SHA384",      # ITI TF-2 3.19.6.2.3
    "ECDHE-ECDSA-AES128-GCM-SHA256",    # RFC 9325 4.2
    "ECDHE-ECDSA-AES256-GCM-SHA384",    # RFC 9325 4.2
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
)


@dataclass(frozen=True)
class TlsSettings:
    """``[tls]``, with an actor's ``[ACTOR.tls]`` over it (``tls_settings``)."""

    SECTION: ClassVar[str] = "tls"
    cert: str
    key: str
    ca: str
    require_client_cert: bool
    allow_plaintext: bool
    handshake_timeout: Seconds

    def __post_init__(self):
        if not self.cert:
            for key in ("key", "ca"):
                if getattr(self, key):
                    raise ConfigError(f"[tls] {key} is set but [tls] cert is not: set all of cert, key and ca")
            return
        if not self.ca:
            raise ConfigError("[tls] ca: required with [tls] cert (peers' certificates are checked against it)")
        for key in ("cert", "key", "ca"):
            path = getattr(self, key)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"[tls] {key} = {path!r}: no such readable file")

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


def tls_settings(config: Config, actor: str) -> TlsSettings:
    """The TLS settings of one actor (its section's name: ``registry``, ``imaging_source``, …)."""
    return build_overlaid(TlsSettings, config, actor)


def _secure(context: ssl.SSLContext, settings: TlsSettings) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(BCP195_TLS12_CIPHERS))
    # No TLS-level compression (CRIME) nor renegotiation (RFC 9325 3.3, 3.5).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(settings.cert, settings.key or None)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"[tls] cert/key ({settings.cert}, {settings.key or 'key in the cert file'}): {e}") from None
    try:
        context.load_verify_locations(cafile=settings.ca)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"[tls] ca = {settings.ca!r}: {e}") from None
    return context


def _require(settings: TlsSettings) -> None:
    if not settings.enabled:
        raise ConfigError("TLS is not configured: set [tls] cert, key and ca")


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """What a listener wraps its accepted sockets with. With ``require_client_cert`` a peer without
    a certificate the CA signed is refused at the handshake; without it, one is asked for and, if
    sent, must chain to the CA."""
    _require(settings)
    context = _secure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    context.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """What an outbound connection wraps its socket with: our certificate for the peer to check,
    the peer's checked against the CA and against the host name or address we dialled (pass it
    as ``server_hostname``)."""
    _require(settings)
    context = _secure(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def handshake(sock: socket.socket, context: ssl.SSLContext, timeout: float, server_side: bool = True,
              server_hostname: str | None = None) -> ssl.SSLSocket:
    """``sock`` wrapped and its handshake done within ``timeout`` seconds (a peer that connects and
    says nothing does not hold a thread). The socket's own timeout is restored after. Raises
    ``ssl.SSLError`` (see ``refusal``), ``TimeoutError`` or ``OSError``."""
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    tls = context.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname,
                              do_handshake_on_connect=False)   # sock is detached: tls owns the connection
    try:
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    tls.settimeout(previous)
    return tls


def accept(sock: socket.socket, context: ssl.SSLContext, timeout: float, peer: tuple, listener: str,
           on_refused: Callable[[tuple, str], None] | None = None) -> ssl.SSLSocket | None:
    """The server side of ``handshake`` for an accepted connection: the TLS socket, or None once a
    refusal is logged, reported to ``on_refused`` (the Security Alert) and the socket closed."""
    try:
        return handshake(sock, context, timeout)
    except (OSError, ValueError) as e:      # ssl.SSLError and TimeoutError are OSErrors
        why = refusal(e)
        log.warning("%s connection from %s refused: %s", listener, peer[0], why)
        if on_refused:
            on_refused(peer, why)
        sock.close()
        return None


# OpenSSL's reason for a failed handshake, in words for the log and the Security Alert audit record.
_REFUSALS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate",
    "CERTIFICATE_VERIFY_FAILED": "the peer's certificate is not signed by our CA (or is expired or not for it)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer wants a certificate from us",
    "UNSUPPORTED_PROTOCOL": "the peer offered only a TLS version below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer has no TLS version we accept",
    "NO_SHARED_CIPHER": "the peer offered no BCP195 cipher suite",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer has no cipher suite we offered",
    "HTTP_REQUEST": "a plain HTTP request on a TLS port",
    "WRONG_VERSION_NUMBER": "not TLS (a plain connection on a TLS port?)",
}


def refusal(error: BaseException) -> str:
    """Why a handshake failed, in a sentence; OpenSSL's reason code is kept in brackets."""
    if isinstance(error, ssl.SSLCertVerificationError) and "Hostname mismatch" in str(error):
        return f"the peer's certificate is not for the host we dialled [{error.verify_message}]"
    reason = getattr(error, "reason", None)
    if isinstance(error, ssl.SSLError) and reason:
        return f"{_REFUSALS.get(reason, 'TLS handshake failed')} [{reason}]"
    if isinstance(error, TimeoutError):
        return "the peer did not finish the TLS handshake in time"
    return f"TLS handshake failed: {error}"


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of a verified TLS connection, from its certificate."""

    common_name: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    subject: str = ""       # the whole subject, "CN=…,O=…" in the certificate's order
    issuer: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the certificate gives its holder, for access rules to match against."""
        return tuple(dict.fromkeys(n for n in (self.common_name, *self.dns_names, *self.ip_addresses, *self.uris)
                                   if n))


_DN_LABELS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
              "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}


def _dn(name: tuple) -> tuple[str, str]:
    parts, cn = [], ""
    for rdn in name:
        for key, value in rdn:
            parts.append(f"{_DN_LABELS.get(key, key)}={value}")
            if key == "commonName" and not cn:
                cn = value
    return ",".join(parts), cn


def peer_identity(cert: dict | None) -> PeerIdentity | None:
    """The identity in ``SSLSocket.getpeercert()`` (a dict, filled only for a verified peer);
    None when the peer sent no certificate."""
    if not cert:
        return None
    subject, cn = _dn(cert.get("subject", ()))
    issuer, _ = _dn(cert.get("issuer", ()))
    sans = cert.get("subjectAltName", ())
    return PeerIdentity(common_name=cn, subject=subject, issuer=issuer,
                        dns_names=tuple(v for k, v in sans if k == "DNS"),
                        ip_addresses=tuple(v.strip() for k, v in sans if k == "IP Address"),
                        uris=tuple(v for k, v in sans if k == "URI"))


def is_loopback(host: str) -> bool:
    """A host that only this machine can reach. A name other than ``localhost`` counts as not
    (its address is not known without a lookup); so do ``0.0.0.0``, ``::`` and the empty host."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def plaintext_refusal(host: str, port: int, settings: TlsSettings, listener: str) -> str | None:
    """Why a listener may not start, or None. A plain listener (no ``[tls] cert``) off loopback
    needs ``[tls] allow_plaintext = true``."""
    if settings.enabled or settings.allow_plaintext or is_loopback(host):
        return None
    return (f"{listener}: refusing to listen on {host or '*'}:{port} without TLS; set [tls] cert, key and ca "
            f"(xdsi certs --out DIR makes a test set), or [tls] allow_plaintext = true")


def plaintext_warning(host: str, port: int, settings: TlsSettings, listener: str) -> str | None:
    """What the log says when a plain listener off loopback starts because it was allowed."""
    if settings.enabled or is_loopback(host):
        return None
    return (f"{listener}: listening on {host or '*'}:{port} WITHOUT TLS, as [tls] allow_plaintext = true allows: "
            f"anyone on the network can read and send")
