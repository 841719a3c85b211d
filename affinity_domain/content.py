"""The content store every actor keeps bytes in: files named by their SHA-1, ``root/ab/<sha1>``.

A store starts with its 256 directories made and a ``layout`` file saying so. Stores made before
that (no ``layout`` file, files at ``root/ab/cd/<sha1>``) keep their two levels: the second level's
65,536 directories were made one by one as the store filled, a mkdir in many early puts.

Writers spool into ``root/spool/<host>-<pid>/`` on the same file system, so storing is a rename,
never a copy or a decode: fsync, atomic rename, fsync of the directory. ``ContentStore`` is the
interface; an S3-compatible store would implement the same methods (``put`` as an upload).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from .exceptions import XdsiError


class StoreFull(OSError, XdsiError):
    """The store's file system is out of space (XDS: out of resources; DICOM 0xA700)."""

    retryable = True


class ContentStore(Protocol):
    def put(self, spooled: Path, sha1: str | None = None) -> tuple[str, int]:
        """Keep the spooled file's bytes durably under their SHA-1 (computed when not given); the
        spooled file is consumed. Bytes already stored under that hash are kept (a retry)."""

    def sync(self, sha1s) -> set[str]:
        """Put the stored bytes of these hashes durably on disk; the hashes that are stored."""

    def open(self, sha1: str) -> BinaryIO: ...

    def delete(self, sha1: str) -> None: ...

    def keys(self) -> Iterator[str]: ...


def sha1_of(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha1(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class FileStore:
    def __init__(self, root: str | os.PathLike, fsync: bool = True, min_free_bytes: int = 0):
        """``fsync=False`` trades durability of the last writes before a power loss for speed
        (the imaging source can ask its modality to send again; the repository cannot)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool_root = self.root / "spool"
        self.spool_dir = self.spool_root / f"{socket.gethostname()}-{os.getpid()}"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.fsync, self.min_free_bytes = fsync, min_free_bytes
        self._dirs: set[str] = set()       # two-level stores: leaf directories known to exist
        self.levels = self._layout()

    def _layout(self) -> int:
        marker = self.root / "layout"
        if not marker.exists():
            # Processes may open a new store at once; the layout file is written before any
            # directory, so directories without it (looked at again) mean a store made before it.
            if any(self.root.glob("[0-9a-f][0-9a-f]")) and not marker.exists():
                return 2                   # ab/cd/<sha1>
            tmp = self.spool_dir / "layout"
            tmp.write_text("1 level: ab/<sha1>\n")
            os.replace(tmp, marker)
        levels = int(marker.read_text().split()[0])
        if levels == 1:
            for n in range(256):
                (self.root / f"{n:02x}").mkdir(exist_ok=True)
        return levels

    def path(self, sha1: str) -> Path:
        return Path(self._target(sha1))

    def has_room(self) -> bool:
        if not self.min_free_bytes:
            return True
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize >= self.min_free_bytes

    def put(self, spooled: Path, sha1: str | None = None) -> tuple[str, int]:
        if sha1 is None:
            sha1, size = sha1_of(spooled)
        else:
            size = spooled.stat().st_size
        return self._keep(spooled, sha1, size, synced=not self.fsync)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        sha1 = hashlib.sha1(data).hexdigest()
        if os.path.exists(self._target(sha1)):
            self._name_on_disk(sha1)
            return sha1, len(data)
        tmp = self.spool_dir / f"put-{time.time_ns()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    os.fsync(f.fileno())          # written and synced through one handle
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if _full(e):
                raise StoreFull(e.errno, "the content store is full") from None
            raise
        return self._keep(tmp, sha1, len(data), synced=True)

    def _target(self, sha1: str) -> str:
        if self.levels == 1:
            return f"{self.root}/{sha1[:2]}/{sha1}"
        return f"{self.root}/{sha1[:2]}/{sha1[2:4]}/{sha1}"

    def _keep(self, spooled: Path, sha1: str, size: int, synced: bool) -> tuple[str, int]:
        target = self._target(sha1)
        if os.path.exists(target):
            spooled.unlink(missing_ok=True)
            self._name_on_disk(sha1)
            return sha1, size
        try:
            if not synced:
                with open(spooled, "rb+") as f:
                    os.fsync(f.fileno())          # the bytes are on disk before their name is
            parent = os.path.dirname(target)
            if self.levels == 2 and parent not in self._dirs:
                os.makedirs(parent, exist_ok=True)
                self._dirs.add(parent)
            os.replace(spooled, target)           # atomic: a reader sees all of it or nothing
            if self.fsync:
                _fsync_dir(parent)          # and the name survives a crash
        except OSError as e:
            spooled.unlink(missing_ok=True)
            if _full(e):
                raise StoreFull(e.errno, "the content store is full") from None
            raise
        return sha1, size

    def _name_on_disk(self, sha1: str) -> None:
        """Bytes already stored: another writer may have renamed them in but not yet synced the
        directory, and this put must not return before that."""
        if self.fsync:
            _fsync_dir(os.path.dirname(self._target(sha1)))

    def sync(self, sha1s) -> set[str]:
        """Put stored files and their names on disk (what a store without fsync left in the page
        cache); the sha1s that are stored."""
        stored, dirs = set(), set()
        for sha1 in sha1s:
            try:
                fd = os.open(self._target(sha1), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            stored.add(sha1)
            dirs.add(os.path.dirname(self._target(sha1)))
        for d in dirs:
            _fsync_dir(d)
        return stored

    def open(self, sha1: str) -> BinaryIO:
        return open(self.path(sha1), "rb")

    def delete(self, sha1: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha1).unlink()

    def keys(self) -> Iterator[str]:
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for f in first.glob("*/*" if self.levels == 2 else "*"):
                if len(f.name) == 40:
                    yield f.name

    def sweep_spool(self, max_age: float = 24 * 3600) -> int:
        """Remove what dead processes of this host left in the spool (a kill -9 mid-transfer)."""
        host = socket.gethostname()
        removed = 0
        for d in self.spool_root.iterdir():
            name, _, pid = d.name.rpartition("-")
            if d == self.spool_dir or not d.is_dir():
                continue
            dead = name == host and pid.isdigit() and not alive(int(pid))
            stale = name != host and time.time() - d.stat().st_mtime > max_age
            if dead or stale:
                for f in d.iterdir():
                    f.unlink(missing_ok=True)
                    removed += 1
                with contextlib.suppress(OSError):
                    d.rmdir()
        return removed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
