"""``xdsi serve registry``: wire the registry's doors to its core and run them."""
from __future__ import annotations

import logging
import os

from affinity_domain import db, hl7, logs, serving
from affinity_domain.config import Config
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer

from . import codes, feed, service
from .core import Registry
from .store import Store

log = logging.getLogger("xdsi.registry")


class RegistryActor:
    name = "registry"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        s = config.section("registry")
        return [("ITI-42/18/51/57 (SOAP 1.2)", f"http://{s['host']}:{s['port']}{s['path']}"),
                ("ITI-8 feed (MLLP)", f"{s['feed_host']}:{s['feed_port']}")]

    def serve(self, config: Config) -> int:
        logs.setup("registry")
        s = config.section("registry")
        domain = config.domain["assigning_authority"]
        url = db.database_url(config)
        db.migrate(url, "registry", "registry")
        code_sets = codes.from_config(s)    # a bad codes_file stops the start here, before any worker forks
        sock = serving.listen(s["host"], int(s["port"]))
        workers = serving.fork_workers(max(0, int(s["workers"]) - 1))
        pool = db.open_pool(url, "registry", max_size=int(s["threads"]) + 2)
        read_pool = db.open_pool(url, "registry", max_size=int(s["threads"]) + 2, read_only=True)
        store = Store(pool, int(s["max_query_results"]), read_pool)
        registry = Registry(store, code_sets, domain)
        app = serving.path_app(s["path"], service.door(registry, int(s["max_request_bytes"])))
        http = serving.http_server(app, sock, int(s["threads"]))
        if workers is None:  # a forked worker: HTTP only; skip the parent's atexit hooks on exit
            serving.run_until_stopped([http], [pool.close, read_pool.close])
            os._exit(0)

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"))

        mllp = serving.bind(lambda: MllpServer((s["feed_host"], int(s["feed_port"])),
                                               feed.handler(store, domain), oversize),
                            s["feed_host"], int(s["feed_port"]))
        mllp.start()
        for label, where in self.endpoints(config):
            log.info("listening", extra={"endpoint": label, "at": where, "workers": len(workers) + 1})
        serving.run_until_stopped([http], [lambda: serving.stop_workers(workers), mllp.shutdown, pool.close,
                                           read_pool.close])
        return 0


actor = RegistryActor()
