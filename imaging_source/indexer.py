"""Indexing received instances behind the C-STORE answer.

A C-STORE is answered once its bytes are in the store and a line describing it is in the intake
journal (``<store>/intake.journal``); a thread then indexes the lines in batches, one transaction
each, off the association's critical path. The journal is what makes the early answer safe: a
process killed between the answer and the commit replays it at its next start. It is emptied
whenever every line in it is committed, which under load is after nearly every batch.

Replaying is idempotent (an instance indexed with the same bytes is left unchanged) and deletes no
file, because a later line may be what made an earlier one's bytes unreferenced.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
import time
from dataclasses import fields as dataclass_fields
from pathlib import Path

import psycopg
import psycopg_pool

from affinity_domain.content import FileStore, StoreFull, _full
from .identity import LocalIdentity
from .intake import Received
from affinity_domain.exceptions import XdsiError

log = logging.getLogger("xdsi.imaging_source.indexer")

BATCH = 256                 # lines per transaction at most
GATHER_SECONDS = 0.02       # how long a batch waits for more lines once it has one
RETRY_SECONDS = (0.5, 1, 2, 5)
_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
_FIELDS = [f.name for f in dataclass_fields(Received)]


class JournalBusy(RuntimeError, XdsiError):
    """Another process is taking in instances into the same store."""


def encode_line(received: Received, sha1: str, size: int, calling_ae: str) -> bytes:
    fields = {f: getattr(received, f) for f in _FIELDS}       # dataclasses.asdict deep-copies: slow
    fields["identity"] = {"patient_id": received.identity.patient_id, "issuer": received.identity.issuer}
    return (json.dumps({"received": fields, "sha1": sha1, "size": size, "calling_ae": calling_ae},
                       separators=(",", ":")) + "\n").encode()


def decode_line(line: bytes) -> tuple[Received, str, int, str]:
    raw = json.loads(line)
    fields = raw["received"]
    fields["identity"] = LocalIdentity(**fields["identity"])
    return Received(**fields), raw["sha1"], raw["size"], raw["calling_ae"]


def read_journal(data: bytes) -> list[tuple[Received, str, int, str]]:
    """The journal's complete lines; a last line cut short by a crash was never answered."""
    entries = []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            entries.append(decode_line(line))
        except (ValueError, KeyError, TypeError) as e:
            log.error("unreadable intake journal line skipped", extra={"error": str(e)})
    return entries


class Journal:
    """Append-only lines, one ``write`` each (O_APPEND), emptied when all are committed. One
    process per store: the file is locked."""

    def __init__(self, path: Path, fsync: bool):
        self.path, self.fsync = path, fsync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise JournalBusy(f"{path} is held by another imaging source process") from None
        self.left_over = read_journal(Path(path).read_bytes())
        self._lock = threading.Lock()
        self.appended = len(self.left_over)
        self.committed = 0

    def append(self, line: bytes) -> None:
        with self._lock:
            try:
                os.write(self.fd, line)
                if self.fsync:
                    os.fdatasync(self.fd)
            except OSError as e:
                if _full(e):
                    raise StoreFull(e.errno, "the intake journal cannot grow") from None
                raise
            self.appended += 1

    def done(self, n: int) -> None:
        """``n`` more lines are committed; empty the file when that is all of them."""
        with self._lock:
            self.committed += n
            if self.committed == self.appended:
                os.ftruncate(self.fd, 0)
                self.committed = self.appended = 0

    def close(self) -> None:
        os.close(self.fd)


class Indexer:
    """Takes journaled instances from the associations, indexes them on its own thread."""

    def __init__(self, index, content: FileStore, journal: Journal, policy: str):
        self.index, self.content, self.journal, self.policy = index, content, journal, policy
        self._queue: queue.Queue = queue.Queue()
        self._progress = threading.Condition()
        self._submitted = self._indexed = 0      # in queue order: the first _indexed are in the index
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for entry in journal.left_over:
            self._enqueue(entry, replay=True)
        if journal.left_over:
            log.warning("replaying the intake journal", extra={"instances": len(journal.left_over)})

    def _enqueue(self, entry, replay: bool = False) -> None:
        with self._progress:
            self._submitted += 1
            self._queue.put((entry, replay))

    def submit(self, received: Received, sha1: str, size: int, calling_ae: str) -> None:
        """Journal one stored instance (durably enough to answer its C-STORE) and queue it."""
        self.journal.append(encode_line(received, sha1, size, calling_ae))
        self._enqueue((received, sha1, size, calling_ae))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every instance answered so far is indexed (not those that arrive meanwhile):
        what a query or a removal must see. False on timeout."""
        with self._progress:
            target = self._submitted
            return self._progress.wait_for(lambda: self._indexed >= target, timeout)

    def stop(self, timeout: float = 30) -> None:
        self.flush(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.journal.close()

    def _take_batch(self) -> list:
        try:
            batch = [self._queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + GATHER_SECONDS
        while len(batch) < BATCH and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                self._index(batch)

    def _index(self, batch: list) -> None:
        attempt = 0
        while True:
            try:
                outcomes = self.index.record_batch([entry for entry, _ in batch], self.policy)
                break
            except _UNAVAILABLE as e:
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.error("database unavailable, indexing waits", extra={"error": str(e), "retry_in": wait,
                                                                          "instances": len(batch)})
                attempt += 1
                if self._stop.wait(wait):
                    return
        for (entry, replay), outcome in zip(batch, outcomes):
            if outcome.drop_sha1 and not replay:
                self.content.delete(outcome.drop_sha1)
            if outcome.status == "failed":
                log.error("instance not indexed", extra={"sop_uid": entry[0].sop_uid})
        self.journal.done(len(batch))
        with self._progress:
            self._indexed += len(batch)
            self._progress.notify_all()


def open_journal(content: FileStore, fsync: bool) -> Journal:
    return Journal(content.root / "intake.journal", fsync)

