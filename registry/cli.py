"""``xdsi serve registry``: wire the registry's doors to its core and run them."""
from __future__ import annotations

import logging
import os

from affinity_domain.audit import hl7v2 as audit_hl7
from affinity_domain import audit, db, health as probes, hl7, logs, metrics, serving
from affinity_domain.config import Config, build_settings
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer, limits_of
from affinity_domain.xua import xua_settings

from . import codes, consent_api, feed, service
from .core import Registry
from .settings import RegistrySettings
from .store import Store

log = logging.getLogger("xdsi.registry")


class RegistryActor:
    name = "registry"

    def add_commands(self, sub) -> None:
        registry = sub.add_parser("registry", help="document registry administration")
        rsub = registry.add_subparsers(dest="registry_command", required=True)
        consent = rsub.add_parser("consent", help="record a patient's opt-out (or opt-in) of document sharing")
        consent.add_argument("--patient", required=True, help="the patient id in the affinity domain (CX)")
        choice = consent.add_mutually_exclusive_group(required=True)
        choice.add_argument("--opt-out", dest="opt_out", action="store_true")
        choice.add_argument("--opt-in", dest="opt_out", action="store_false")
        consent.add_argument("--by", required=True, help="who records it")
        consent.set_defaults(run=_consent)

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        return _endpoints(build_settings(RegistrySettings, config))

    def serve(self, config: Config) -> int:
        s = build_settings(RegistrySettings, config)   # a configuration mistake stops us before anything starts
        logs.setup("registry")
        domain = s.domain.assigning_authority
        url = db.database_url(config)
        db.migrate(url, "registry", "registry")
        # A bad codes_file stops the start here, before any worker forks.
        code_sets = codes.from_config(s.validate_codes, s.codes_file)
        health = serving.observability(config.data_dir, self.name)
        sock = serving.listen(s.host, s.port)
        audit.start(config, self.name)
        workers = serving.fork_workers(s.workers - 1, health)
        pool = db.open_pool(url, "registry", max_size=s.threads + 2)
        read_pool = db.open_pool(url, "registry", max_size=s.threads + 2, read_only=True)
        store = Store(pool, s.max_query_results, read_pool)
        registry = Registry(store, code_sets, domain)
        door = service.door(registry, s.max_request_bytes, s.max_mtom_parts, s.max_mtom_header_bytes,
                            xua_settings(config, "registry"), frozenset(s.multi_patient_roles))
        app = serving.with_status(_beside(serving.path_app(s.path, door), consent_api.app(registry)), health)
        http = serving.http_server(app, sock, s.threads, serving.http_limits(s, s.max_request_bytes))
        if workers is None:  # a forked worker: HTTP only; skip the parent's atexit hooks on exit
            serving.run_until_stopped([http], [pool.close, read_pool.close, health.retire,
                                               lambda: audit.stop(activity=False)])
            os._exit(0)

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"))

        handler = feed.handler(store, domain, s.hl7_senders, s.feed_loopback_senders)
        iti8 = metrics.counted_mllp(audit_hl7.audited(handler, s.feed_host), "ITI-8")
        mllp = serving.bind(lambda: MllpServer((s.feed_host, s.feed_port), iti8, oversize,
                                               limits=limits_of(s, "feed_")), s.feed_host, s.feed_port)
        health.register(probes.threads(feed=mllp.start()))
        for label, where in _endpoints(s):
            log.info("listening", extra={"endpoint": label, "at": where, "workers": len(workers) + 1})
        serving.run_until_stopped([http], [lambda: serving.stop_workers(workers), mllp.shutdown, pool.close,
                                           read_pool.close, health.retire, audit.stop])
        return 0


def _beside(soap_app, consent_app):
    """The consent API at /consent..., the SOAP door at its path."""
    def routed(environ, start_response):
        path = environ.get("PATH_INFO", "")
        return (consent_app if path == "/consent" or path.startswith("/consent/") else soap_app)(
            environ, start_response)
    return routed


def _consent(config: Config, args) -> int:
    """``xdsi registry consent``: record a patient's choice in the registry's database."""
    s = build_settings(RegistrySettings, config)
    url = db.database_url(config)
    db.migrate(url, "registry", "registry")
    with db.open_pool(url, "registry", max_size=1) as pool:
        Registry(Store(pool), codes.CodeSets(), s.domain.assigning_authority).set_consent(
            args.patient, args.opt_out, args.by)
    print(f"{args.patient}: {'opted out' if args.opt_out else 'opted in'} (by {args.by})")
    return 0


def _endpoints(s: RegistrySettings) -> list[tuple[str, str]]:
    return [("ITI-42/18/51/57 (SOAP 1.2)", f"http://{s.host}:{s.port}{s.path}"),
            ("ITI-8 feed (MLLP)", f"{s.feed_host}:{s.feed_port}")]


actor = RegistryActor()
