"""``xdsi serve repository``: wire the repository's door to its core and run it."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from affinity_domain import db, logs, serving
from affinity_domain.config import Config
from affinity_domain.soap_client import SoapClient

from . import service
from affinity_domain.content import FileStore
from .core import Repository
from .store import Index

log = logging.getLogger("xdsi.repository")


class RepositoryActor:
    name = "repository"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        s = config.section("repository")
        return [("ITI-41/RAD-68/ITI-43 (SOAP 1.2, MTOM)", f"http://{s['host']}:{s['port']}{s['path']}")]

    def serve(self, config: Config) -> int:
        logs.setup("repository")
        s = config.section("repository")
        url = db.database_url(config)
        db.migrate(url, "repository", "repository")
        store_dir = Path(s["store_dir"] or config.data_dir / "repository")
        sock = serving.listen(s["host"], int(s["port"]))
        workers = serving.fork_workers(max(0, int(s["workers"]) - 1))
        # After the fork: each process has its own pool, spool directory and index owner name.
        pool = db.open_pool(url, "repository", max_size=int(s["threads"]) + 2)
        content = FileStore(store_dir)
        registry = SoapClient(s["registry_url"], float(s["registry_timeout"]), content.spool_dir)
        repository = Repository(Index(pool), content, registry, s["repository_unique_id"])
        app = serving.path_app(s["path"], service.door(repository, int(s["max_request_bytes"]),
                                                       content.spool_dir, int(s["max_document_bytes"])))
        http = serving.http_server(app, sock, int(s["threads"]))
        # waitress refuses bodies over 1 GB by default; our own limit is max_document_bytes.
        http.adj.max_request_body_size = int(s["max_document_bytes"]) + 1024 * 1024
        if workers is None:
            serving.run_until_stopped([http], [pool.close])
            os._exit(0)
        stop = threading.Event()
        grace = float(s["pending_grace_seconds"])

        def recovery():
            while True:
                try:
                    repository.recover(grace)
                except Exception:           # keep recovering later; the next round may succeed
                    log.exception("recovery failed")
                if stop.wait(float(s["recovery_seconds"])):
                    return

        threading.Thread(target=recovery, name="recovery", daemon=True).start()
        for label, where in self.endpoints(config):
            log.info("listening", extra={"endpoint": label, "at": where, "workers": len(workers) + 1,
                                         "store": str(store_dir), "registry": s["registry_url"]})
        serving.run_until_stopped([http], [stop.set, lambda: serving.stop_workers(workers), pool.close])
        return 0


actor = RepositoryActor()
