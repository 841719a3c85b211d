"""``xdsi serve repository``: wire the repository's door to its core and run it."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from affinity_domain import audit, db, logs, serving, status
from affinity_domain.config import Config, build_settings
from affinity_domain.soap_client import SoapClient
from affinity_domain.workers import Supervisor, WorkerSettings
from affinity_domain.xua import xua_settings

from . import service
from affinity_domain.content import FileStore
from .core import Repository
from .settings import RepositorySettings
from .store import Index

log = logging.getLogger("xdsi.repository")


class RepositoryActor:
    name = "repository"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        return _endpoints(build_settings(RepositorySettings, config))

    def serve(self, config: Config) -> int:
        s = build_settings(RepositorySettings, config)   # a configuration mistake stops us before anything starts
        logs.setup("repository")
        url = db.database_url(config)
        db.migrate(url, "repository", "repository")
        store_dir = Path(s.store_dir or config.data_dir / "repository")
        health = serving.observability(config.data_dir, self.name)
        sock = serving.listen(s.host, s.port)
        audit.start(config, self.name)
        workers = serving.fork_workers(s.workers - 1, health)
        # After the fork: each process has its own pool, spool directory and index owner name.
        pool = db.open_pool(url, "repository", max_size=s.threads + 2)
        content = FileStore(store_dir)
        registry = SoapClient(s.registry_url, s.registry_timeout, content.spool_dir)
        repository = Repository(Index(pool), content, registry, s.repository_unique_id)
        door = service.door(repository, s.max_request_bytes, content.spool_dir, s.max_document_bytes,
                            s.max_mtom_parts, s.max_mtom_header_bytes, xua_settings(config, "repository"))
        app = serving.with_status(serving.path_app(s.path, door), health)
        # The SOAP path takes documents up to max_document_bytes; /health and /metrics take no more
        # than a SOAP envelope.
        limits = serving.http_limits(s, s.max_request_bytes, {s.path: s.max_document_bytes})
        http = serving.http_server(app, sock, s.threads, limits)
        if workers is None:
            serving.run_until_stopped([http], [pool.close, health.retire, lambda: audit.stop(activity=False)])
            os._exit(0)

        def recovery(stop: threading.Event) -> None:
            repository.recover(s.pending_grace_seconds)
            stop.wait(s.recovery_seconds)

        # Recovery of unfinished submissions (the outbox of ITI-42 registrations nobody finished).
        supervisor = Supervisor(build_settings(WorkerSettings, config),
                                lambda state: status.record_workers(config.data_dir, self.name, state))
        supervisor.add("recovery", recovery, quarantined=lambda: repository.quarantined)
        supervisor.start()
        health.register(supervisor.state)
        for label, where in _endpoints(s):
            log.info("listening", extra={"endpoint": label, "at": where, "workers": len(workers) + 1,
                                         "store": str(store_dir), "registry": s.registry_url})
        serving.run_until_stopped([http], [supervisor.stop, lambda: serving.stop_workers(workers), pool.close,
                                           health.retire, audit.stop])
        return 0


def _endpoints(s: RepositorySettings) -> list[tuple[str, str]]:
    return [("ITI-41/RAD-68/ITI-43 (SOAP 1.2, MTOM)", f"http://{s.host}:{s.port}{s.path}")]


actor = RepositoryActor()
