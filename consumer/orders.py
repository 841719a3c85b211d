"""The consumer's doors: HL7 orders over MLLP (ORM^O01, OMI^O23) and the JSON HTTP API."""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qs

from affinity_domain import hl7
from affinity_domain.hl7 import Cx, Hl7Error

from . import jobs
from .flow import Prefetcher

log = logging.getLogger("xdsi.consumer")
ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}


def local_patient(raw: bytes, local_authority: str) -> Cx:
    """The ordered patient's id in this site's domain (PID-3; an id without authority is local)."""
    pid = hl7.first_segment(hl7.decode(raw), "PID")
    if pid is None or len(pid) < 4 or not pid[3]:
        raise Hl7Error("PID-3 is required", code="101", location="PID^1^3")
    for rep in pid[3].split("~"):
        cx = Cx.parse(rep)
        if cx.id and cx.authority in ("", local_authority):
            return Cx(cx.id, local_authority)
    raise Hl7Error(f"PID-3 has no identifier of this site's domain {local_authority}", code="204",
                   location="PID^1^3")


def start_fetch(prefetcher: Prefetcher, trigger: str, patient: Cx, since: str = "",
                modalities: list[str] = ()) -> int:
    """Record the fetch (durable); a worker searches it, so the caller answers at once."""
    fetch = prefetcher.store.new_fetch(trigger, str(patient), since, [m.upper() for m in modalities])
    prefetcher.wake.set()
    return fetch


def order_handler(prefetcher: Prefetcher):
    def handle(raw: bytes) -> bytes:
        msh = hl7.msh_fields(raw)
        kind = tuple(msh["type"].split("^")[:2])
        try:
            hl7.check_structure(raw)
            if kind not in ORDER_TYPES:
                raise Hl7Error(f"{'^'.join(kind)} is not an order this consumer takes", code="200",
                               location="MSH^1^9", ack="AR")
            patient = local_patient(raw, prefetcher.s.local_assigning_authority)
            fetch = start_fetch(prefetcher, f"order {msh['control_id']}", patient)
            log.info("order", extra={"patient": str(patient), "fetch": fetch})
            return hl7.ack(raw, "AA", application="XDSI_CONSUMER")
        except Hl7Error as e:
            return hl7.ack(raw, e.ack, e, application="XDSI_CONSUMER")
    return handle


_FETCH = re.compile(r"^/fetches/(\d+)$")
_JOB = re.compile(r"^/jobs/(\d+)$")


def http_app(prefetcher: Prefetcher):
    """POST /fetches {"patient": CX, "since": DTM, "modalities": [..]}; GET /fetches, /fetches/<id> (its jobs and
    progress), /jobs[?fetch=N][&patient=CX], /jobs/<id>, /health."""
    store = prefetcher.store

    def respond(start_response, status, body):
        data = json.dumps(body, default=str, indent=1).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def app(environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/fetches" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                patient = Cx.parse(body["patient"])
            except (ValueError, KeyError, json.JSONDecodeError):
                return respond(start_response, "400 Bad Request", {"error": 'send {"patient": "ID^^^&OID&ISO"}'})
            if patient.authority != prefetcher.s.local_assigning_authority:
                return respond(start_response, "400 Bad Request",
                               {"error": f"the patient id must be in {prefetcher.s.local_assigning_authority}"})
            return respond(start_response, "202 Accepted",
                           {"fetch": start_fetch(prefetcher, "http", patient, body.get("since", ""),
                                                      body.get("modalities") or [])})
        if path == "/fetches":
            return respond(start_response, "200 OK", store.fetches())
        m = _FETCH.match(path)
        if m:
            fetch = store.fetch(int(m.group(1)))
            if fetch is None:
                return respond(start_response, "404 Not Found", {"error": "no such fetch"})
            found = store.jobs(int(m.group(1)))
            return respond(start_response, "200 OK", {**fetch, "progress": jobs.fetch_summary(fetch, found),
                                                      "jobs": found})
        m = _JOB.match(path)
        if m:
            job = store.job(int(m.group(1)))
            return respond(start_response, "200 OK" if job else "404 Not Found", job or {"error": "no such job"})
        if path == "/jobs":
            q = parse_qs(environ.get("QUERY_STRING", ""))
            return respond(start_response, "200 OK", store.jobs(int(q["fetch"][0]) if "fetch" in q else None,
                                                                q["patient"][0] if "patient" in q else None))
        if path == "/health":
            return respond(start_response, "200 OK", {"status": "ok"})
        return respond(start_response, "404 Not Found", {"error": "not found", "see": http_app.__doc__})
    return app
