"""``xdsi serve registry``: wire the registry's doors to its core and run them."""
from __future__ import annotations

import logging

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
        return [("ITI-42/18/51 (SOAP 1.2)", f"http://{s['host']}:{s['port']}{s['path']}"),
                ("ITI-8 feed (MLLP)", f"{s['feed_host']}:{s['feed_port']}")]

    def serve(self, config: Config) -> int:
        logs.setup("registry")
        s = config.section("registry")
        url = db.database_url(config)
        db.migrate(url, "registry", "registry")
        pool = db.open_pool(url, "registry", max_size=int(s["threads"]) + 2)
        store = Store(pool, int(s["max_query_results"]))
        registry = Registry(store, codes.from_config(s), config.domain["assigning_authority"])
        app = serving.path_app(s["path"], service.door(registry, int(s["max_request_bytes"])))
        http = serving.http_server(app, s["host"], int(s["port"]), int(s["threads"]))

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"))

        mllp = serving.bind(lambda: MllpServer((s["feed_host"], int(s["feed_port"])),
                                               feed.handler(store, config.domain["assigning_authority"]),
                                               oversize), s["feed_host"], int(s["feed_port"]))
        mllp.start()
        for label, where in self.endpoints(config):
            log.info("listening", extra={"endpoint": label, "at": where})
        serving.run_until_stopped([http], [mllp.shutdown, pool.close])
        return 0


actor = RegistryActor()
