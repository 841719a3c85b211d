"""The consumer's doors: HL7 orders over MLLP (ORM^O01, OMI^O23) and the JSON HTTP API."""
from __future__ import annotations

import logging
import re

from affinity_domain import access, hl7, mllp, web
from affinity_domain.hl7 import Cx, Hl7Error

from . import jobs
from .flow import Prefetcher

log = logging.getLogger("xdsi.consumer")
ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
# The roles of the HTTP API (affinity_domain.http_auth): starting a fetch is an operator's; reading, a reader's.
RULES = [("GET", r"/fetches(/[^/]+)?", "reader"), ("GET", r"/jobs(/[^/]+)?", "reader"),
         ("POST", "/fetches", "operator")]


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
    """Orders from the senders of ``[consumer.order_senders]`` (access.py), for the site's own authority."""
    s = prefetcher.s

    def handle(raw: bytes) -> bytes:
        msh = hl7.msh_fields(raw)
        kind = tuple(msh["type"].split("^")[:2])
        try:
            host = mllp.peer()
            reason = access.hl7_refusal(s.hl7_senders, s.order_loopback_senders, msh["sending_app"],
                                        msh["sending_facility"], host, {s.local_assigning_authority})
            if reason:
                raise access.hl7_refused("consumer", msh["sending_app"], msh["sending_facility"], host, reason, log)
            hl7.check_structure(raw)
            if kind not in ORDER_TYPES:
                raise Hl7Error(f"{'^'.join(kind)} is not an order this consumer takes", code="200",
                               location="MSH^1^9", ack="AR")
            patient = local_patient(raw, prefetcher.s.local_assigning_authority)
            fetch = start_fetch(prefetcher, f"order {msh['control_id']}", patient)
            log.info("order", extra={"fetch": fetch})
            return hl7.ack(raw, "AA", application="XDSI_CONSUMER")
        except Hl7Error as e:
            return hl7.ack(raw, e.ack, e, application="XDSI_CONSUMER")
    return handle


def http_app(prefetcher: Prefetcher, max_json_bytes: int = 65536) -> web.Router:
    """POST /fetches {"patient": CX, "since": DTM, "modalities": [..]}; GET /fetches, /fetches/<id> (its jobs and
    progress), /jobs[?fetch=N][&patient=CX], /jobs/<id>; /health and /metrics beside it (serving.with_status)."""
    store = prefetcher.store
    local = prefetcher.s.local_assigning_authority
    router = web.Router(http_app.__doc__)

    def new_fetch(environ):
        body = web.json_object(environ, max_json_bytes)
        patient = Cx.parse(web.text(body, "patient", required=True))
        if not patient.id or patient.authority != local:
            raise web.bad(f"patient must be ID^^^&{local}&ISO, an id of this site's domain")
        since = web.text(body, "since")
        if since and not _DTM.fullmatch(since):
            raise web.bad(f"since must be an HL7 DTM (YYYY[MM[DD[HHMM[SS]]]]), not {since!r}")
        fetch = start_fetch(prefetcher, "http", patient, since, web.texts(body, "modalities"))
        return "202 Accepted", {"fetch": fetch}

    def fetch(environ, fetch_id):
        fetch_id = web.identifier(fetch_id, "the fetch")
        found = store.fetch(fetch_id)
        if found is None:
            raise web.HttpError("404 Not Found", "no such fetch")
        found_jobs = store.jobs(fetch_id)
        return "200 OK", {**found, "progress": jobs.fetch_summary(found, found_jobs), "jobs": found_jobs}

    def job(environ, job_id):
        found = store.job(web.identifier(job_id, "the job"))
        if found is None:
            raise web.HttpError("404 Not Found", "no such job")
        return "200 OK", found

    def job_list(environ):
        q = web.query(environ)
        fetch_id = web.identifier(q["fetch"], "fetch") if "fetch" in q else None
        return "200 OK", store.jobs(fetch_id, q.get("patient"))

    router.add("/fetches", "POST", new_fetch)
    router.add("/fetches", "GET", lambda environ: ("200 OK", store.fetches()))
    router.add(r"/fetches/([^/]+)", "GET", fetch)
    router.add("/jobs", "GET", job_list)
    router.add(r"/jobs/([^/]+)", "GET", job)
    return router


_DTM = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?")
