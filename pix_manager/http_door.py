"""The PIX manager's HTTP door (review queue and admin), JSON over plain WSGI (``affinity_domain.web``).

GET  /review[?status=open|linked|broken|]   the queue
GET  /review/<id>                            one item: both identities, their persons, the explanation
POST /review/<id>/link                       same patient
POST /review/<id>/break                      different patients
GET  /persons?domain=OID&pid=ID              a person and every linked identity, with explanations
POST /persons/unlink {"domain": OID, "pid": ID}   a wrong link undone, remembered
POST /match {"family", "given", "birth_date", "sex", "postal_code", "city", "street", "phone",
             "national_id", "domain", "limit"}   a dry run: the candidates, scored and explained;
                                                 nothing is registered
GET  /health, /metrics                       (beside it, from serving.with_status; open)

Every other request is authenticated (``affinity_domain.http_auth``, ``RULES``): reading needs the role
reader; a decision, and the dry-run match (it probes every patient's demographics), reviewer. A decision
is attributed to the caller; a "by" in the body is ignored.
"""
from __future__ import annotations

from affinity_domain import audit, audit_codes, http_auth, web
from affinity_domain.audit import events as audit_events

from .demographics import Demographics, normalise
from .index import PatientIndex

REVIEW_STATUSES = ("open", "linked", "broken", "")
RULES = [("GET", r"/review(/[^/]+)?", "reader"), ("GET", "/persons", "reader"),
         ("POST", r"/review/[^/]+/(link|break)", "reviewer"), ("POST", "/persons/unlink", "reviewer"),
         ("POST", "/match", "reviewer")]


def app(index: PatientIndex, max_json_bytes: int = 65536) -> web.Router:
    router = web.Router(__doc__)

    def queue(environ):
        status = web.query(environ).get("status", "open")
        if status not in REVIEW_STATUSES:
            raise web.bad(f"status must be one of open, linked, broken or empty (all), not {status!r}")
        return "200 OK", index.store.reviews(status)

    def item(environ, item_id):
        found = index.store.review(web.identifier(item_id, "the review item"))
        if found is None:
            raise web.HttpError("404 Not Found", "no such review item")
        return "200 OK", found

    def person(environ):
        params = web.query(environ)
        domain, pid = params.get("domain", ""), params.get("pid", "")
        if not domain or not pid:
            raise web.bad("say which identity: ?domain=OID&pid=ID")
        found = index.store.person(domain, pid)
        _patient_record(environ, audit_codes.READ, [_cx(pid, domain)], None,
                        audit_codes.SUCCESS if found else audit_codes.MINOR_FAILURE)
        if found is None:
            raise web.HttpError("404 Not Found", f"no identity {pid} in {domain}")
        return "200 OK", found

    def decision(environ) -> tuple[dict, str]:
        body = web.json_object(environ, max_json_bytes, empty={})
        return body, http_auth.caller(environ)   # every decision is attributed, to who authenticated

    def decide(verdict):
        def handle(environ, item_id):
            _, who = decision(environ)
            act = index.link if verdict == "link" else index.break_link
            number = web.identifier(item_id, "the review item")
            found = index.store.review(number) or {}
            pair = [_cx(found[f"{side}_pid"], found[f"{side}_domain"]) for side in ("identity", "candidate")
                    if found.get(f"{side}_pid")]
            try:
                result = act(number, who)
            except KeyError:
                _patient_record(environ, audit_codes.UPDATE, pair, who, audit_codes.MINOR_FAILURE, "no such item")
                raise web.HttpError("404 Not Found", "no such review item") from None
            _patient_record(environ, audit_codes.UPDATE, pair, who, audit_codes.SUCCESS, f"review {verdict}")
            return "200 OK", {"result": result}
        return handle

    def unlink(environ):
        body, who = decision(environ)
        domain, pid = web.text(body, "domain", required=True), web.text(body, "pid", required=True)
        try:
            result = index.unlink(domain, pid, who)
        except KeyError:
            _patient_record(environ, audit_codes.UPDATE, [_cx(pid, domain)], who, audit_codes.MINOR_FAILURE,
                            "no such identity")
            raise web.HttpError("404 Not Found", f"no identity {pid} in {domain}") from None
        _patient_record(environ, audit_codes.UPDATE, [_cx(pid, domain)], who, audit_codes.SUCCESS, "unlink")
        return "200 OK", {"result": result}

    def match(environ):
        body = web.json_object(environ, max_json_bytes)
        d = normalise(**{name: web.text(body, name) for name in Demographics.__dataclass_fields__})
        if not any(d.as_dict().values()):
            raise web.bad("say who to match: family, given, birth_date, ...")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise web.bad("limit must be an integer from 1 to 100")
        return "200 OK", index.dry_run(d, web.text(body, "domain"), limit)

    router.add("/review", "GET", queue)
    router.add(r"/review/([^/]+)", "GET", item)
    router.add(r"/review/([^/]+)/link", "POST", decide("link"))
    router.add(r"/review/([^/]+)/break", "POST", decide("break"))
    router.add("/persons", "GET", person)
    router.add("/persons/unlink", "POST", unlink)
    router.add("/match", "POST", match)
    return router


def _cx(pid: str, domain: str) -> str:
    return f"{pid}^^^&{domain}&ISO"


def _patient_record(environ, action: str, patients: list[str], who: str | None, outcome: int,
                    description: str | None = None) -> None:
    """A Patient Record read or changed through this door: the HTTP client (and who decided) as participants."""
    if not audit.recording():
        return
    client = audit_events.source(environ.get("REMOTE_USER") or who or "anonymous",
                                 host=environ.get("REMOTE_ADDR") or None)
    door = audit_events.destination(f"http://{environ.get('HTTP_HOST', '')}{environ.get('PATH_INFO', '')}")
    audit.record(audit_events.patient_record(action=action, user=client, patients=patients, others=(door,),
                                             outcome=outcome, description=description))
