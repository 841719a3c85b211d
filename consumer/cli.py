"""``xdsi serve consumer`` and ``xdsi consumer fetch``."""
from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from pathlib import Path

from affinity_domain import db, hl7, logs, serving
from affinity_domain.config import Config
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer

from . import orders, rules
from .flow import Prefetcher, Settings, Worker
from .store import Store

log = logging.getLogger("xdsi.consumer")


def settings(config: Config) -> Settings:
    s = config.section("consumer")
    pacs_ae, pacs_addr = s["local_pacs"].split("@")
    pacs_host, pacs_port = pacs_addr.rsplit(":", 1)
    pix_host, pix_port = s["pix"].rsplit(":", 1)
    return Settings(
        local_authority=s["local_assigning_authority"], affinity_authority=config.domain["assigning_authority"],
        pix=(pix_host, int(pix_port)), registry_url=s["registry_url"], repositories=dict(s["repositories"]),
        sources=dict(s["sources"]), local_pacs=(pacs_ae, pacs_host, int(pacs_port)), calling_ae=s["ae_title"],
        relevancy=rules.Relevancy(list(s["modalities"]), list(s["body_parts"]), int(s["lookback_days"]),
                                  int(s["max_studies"])),
        accession_prefix=s["accession_prefix"], accession_prefixes=dict(s["accession_prefixes"]),
        procedure_codes=dict(s["procedure_codes"]),
        spool=(Path(s["spool_dir"]) if s["spool_dir"] else config.data_dir / "consumer").resolve(),
        timeout=float(s["timeout"]), max_attempts=int(s["max_attempts"]))


class ConsumerActor:
    name = "consumer"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        s = config.section("consumer")
        return [("orders ORM/OMI (MLLP)", f"{s['host']}:{s['mllp_port']}"),
                ("fetches and jobs (HTTP)", f"http://{s['http_host']}:{s['http_port']}/fetches")]

    def serve(self, config: Config) -> int:
        logs.setup("consumer")
        s = config.section("consumer")
        url = db.database_url(config)
        db.migrate(url, "consumer", "consumer")
        pool = db.open_pool(url, "consumer", max_size=int(s["workers"]) + 6)
        prefetcher = Prefetcher(Store(pool), settings(config))
        prefetcher.s.spool.mkdir(parents=True, exist_ok=True)
        resumed = prefetcher.store.resume()     # one consumer process per site: its leases are its own
        http = serving.http_server(orders.http_app(prefetcher), serving.listen(s["http_host"], int(s["http_port"])), 4)

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"), application="XDSI_CONSUMER")

        mllp = serving.bind(lambda: MllpServer((s["host"], int(s["mllp_port"])), orders.order_handler(prefetcher),
                                               oversize), s["host"], int(s["mllp_port"]))
        mllp.start()
        workers = [Worker(prefetcher) for _ in range(int(s["workers"]))]
        for w in workers:
            w.start()
        for label, where in self.endpoints(config):
            log.info("listening", extra={"endpoint": label, "at": where, "resumed_jobs": resumed})
        serving.run_until_stopped([http], [mllp.shutdown, *[w.stop for w in workers], pool.close])
        return 0

    def add_commands(self, sub) -> None:
        c = sub.add_parser("consumer", help="the consumer edge proxy")
        csub = c.add_subparsers(dest="consumer_command", required=True)
        f = csub.add_parser("fetch", help="fetch a patient's outside studies into the local PACS now")
        f.add_argument("--patient", required=True, help="local id, ID^^^&OID&ISO")
        f.add_argument("--since", default="", help="service start time from (DTM)")
        f.add_argument("--modality", action="append", default=[], help="only studies with this modality (repeatable); else the configured rules")
        f.add_argument("--timeout", type=float, default=600)
        f.set_defaults(run=_fetch)


def _fetch(config: Config, args) -> int:
    s = config.section("consumer")
    base = f"http://{s['http_host']}:{s['http_port']}"
    request = urllib.request.Request(f"{base}/fetches", method="POST", data=json.dumps(
        {"patient": args.patient, "since": args.since, "modalities": args.modality}).encode())
    try:
        fetch = json.load(urllib.request.urlopen(request))["fetch"]
    except urllib.error.HTTPError as e:
        print(f"xdsi: {json.load(e).get('error')}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        status = json.load(urllib.request.urlopen(f"{base}/fetches/{fetch}"))
        jobs = status["jobs"]
        total = sum(j["instances_total"] for j in jobs)
        done = sum(j["instances_total"] if j["state"] == "stored" else j["instances_done"] for j in jobs)
        width = 30
        filled = int(width * done / total) if total else 0
        sys.stdout.write(f"\r fetch {fetch} {status['state']:<8} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{total} instances, {sum(j['state'] == 'stored' for j in jobs)}/{len(jobs)} studies")
        sys.stdout.flush()
        if status["state"] == "failed":
            print(f"\nxdsi: {status['error']}", file=sys.stderr)
            return 1
        if status["state"] == "searched" and all(j["state"] in ("stored", "failed") for j in jobs):
            print()
            for j in jobs:
                if j["state"] == "failed":
                    print(f"  study {j['study_uid']}: failed: {j['last_error']}")
            return 0 if all(j["state"] == "stored" for j in jobs) else 1
        time.sleep(0.5)
    print("\nxdsi: timed out", file=sys.stderr)
    return 1


actor = ConsumerActor()
