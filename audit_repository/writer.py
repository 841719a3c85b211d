"""A writer process of the repository: reads and stores batches of received messages (parsing costs more than
receiving, and a process of its own uses another core), until it is handed None."""
from __future__ import annotations

import logging
import signal
import time

from affinity_domain import db, logs

from .records import row_of
from .store import Store

log = logging.getLogger("xdsi.audit")


def run(database_url: str, batches, results, max_bytes: int) -> None:
    # The parent stops its writers by handing each None once every received message is queued.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup("audit")
    pool = db.open_pool(database_url, "audit", max_size=1)
    store = Store(pool)
    try:
        while True:
            batch = batches.get()
            if batch is None:
                return
            rows = [row_of(data, transport, peer, at, max_bytes) for transport, peer, data, at in batch]
            delay = 0.5
            while True:
                try:
                    new = store.insert(rows)
                    break
                except Exception as e:     # the database: keep the batch, try again
                    log.error("audit records not stored yet; retrying", extra={"error": str(e), "records": len(rows)})
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
            results.put((new, len(rows)))
    finally:
        pool.close()
