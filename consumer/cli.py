"""``xdsi serve consumer`` and ``xdsi consumer fetch``."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import urllib.request

from affinity_domain import access, audit, db, dicom_status, hl7, http_auth, logs, metrics, secure_node, serving, status
from affinity_domain.config import Config, build_settings
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer, limits_of
from affinity_domain.workers import Supervisor, WorkerSettings

from . import dicom, orders
from .flow import Prefetcher
from .settings import ConsumerSettings
from .store import Store

log = logging.getLogger("xdsi.consumer")


def settings(config: Config) -> ConsumerSettings:
    """``[consumer]`` and ``[domain]``, typed and checked; an empty ``spool_dir`` is the data dir's
    ``consumer`` (as the repository's ``store_dir`` is)."""
    s = build_settings(ConsumerSettings, config)
    return s if s.spool_dir else dataclasses.replace(s, spool_dir=str(config.data_dir / "consumer"))


def _work(config: Config, conf: ConsumerSettings, health, report=None) -> tuple[Supervisor, object, Prefetcher]:
    """The job workers: ``conf.workers`` threads of one supervised worker, ``jobs``."""
    pool = db.open_pool(db.database_url(config), "consumer", max_size=conf.workers + 6)
    prefetcher = Prefetcher(Store(pool), conf)
    supervisor = Supervisor(build_settings(WorkerSettings, config), report)
    supervisor.add("jobs", prefetcher.step, threads=conf.workers, queue=prefetcher.store.due_count,
                   quarantined=prefetcher.store.failed_count)
    supervisor.start()
    health.register(supervisor.state)
    return supervisor, pool, prefetcher


class ConsumerActor:
    name = "consumer"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        return _endpoints(build_settings(ConsumerSettings, config))

    def serve(self, config: Config) -> int:
        logs.setup("consumer")
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)    # it logs every association at INFO
        conf = settings(config)   # a configuration mistake stops us before anything starts
        db.migrate(db.database_url(config), "consumer", "consumer")
        conf.spool.mkdir(parents=True, exist_ok=True)
        # Reconciling and storing is CPU-bound Python: more processes use more cores. Fork first.
        health = serving.observability(config.data_dir, self.name)
        audit.start(config, self.name)
        children = serving.fork_workers(max(0, conf.processes - 1), health)
        if children is None:
            logs.setup("consumer")
            supervisor, pool, prefetcher = _work(config, conf, health)
            serving.wait_for_stop()
            prefetcher.wake.set()
            supervisor.stop()
            pool.close()
            health.retire()
            audit.stop(activity=False)
            return 0
        supervisor, pool, prefetcher = _work(config, conf, health,
                                             lambda state: status.record_workers(config.data_dir, self.name, state))
        health.register(prefetcher.store.queue_depths)
        resumed = prefetcher.store.resume()     # one consumer per site: the leases in its schema are its own
        door, tokens = http_auth.protect(orders.http_app(prefetcher, conf.max_json_bytes), orders.RULES, config,
                                         db.database_url(config), "consumer")
        app = serving.with_status(door, health)
        http = serving.http_server(app, serving.listen(conf.http_host, conf.http_port), 4,
                                   serving.http_limits(conf, conf.max_json_bytes))

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"), application="XDSI_CONSUMER")

        taking = metrics.counted_mllp(orders.order_handler(prefetcher), "orders")
        mllp = serving.bind(lambda: MllpServer((conf.host, conf.mllp_port), taking, oversize,
                                               limits=limits_of(conf, "mllp_")), conf.host, conf.mllp_port)
        listener = mllp.start()
        health.register(lambda: {"orders": {"alive": listener.is_alive()}})
        scp = serving.bind(lambda: dicom.start_scp(conf.ae_title, conf.dicom_host, conf.dicom_port, conf.incoming,
                                                   conf.dicom_limits, conf.dicom_max_pdu_bytes,
                                                   conf.dicom_network_timeout,
                                                   access.dicom_gate("consumer", conf.ae_title, conf.dicom_peers,
                                                                     conf.loopback_grant, dicom_status.NOT_AUTHORIZED,
                                                                     log)), conf.dicom_host, conf.dicom_port)
        for label, where in _endpoints(conf):
            log.info("listening", extra={"endpoint": label, "at": where, "resumed_jobs": resumed,
                                         "processes": len(children) + 1, "workers": conf.workers})
        serving.run_until_stopped([http], [mllp.shutdown, scp.shutdown, prefetcher.wake.set, supervisor.stop,
                                           lambda: serving.stop_workers(children), pool.close, tokens.close,
                                           health.retire, audit.stop])
        return 0

    def add_commands(self, sub) -> None:
        c = sub.add_parser("consumer", help="the consumer edge proxy")
        csub = c.add_subparsers(dest="consumer_command", required=True)
        f = csub.add_parser("fetch", help="fetch a patient's outside studies into the local PACS now")
        f.add_argument("--patient", required=True, help="local id, ID^^^&OID&ISO")
        f.add_argument("--since", default="", help="service start time from (DTM)")
        f.add_argument("--modality", action="append", default=[],
                       help="only studies with this modality (repeatable); else the configured rules")
        f.add_argument("--timeout", type=float, default=600)
        f.set_defaults(run=_fetch)
        j = csub.add_parser("jobs", help="the consumer's jobs: state, progress, last error")
        j.add_argument("--patient", default=None, help="only this local patient, ID^^^&OID&ISO")
        j.add_argument("--fetch", type=int, default=None)
        j.add_argument("--history", action="store_true", help="each job's steps too")
        j.set_defaults(run=_jobs)


