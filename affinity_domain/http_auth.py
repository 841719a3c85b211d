"""Authentication and roles at a JSON door (WSGI, around a ``web.Router``).

A request carries ``Authorization: Bearer <token>`` (``tokens.TokenStore``), or, under TLS, a client
certificate whose subject ``[access] subjects`` maps to a role. ``rules`` say which role each
(method, path) needs (``access.allowed``: a higher role allows what a lower one does). No credentials
or an unknown token: 401 with ``WWW-Authenticate: Bearer`` (RFC 6750); the wrong role: 403. Both are
logged and audited. The handler finds the caller in ``environ[USER]`` (an ``Identity``): who decided
is that, never a field of the body.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

from . import audit, web
from .access import HTTP_ROLES, allowed, refusal_alert
from .audit import events
from .audit_codes import MINOR_FAILURE
from .config import Config, ConfigError, build_settings
from .tokens import Identity, TokenStore

log = logging.getLogger("xdsi.http")
USER = "xdsi.user"          # the environ key of the caller's Identity
PEER = "xdsi.peer"          # the TLS door's PeerIdentity of the client certificate (None: none sent)
REALM = 'Bearer realm="xdsi"'


@dataclass(frozen=True)
class AccessSettings:
    SECTION: ClassVar[str] = "access"
    subjects: dict[str, str]             # client certificate subject -> role

    def __post_init__(self):
        for subject, role in self.subjects.items():
            if role not in HTTP_ROLES:
                raise ConfigError(f"[access] subjects.{subject!r} = {role!r}: use one of {', '.join(HTTP_ROLES)}")


def protect(app, rules, config: Config, url: str, actor: str):
    """``guard`` with the domain's tokens and ``[access]``; returns (the app, the token store to close)."""
    settings = build_settings(AccessSettings, config)
    store = TokenStore(url)
    return guard(app, rules, store.lookup, settings.subjects, actor), store


def identity(environ, lookup: Callable[[str], Identity | None],
             subjects: dict[str, str]) -> tuple[Identity | None, str]:
    """(the caller, "") or (None, why not)."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "the Authorization header is not a bearer token"
        found = lookup(token.strip())
        return (found, "") if found else (None, "unknown token")
    peer = environ.get(PEER)
    if peer is not None:
        role = subjects.get(peer.subject)
        if role:
            return Identity(peer.common_name or peer.subject, role, "certificate"), ""
        return None, f"certificate subject {peer.subject!r} has no role ([access] subjects)"
    return None, "no credentials"


def guard(app, rules: Iterable[tuple[str, str, str]], lookup, subjects: dict[str, str], actor: str):
    """``app`` behind authentication: ``rules`` are (method, path regex, role needed); a request no
    rule names needs the highest role (``operator``)."""
    compiled = [(method, re.compile(pattern), role) for method, pattern, role in rules]

    def needed(method: str, path: str) -> str:
        for m, pattern, role in compiled:
            if m == method and pattern.fullmatch(path):
                return role
        return "operator"

    def wsgi(environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        host = environ.get("REMOTE_ADDR", "")
        try:
            who, why = identity(environ, lookup, subjects)
        except Exception:
            log.exception("credentials could not be checked")
            return web.respond(start_response, "503 Service Unavailable",
                               {"error": "credentials cannot be checked now"})
        if who is None:
            log.warning("HTTP request refused: not authenticated", extra={"path": path, "method": method,
                                                                          "host": host, "reason": why})
            audit.record(events.user_authentication(login=True, user=events.source("-", host=host),
                                                    node=events.destination(actor), outcome=MINOR_FAILURE,
                                                    description=f"{method} {path}: {why}"))
            challenge = REALM + (', error="invalid_token"' if why == "unknown token" else "")
            return web.respond(start_response, "401 Unauthorized", {"error": f"authenticate: {why}"},
                               [("WWW-Authenticate", challenge)])
        role = needed(method, path)
        if not allowed(role, who.role):
            log.warning("HTTP request refused: role", extra={"path": path, "method": method, "host": host,
                                                             "user": who.name, "role": who.role, "needed": role})
            audit.record(refusal_alert(reporter=actor, who=who.name, host=host,
                                       description=f"{method} {path} needs the role {role}; {who.name} is {who.role}"))
            return web.respond(start_response, "403 Forbidden",
                               {"error": f"{method} {path} needs the role {role} (you are {who.role})"})
        environ[USER] = who
        return app(environ, start_response)
    return wsgi


def caller(environ) -> str:
    """The authenticated name of the request (what ``by`` is)."""
    who = environ.get(USER)
    if who is None:
        raise web.HttpError("401 Unauthorized", "authenticate", [("WWW-Authenticate", REALM)])
    return who.name


def authorized(url: str, **kwargs):
    """A ``urllib`` request carrying the bearer token of ``$XDSI_TOKEN``, for the ``xdsi`` commands that
    call a JSON door (``xdsi token add NAME --role ROLE`` makes one)."""
    import os
    import urllib.request
    request = urllib.request.Request(url, **kwargs)
    if os.environ.get("XDSI_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['XDSI_TOKEN'].strip()}")
    return request
