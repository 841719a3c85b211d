"""``xdsi serve consumer`` and ``xdsi consumer fetch``."""
from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from pathlib import Path

from affinity_domain import db, hl7, logs, serving
from affinity_domain.config import Config, ConfigError
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer

from . import dicom, orders, reports, rules
from .flow import RETRIEVE_METHODS, Prefetcher, Settings, Worker
from .store import Store

log = logging.getLogger("xdsi.consumer")


def _address(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = str(value).rpartition(":")
    return host or "127.0.0.1", int(port)


def settings(config: Config) -> Settings:
    s = config.section("consumer")
    pacs_ae, pacs_addr = s["local_pacs"].split("@")
    order = tuple(m.lower() for m in s["retrieve_order"])
    unknown = [m for m in order if m not in RETRIEVE_METHODS]
    if unknown or not order:
        raise ConfigError(f"[consumer] retrieve_order: {unknown or 'empty'}; use some of {list(RETRIEVE_METHODS)}")
    if s["reports"] not in reports.MODES:
        raise ConfigError(f"[consumer] reports = {s['reports']!r}; use one of {list(reports.MODES)}")
    return Settings(
        local_authority=s["local_assigning_authority"], affinity_authority=config.domain["assigning_authority"],
        pix=_address(s["pix"]), registry_url=s["registry_url"], repositories=dict(s["repositories"]),
        sources=dict(s["sources"]), local_pacs=(pacs_ae, *_address(pacs_addr)), calling_ae=s["ae_title"],
        relevancy=rules.Relevancy([m.upper() for m in s["modalities"]], list(s["body_parts"]),
                                  int(s["lookback_days"]), int(s["max_studies"])),
        accession_prefix=s["accession_prefix"], accession_prefixes=dict(s["accession_prefixes"]),
        procedure_codes=dict(s["procedure_codes"]),
        spool=(Path(s["spool_dir"]) if s["spool_dir"] else config.data_dir / "consumer").resolve(),
        held_per_study=int(float(s["held_mb_per_study"]) * 1024 * 1024),
        timeout=float(s["timeout"]), max_attempts=int(s["max_attempts"]), retry_base=float(s["retry_base_seconds"]),
        dicom_sources={ae: _address(v) for ae, v in dict(s["dicom_sources"]).items()}, retrieve_order=order,
        accession_issuer=s["accession_mode"] == "issuer", reports=s["reports"],
        report_oru=_address(s["report_oru"]), pacs_orders=_address(s["pacs_orders"]))


def _work(config: Config, settings_: Settings, threads: int) -> tuple[list, object, Prefetcher]:
    pool = db.open_pool(db.database_url(config), "consumer", max_size=threads + 6)
    prefetcher = Prefetcher(Store(pool), settings_)
    workers = [Worker(prefetcher) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers, pool, prefetcher


class ConsumerActor:
    name = "consumer"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        s = config.section("consumer")
        return [("orders ORM/OMI (MLLP)", f"{s['host']}:{s['mllp_port']}"),
                ("fetches and jobs (HTTP)", f"http://{s['http_host']}:{s['http_port']}/fetches"),
                ("C-MOVE destination (DICOM)", f"{s['ae_title']}@{s['dicom_host']}:{s['dicom_port']}")]

    def serve(self, config: Config) -> int:
        logs.setup("consumer")
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)    # it logs every association at INFO
        s = config.section("consumer")
        url = db.database_url(config)
        db.migrate(url, "consumer", "consumer")
        conf = settings(config)
        conf.spool.mkdir(parents=True, exist_ok=True)
        threads = int(s["workers"])
        # Reconciling and storing is CPU-bound Python: more processes use more cores. Fork first.
        children = serving.fork_workers(max(0, int(s["processes"]) - 1))
        if children is None:
            logs.setup("consumer")
            workers, pool, _ = _work(config, conf, threads)
            serving.wait_for_stop()
            for w in workers:
                w.stop()
            pool.close()
            return 0
        workers, pool, prefetcher = _work(config, conf, threads)
        resumed = prefetcher.store.resume()     # one consumer per site: the leases in its schema are its own
        http = serving.http_server(orders.http_app(prefetcher), serving.listen(s["http_host"], int(s["http_port"])), 4)

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"), application="XDSI_CONSUMER")

        mllp = serving.bind(lambda: MllpServer((s["host"], int(s["mllp_port"])), orders.order_handler(prefetcher),
                                               oversize), s["host"], int(s["mllp_port"]))
        mllp.start()
        scp = serving.bind(lambda: dicom.start_scp(s["ae_title"], s["dicom_host"], int(s["dicom_port"]),
                                                   conf.incoming), s["dicom_host"], int(s["dicom_port"]))
        for label, where in self.endpoints(config):
            log.info("listening", extra={"endpoint": label, "at": where, "resumed_jobs": resumed,
                                         "processes": len(children) + 1, "workers": threads})
        serving.run_until_stopped([http], [mllp.shutdown, scp.shutdown, *[w.stop for w in workers],
                                           lambda: serving.stop_workers(children), pool.close])
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


def _base(config: Config) -> str:
    s = config.section("consumer")
    return f"http://{s['http_host']}:{s['http_port']}"


def _get(url: str):
    return json.load(urllib.request.urlopen(url, timeout=30))


def _fetch(config: Config, args) -> int:
    base = _base(config)
    request = urllib.request.Request(f"{base}/fetches", method="POST", data=json.dumps(
        {"patient": args.patient, "since": args.since, "modalities": args.modality}).encode())
    try:
        fetch = json.load(urllib.request.urlopen(request, timeout=30))["fetch"]
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
