"""The TLS contexts audit needs, from ``[tls] cert``, ``key``, ``ca`` and ``require_client_cert``.

Kept to this one module on purpose: the domain-wide TLS context builder (ITI-19) replaces it when it lands."""
from __future__ import annotations

import ssl
from pathlib import Path

from ..config import Config, ConfigError

# BCP 195 (RFC 7525 4.2): TLS 1.2 with ECDHE/DHE and AEAD ciphers; TLS 1.3's own suites are all AEAD.
BCP195_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                  "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")


def tls_files(config: Config) -> tuple[str, str, str] | None:
    """(cert, key, ca) when ``[tls]`` is configured, None when it is not; half a configuration is refused."""
    section = config.section("tls")
    files = tuple(str(section.get(k) or "") for k in ("cert", "key", "ca"))
    if not any(files):
        return None
    for key, path in zip(("cert", "key", "ca"), files):
        if not path:
            raise ConfigError(f"[tls] {key} is not set (cert, key and ca go together)")
        if not Path(path).is_file():
            raise ConfigError(f"[tls] {key} = {path!r}: no such file")
    return files


def _context(purpose: ssl.Purpose, files: tuple[str, str, str]) -> ssl.SSLContext:
    cert, key, ca = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if purpose is ssl.Purpose.SERVER_AUTH
                             else ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"[tls] cert/key/ca cannot be loaded: {e}") from None
    return context


def client_context(config: Config) -> ssl.SSLContext | None:
    """Verifies the peer against ``ca`` and its name, and presents our certificate (mutual TLS)."""
    files = tls_files(config)
    return None if files is None else _context(ssl.Purpose.SERVER_AUTH, files)


def server_context(config: Config) -> ssl.SSLContext | None:
    files = tls_files(config)
    if files is None:
        return None
    context = _context(ssl.Purpose.CLIENT_AUTH, files)
    required = config.section("tls").get("require_client_cert", True)
    context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context
