"""The durable audit queue: append-only segment files under the spool directory, one being written per process.

Why files and not the actor's PostgreSQL schema: an audit record must be kept when the database is what failed
(a Security Alert, an Application Stop), appending to the page cache costs microseconds where a commit costs a
round trip in the request's path, and forked workers need no coordination (each writes its own segment).

A record is ``LEN SP SYSLOG-MSG``, written by one ``write`` (O_APPEND), so a killed process leaves whole records
and at most one torn tail, which readers stop at. The sender fsyncs a segment before it sends from it, so
nothing is sent that a power cut could take back. Each destination keeps its own offset per segment
(``<segment>.<destination key>``): a repository that is down holds only its own queue back. A process holds an
flock on its segment for its life; a segment whose writer is gone (its lock free) is claimed by the next
process that looks, and sent from there. A segment sent to every destination and no longer written is deleted."""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("xdsi.audit")
_PREFIX, _SUFFIX = "seg-", ".log"
READ_BYTES = 1024 * 1024         # read from a segment at a time


def destination_key(url: str) -> str:
    """A file-name-safe key for a destination (its URL never becomes a path)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def read_records(data: bytes, start: int, limit: int) -> tuple[list[bytes], int]:
    """Up to ``limit`` whole records of ``data`` from ``start``; and the offset after the last one read. A torn or
    damaged tail ends the read there."""
    records, at = [], start
    while len(records) < limit:
        space = data.find(b" ", at, at + 12)
        if space < 0 or not data[at:space].isdigit():
            break
        end = space + 1 + int(data[at:space])
        if end > len(data):
            break
        records.append(data[space + 1:end])
        at = end
    return records, at


class Spool:
    def __init__(self, directory: Path, destinations: list[str], segment_bytes: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keys = [destination_key(d) for d in destinations]
        self.segment_bytes = segment_bytes
        self.lock = threading.Lock()
        self.appended = threading.Condition(self.lock)
        self.current: Path | None = None
        self.fd: int | None = None
        self.size = 0
        self.synced = 0             # bytes of the current segment known to be on disk: only those are sent
        self.dirty = False
        self.claimed: dict[Path, int] = {}      # orphaned segments this process sends, with their lock fd

    # ---------------------------------------------------------------- writing

    def append(self, message: bytes) -> None:
        record = b"%d " % len(message) + message
        with self.lock:
            if self.fd is None or self.size >= self.segment_bytes:
                self._roll()
            os.write(self.fd, record)
            self.size += len(record)
            self.dirty = True
            self.appended.notify_all()

    def _roll(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
        path = self.directory / f"{_PREFIX}{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.current, self.fd, self.size, self.synced = path, fd, 0, 0

    def sync(self) -> None:
        """fsync what this process wrote (before it is sent). On a copy of the descriptor, outside the lock:
        a record appended meanwhile does not wait for the disk."""
        with self.lock:
            if self.fd is None or not self.dirty:
                return
            fd, self.dirty, path, size = os.dup(self.fd), False, self.current, self.size
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with self.lock:
            if path == self.current:
                self.synced = size

    def after_fork(self) -> None:
        """In a forked child: the parent's segment stays the parent's; the child starts its own when it writes."""
        self.lock = threading.Lock()
        self.appended = threading.Condition(self.lock)
        for fd in [self.fd, *self.claimed.values()]:
            if fd is not None:
                os.close(fd)
        self.current, self.fd, self.size, self.synced, self.dirty, self.claimed = None, None, 0, 0, False, {}

    # ---------------------------------------------------------------- reading

    def segments(self) -> list[Path]:
        """The segments this process sends, oldest first: its own and the orphans it could claim."""
        mine = []
        with self.lock:
            for path in sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}")):
                if path == self.current or path in self.claimed:
                    mine.append(path)
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:     # another live process writes or sends it
                    os.close(fd)
                    continue
                if not path.exists():       # retired by its sender between the glob and the lock
                    os.close(fd)
                    continue
                self.claimed[path] = fd
                log.info("audit spool: sending the records of a process that is gone",
                         extra={"segment": path.name})
                mine.append(path)
        return mine

    def _offset_path(self, segment: Path, key: str) -> Path:
        return segment.with_name(f"{segment.name}.{key}")

    def offset(self, segment: Path, key: str) -> int:
        try:
            return int(self._offset_path(segment, key).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def read(self, key: str, limit: int) -> tuple[Path | None, list[bytes], int]:
        """The next records for destination ``key``: (segment, records, offset after them)."""
        for segment in self.segments():
            start = self.offset(segment, key)
            try:
                with open(segment, "rb") as f:
                    f.seek(start)
                    data = f.read(READ_BYTES)
                    head = data[:data.find(b" ", 0, 12)]
                    if head.isdigit() and len(head) + 1 + int(head) > len(data):   # one record larger than a read
                        data += f.read(len(head) + 1 + int(head) - len(data))
            except FileNotFoundError:
                continue
            with self.lock:
                if segment == self.current:
                    data = data[:max(self.synced - start, 0)]
            records, consumed = read_records(data, 0, limit)
            if records:
                return segment, records, start + consumed
            self.retire(segment)
        return None, [], 0

    def commit(self, segment: Path, key: str, offset: int) -> None:
        """Records up to ``offset`` reached destination ``key``."""
        path = self._offset_path(segment, key)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, path)

    def retire(self, segment: Path) -> None:
        """Delete a segment no longer written whose records every destination has."""
        with self.lock:
            if segment == self.current:
                return
            try:
                size = segment.stat().st_size
            except FileNotFoundError:
                return
            if any(self.offset(segment, k) < size for k in self.keys) and size:
                data = segment.read_bytes()
                if any(read_records(data, self.offset(segment, k), 1)[0] for k in self.keys):
                    return              # unsent whole records remain (a torn tail alone does not count)
            for k in self.keys:
                self._offset_path(segment, k).unlink(missing_ok=True)
            segment.unlink(missing_ok=True)
            fd = self.claimed.pop(segment, None)
            if fd is not None:
                os.close(fd)

    def backlog(self) -> int:
        """Bytes not yet sent to the slowest destination (for logs and status)."""
        total = 0
        for segment in sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}")):
            try:
                size = segment.stat().st_size
            except FileNotFoundError:
                continue
            total += max(size - min((self.offset(segment, k) for k in self.keys), default=size), 0)
        return total

    def wait(self, timeout: float) -> None:
        with self.appended:
            self.appended.wait(timeout)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.fsync(self.fd)
            for fd in [self.fd, *self.claimed.values()]:
                if fd is not None:
                    os.close(fd)
            self.fd, self.current, self.claimed = None, None, {}
