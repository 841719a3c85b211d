"""ITI-81 over HTTP: ``GET /AuditEvent?…`` (a FHIR searchset Bundle, JSON) and ``GET /AuditEvent/ID``."""
from __future__ import annotations

import json
import logging

from affinity_domain.audit import events
from affinity_domain.audit.message import Participant

from . import fhir
from .store import Store

log = logging.getLogger("xdsi.audit")
FHIR_JSON = "application/fhir+json"


def app(store: Store, max_results: int, max_message_bytes: int, counters=None, record=None):
    """``record``: how the repository stores its own audit records (each search and read is an Audit Log Used)."""
    def used(environ) -> None:
        if record is not None:
            peer = environ.get("REMOTE_ADDR", "")
            query = environ.get("QUERY_STRING", "")
            where = f"http://{environ.get('HTTP_HOST', '')}{environ.get('PATH_INFO', '')}"
            where += f"?{query}" if query else ""
            record(events.audit_log_used(user=Participant(peer or "unknown", True, host=peer or None), log=where))

    def respond(start_response, status: str, body: dict):
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", FHIR_JSON), ("Content-Length", str(len(data)))])
        return [data]

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/")
        if path == "/health":
            return respond(start_response, "200 OK", {"status": "up", **(counters.snapshot() if counters else {})})
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return respond(start_response, "405 Method Not Allowed",
                           fhir.operation_outcome("only GET (search and read)", "not-supported"))
        if path == "/AuditEvent":
            try:
                criteria = fhir.criteria(environ.get("QUERY_STRING", ""), max_results)
            except (fhir.SearchError, ValueError) as e:
                return respond(start_response, "400 Bad Request", fhir.operation_outcome(str(e)))
            rows = store.search(criteria)
            used(environ)
            events = [fhir.audit_event(r["id"], bytes(r["message"]), max_message_bytes) for r in rows]
            url = "AuditEvent" + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
            return respond(start_response, "200 OK", fhir.bundle(events, url))
        head, _, ident = path.rpartition("/")
        if head == "/AuditEvent" and ident.isdigit() and len(ident) < 19:
            found = store.get(int(ident))
            if found is None:
                return respond(start_response, "404 Not Found",
                               fhir.operation_outcome(f"no AuditEvent {ident}", "not-found"))
            used(environ)
            return respond(start_response, "200 OK",
                           fhir.audit_event(found["id"], bytes(found["message"]), max_message_bytes))
        return respond(start_response, "404 Not Found",
                       fhir.operation_outcome("the repository answers /AuditEvent", "not-found"))

    return application
