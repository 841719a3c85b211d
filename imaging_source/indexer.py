"""Indexing received instances behind the C-STORE answer.

A C-STORE is answered once its bytes are in the store and a line describing it is in the intake
journal (``<store>/intake.journal``), both on disk unless ``durability = "fast"``; a thread then
indexes the lines in batches, one transaction each, off the association's critical path. The
journal is what makes the early answer safe: a process killed between the answer and the commit
replays it at its next start. It is emptied whenever every line in it is committed, which under
load is after nearly every batch.

Replaying is idempotent (an instance indexed with the same bytes is left unchanged) and deletes no
file, because a later line may be what made an earlier one's bytes unreferenced.

One bad instance stops nothing: a line the index refuses (a value PostgreSQL cannot hold, a patient
conflict) is quarantined with its reason and the others are indexed. A failure that is not the
instance's (the database unreachable is waited out; a missing table, a bug) kills the worker: its
supervisor reports and restarts it, and until it runs again intake answers C-STOREs with a failure.
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
from .intake import Received, log_outcome
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


class Quarantine:
    """Journal lines the index refused, kept with their reason in ``<store>/intake.quarantine`` (one
    JSON object a line: ``reason``, ``at``, ``line``). The next start puts them back in the journal,
    so a restart retries them; the instances' bytes stay in the store meanwhile."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.count = len(self.lines())

    def lines(self) -> list[bytes]:
        """The journal lines kept here."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        kept = []
        for raw in data.splitlines():
            try:
                kept.append(json.loads(raw)["line"].encode())
            except (ValueError, KeyError, TypeError, AttributeError):
                log.error("unreadable quarantine line skipped", extra={"file": str(self.path)})
        return kept

    def add(self, line: bytes, reason: str) -> int:
        record = json.dumps({"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "line": line.decode().rstrip("\n")}, separators=(",", ":")) + "\n"
        with self._lock:
            with open(self.path, "ab") as f:
                f.write(record.encode())
                f.flush()
                os.fsync(f.fileno())         # before the journal forgets the line
            self.count += 1
            return self.count

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
            self.count = 0


class Journal:
    """Append-only lines, one ``write`` each (O_APPEND), emptied when all are committed. One
    process per store: the file is locked. Lines quarantined before (``Quarantine``) come back into
    it when it is opened, to be indexed again.

    ``fsync``: ``append`` returns once its line is on disk. Associations appending at once share
    one ``fdatasync`` (group commit): whoever finds no sync running starts one, covering every line
    written so far; the others wait for it, or for the next one."""

    SYNC_WAIT = 1.0             # a waiter looks again this often (the sync itself is the kernel's)

    def __init__(self, path: Path, fsync: bool):
        self.path, self.fsync = path, fsync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise JournalBusy(f"{path} is held by another imaging source process") from None
        self.quarantine = Quarantine(Path(path).with_name("intake.quarantine"))
        retried = self.quarantine.lines()
        if retried:
            os.write(self.fd, b"".join(line + b"\n" for line in retried))
            os.fsync(self.fd)
            self.quarantine.clear()
            log.warning("quarantined instances retried", extra={"instances": len(retried)})
        self.left_over = read_journal(Path(path).read_bytes())
        self._lock = threading.Lock()
        self.appended = len(self.left_over)
        self.committed = 0
        self._synced = threading.Condition()
        self._written = self._on_disk = 0       # lines written and lines synced, since open
        self._syncing = False

    def append(self, line: bytes) -> None:
        with self._lock:
            try:
                os.write(self.fd, line)
            except OSError as e:
                if _full(e):
                    raise StoreFull(e.errno, "the intake journal cannot grow") from None
                raise
            self.appended += 1
            self._written += 1
            mine = self._written
        if self.fsync:
            self._wait_on_disk(mine)

    def _wait_on_disk(self, line: int) -> None:
        with self._synced:
            while self._on_disk < line:
                if self._syncing:
                    self._synced.wait(self.SYNC_WAIT)
                    continue
                self._syncing = True
                covered = self._written          # every line written before the sync starts
                self._synced.release()
                try:
                    os.fdatasync(self.fd)
                except OSError as e:
                    if _full(e):
                        raise StoreFull(e.errno, "the intake journal cannot grow") from None
                    raise
                finally:
                    self._synced.acquire()
                    self._syncing = False
                    self._synced.notify_all()
                self._on_disk = max(self._on_disk, covered)

    def done(self, n: int) -> None:
        """``n`` more lines are committed; empty the file when that is all of them."""
        with self._lock:
            self.committed += n
            if self.committed == self.appended:
                os.ftruncate(self.fd, 0)
                self.committed = self.appended = 0

    def close(self) -> None:
        os.close(self.fd)


class NotIndexed(XdsiError):
    """Instances already answered are not all in the index (the indexer is not running, or is that
    far behind): a query would miss them."""

    retryable = True


class Indexer:
    """Takes journaled instances from the associations and indexes them, one batch per ``step``
    (run by a ``workers.Supervisor``). An entry the index refuses is quarantined and the rest of its
    batch goes on; a batch the worker died on is the first of its next step."""

    def __init__(self, index, content: FileStore, journal: Journal, policy: str):
        self.index, self.content, self.journal, self.policy = index, content, journal, policy
        self.quarantine = journal.quarantine
        self._queue: queue.Queue = queue.Queue()
        self._progress = threading.Condition()
        self._submitted = self._indexed = 0      # in queue order: the first _indexed are done with
        self._held: list = []
        self.worker = None                       # the workers.Worker that runs ``step``
        for entry in journal.left_over:
            self._enqueue(entry, replay=True)
        if journal.left_over:
            log.warning("replaying the intake journal", extra={"instances": len(journal.left_over)})

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive

    def depth(self) -> int:
        """Instances answered and not yet indexed."""
        return self._submitted - self._indexed

    def quarantined(self) -> int:
        return self.quarantine.count

    def _enqueue(self, entry, replay: bool = False) -> None:
        with self._progress:
            self._submitted += 1
            self._queue.put((entry, replay))

    def submit(self, received: Received, sha1: str, size: int, calling_ae: str) -> None:
        """Journal one stored instance (durably enough to answer its C-STORE) and queue it."""
        self.journal.append(encode_line(received, sha1, size, calling_ae))
        self._enqueue((received, sha1, size, calling_ae))

    def flush(self, timeout: float) -> bool:
        """Wait until every instance answered so far is indexed (not those that arrive meanwhile):
        what a query or a removal must see. False on timeout, or at once while the indexer is not
        running (nothing would come of waiting)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            target = self._submitted
            while self._indexed < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    return False
                self._progress.wait(min(left, 0.2))
            return True

    def close(self) -> None:
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

    def step(self, stop: threading.Event) -> None:
        batch = self._held or self._take_batch()
        if not batch:
            return
        self._held = batch
        if self._index(batch, stop):
            self._held = []

    def _index(self, batch: list, stop: threading.Event) -> bool:
        """Index a batch; False when stopped before it could be (it stays in the journal)."""
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
                if stop.wait(wait):
                    return False
        for (entry, replay), outcome in zip(batch, outcomes):
            self._outcome(entry, replay, outcome)
        self.journal.done(len(batch))
        with self._progress:
            self._indexed += len(batch)
            self._progress.notify_all()
        return True

    def _outcome(self, entry, replay: bool, outcome) -> None:
        received, sha1, _, calling_ae = entry
        facts = {"sop_uid": received.sop_uid, "study": received.study_uid, "calling_ae": calling_ae}
        if outcome.status == "failed":
            count = self.quarantine.add(encode_line(*entry), outcome.reason)
            log.error("instance quarantined", extra={**facts, "reason": outcome.reason, "quarantined": count,
                                                     "file": str(self.quarantine.path)})
            return
        if outcome.drop_sha1 and not replay:
            self.content.delete(outcome.drop_sha1)
        log_outcome(outcome, sha1, facts)


def open_journal(content: FileStore, fsync: bool) -> Journal:
    return Journal(content.root / "intake.journal", fsync)
