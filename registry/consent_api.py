"""The registry's consent API (JSON, beside its SOAP door on the same port):

    GET  /consent?patient=ID                 the patient's recorded choice
    POST /consent {"patient": ID, "opted_out": true|false, "by": NAME}    record a choice
    POST /consent/withheld {"documents": [uniqueId...], "studies": [studyUID...]}
         -> {"documents": {uid: patient}, "studies": {uid: patient}}: those of opted-out patients
            (asked by the repository before ITI-43 and the imaging source before RAD-69)

Who may call it is one hook, ``authenticate(environ) -> identity``; until the access-control
tokens are in ``web.py`` it is ``loopback_only``: a loopback peer, named by the ``by`` it gives."""
from __future__ import annotations

import ipaddress
import logging
from typing import Callable

from affinity_domain import web

from .core import Registry

log = logging.getLogger("xdsi.registry")
MAX_JSON_BYTES = 1024 * 1024      # withheld: up to some thousands of uids per question
MAX_UIDS = 10000


def loopback_only(environ) -> str:
    """The identity of a caller on this host; anyone else is refused (403)."""
    try:
        loopback = ipaddress.ip_address(environ.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise web.HttpError("403 Forbidden", "the consent API answers loopback callers only")
    return "loopback"


def app(registry: Registry, authenticate: Callable[[dict], str] = loopback_only):
    router = web.Router(__doc__)

    def show(environ):
        authenticate(environ)
        pid = web.query(environ).get("patient", "")
        if not pid:
            raise web.bad("patient is required")
        row = registry.store.consent(pid)
        if row is None:
            return "200 OK", {"patient": pid, "opted_out": False, "by": None, "changed_at": None}
        return "200 OK", {"patient": pid, "opted_out": row[1], "by": row[2], "changed_at": row[3].isoformat()}

    def change(environ):
        identity = authenticate(environ)
        body = web.json_object(environ, MAX_JSON_BYTES)
        pid = web.text(body, "patient", required=True)
        opted_out = body.get("opted_out")
        if not isinstance(opted_out, bool):
            raise web.bad("opted_out must be true or false")
        by = web.text(body, "by", required=identity == "loopback")
        who = f"{by} ({identity})" if by else identity
        registry.set_consent(pid, opted_out, who)
        return "200 OK", {"patient": pid, "opted_out": opted_out, "by": who}

    def withheld(environ):
        authenticate(environ)
        body = web.json_object(environ, MAX_JSON_BYTES)
        documents, studies = web.texts(body, "documents"), web.texts(body, "studies")
        if len(documents) + len(studies) > MAX_UIDS:
            raise web.bad(f"ask about at most {MAX_UIDS} uids at once")
        return "200 OK", registry.store.withheld(documents, studies)

    router.add("/consent", "GET", show)
    router.add("/consent", "POST", change)
    router.add("/consent/withheld", "POST", withheld)
    return router
