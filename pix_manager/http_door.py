"""The PIX manager's HTTP door (review queue and admin), JSON over plain WSGI.

GET  /review[?status=open|linked|broken|]   the queue
GET  /review/<id>                            one item: both identities, their persons, the explanation
POST /review/<id>/link   {"by": "name"}      same patient
POST /review/<id>/break  {"by": "name"}      different patients
GET  /persons?domain=OID&pid=ID              a person and every linked identity, with explanations
POST /persons/unlink {"domain": OID, "pid": ID, "by": "name"}   a wrong link undone, remembered
GET  /health
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from .index import PatientIndex

_ACTION = re.compile(r"^/review/(\d+)/(link|break)$")
_ITEM = re.compile(r"^/review/(\d+)$")


def app(index: PatientIndex):
    def respond(start_response, status: str, body) -> list[bytes]:
        data = json.dumps(body, default=str, indent=1).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def wsgi(environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/health":
            return respond(start_response, "200 OK", {"status": "ok"})
        if path == "/review" and method == "GET":
            return respond(start_response, "200 OK", index.store.reviews(params.get("status", "open")))
        if path == "/persons" and method == "GET":
            person = index.store.person(params.get("domain", ""), params.get("pid", ""))
            return respond(start_response, "200 OK" if person else "404 Not Found", person or {"error": "unknown"})
        m = _ITEM.match(path)
        if m and method == "GET":
            item = index.store.review(int(m.group(1)))
            return respond(start_response, "200 OK" if item else "404 Not Found",
                           item or {"error": "no such review item"})
        m = _ACTION.match(path)
        if (m or path == "/persons/unlink") and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
                if not isinstance(body, dict):
                    raise ValueError
            except (ValueError, json.JSONDecodeError):
                return respond(start_response, "400 Bad Request", {"error": "body must be a JSON object"})
            who = str(body.get("by") or "").strip()
            if not who:   # every decision is attributed
                return respond(start_response, "400 Bad Request", {"error": "say who decides: {\"by\": name}"})
            if m is None:
                domain, pid = str(body.get("domain") or ""), str(body.get("pid") or "")
                try:
                    return respond(start_response, "200 OK", {"result": index.unlink(domain, pid, who)})
                except KeyError:
                    return respond(start_response, "404 Not Found", {"error": f"no identity {pid} in {domain}"})
            try:
                decide = index.link if m.group(2) == "link" else index.break_link
                return respond(start_response, "200 OK", {"result": decide(int(m.group(1)), who)})
            except KeyError:
                return respond(start_response, "404 Not Found", {"error": "no such review item"})
        return respond(start_response, "404 Not Found", {"error": "not found", "see": __doc__})
    return wsgi