def _endpoints(conf: ConsumerSettings) -> list[tuple[str, str]]:
    return [("orders ORM/OMI (MLLP)", f"{conf.host}:{conf.mllp_port}"),
            ("fetches and jobs (HTTP)", f"http://{conf.http_host}:{conf.http_port}/fetches"),
            ("C-MOVE destination (DICOM)", f"{conf.ae_title}@{conf.dicom_host}:{conf.dicom_port}")]


def _base(config: Config) -> str:
    conf = build_settings(ConsumerSettings, config)
    return secure_node.url(f"http://{conf.http_host}:{conf.http_port}")


def _get(url: str):
    return json.load(secure_node.urlopen(http_auth.authorized(url), timeout=30))


def _fetch(config: Config, args) -> int:
    base = _base(config)
    request = http_auth.authorized(f"{base}/fetches", method="POST", data=json.dumps(
        {"patient": args.patient, "since": args.since, "modalities": args.modality}).encode())
    try:
        fetch = json.load(secure_node.urlopen(request, timeout=30))["fetch"]
    except urllib.error.HTTPError as e:
        print(f"xdsi: {json.load(e).get('error')}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"xdsi: the consumer at {base} is not reachable ({e})", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        status = _get(f"{base}/fetches/{fetch}")
        p = status["progress"]
        width = 30
        filled = int(width * p["instances_done"] / p["instances_total"]) if p["instances_total"] else 0
        sys.stdout.write(f"\r fetch {fetch} {status['state']:<8} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{p['instances_done']}/{p['instances_total']} instances, "
                         f"{p['studies_stored']}/{p['studies']} studies")
        sys.stdout.flush()
        if p["finished"]:
            print()
            if status["state"] == "failed":
                print(f"xdsi: {status['error']}", file=sys.stderr)
                return 1
            for j in status["jobs"]:
                if j["state"] == "failed":
                    print(f"  study {j['study_uid']}: failed: {j['last_error']}")
            return 0 if p["studies_failed"] == 0 else 1
        if status["state"] == "new" and status.get("error"):
            sys.stdout.write(f" (retrying: {status['error'][:60]})")
        time.sleep(0.5)
    print("\nxdsi: timed out", file=sys.stderr)
    return 1


def _jobs(config: Config, args) -> int:
    from urllib.parse import urlencode
    query = {k: v for k, v in (("patient", args.patient), ("fetch", args.fetch)) if v is not None}
    try:
        rows = _get(f"{_base(config)}/jobs" + (f"?{urlencode(query)}" if query else ""))
    except OSError as e:
        print(f"xdsi: the consumer is not reachable ({e})", file=sys.stderr)
        return 2
    for j in rows:
        print(f"job {j['id']:>5}  {j['state']:<9} {j['instances_done']:>5}/{j['instances_total']:<5} "
              f"attempts {j['attempts']}  {j['local_patient']}  study {j['study_uid'] or '?'}"
              + (f"\n        last error: {j['last_error']}" if j["last_error"] else ""))
        if args.history:
            for h in j["history"]:
                print("        " + ", ".join(f"{k}={v}" for k, v in h.items()))
    return 0


actor = ConsumerActor()
