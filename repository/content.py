"""The content store: document bytes by SHA-1. ``ContentStore`` is what the repository needs;
``FileStore`` keeps them on a local (or shared) file system. An S3-compatible store would
implement the same four methods (``put`` as an upload of the spooled file)."""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol


class ContentStore(Protocol):
    def put(self, spooled: Path, sha1: str) -> None:
        """Keep the spooled file's bytes under ``sha1`` durably; the spooled file is consumed.
        Bytes already stored under that hash are kept and the new copy dropped (a retry)."""

    def open(self, sha1: str) -> BinaryIO: ...

    def delete(self, sha1: str) -> None: ...

    def keys(self) -> Iterator[str]: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """``root/ab/cd/<sha1>``; spool files in ``root/spool/<host>-<pid>/`` on the same file system,
    so that storing is a rename, never a copy."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool_root = self.root / "spool"
        self.spool_dir = self.spool_root / f"{socket.gethostname()}-{os.getpid()}"
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha1: str) -> Path:
        return self.root / sha1[:2] / sha1[2:4] / sha1

    def put(self, spooled: Path, sha1: str) -> None:
        target = self.path(sha1)
        if target.exists():
            spooled.unlink(missing_ok=True)
            return
        with open(spooled, "rb+") as f:
            os.fsync(f.fileno())        # the bytes are on disk before their name is
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spooled, target)     # atomic: a reader sees all of it or nothing
        _fsync_dir(target.parent)       # and the name survives a crash

    def open(self, sha1: str) -> BinaryIO:
        return open(self.path(sha1), "rb")

    def delete(self, sha1: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha1).unlink()

    def keys(self) -> Iterator[str]:
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for f in first.glob("*/*"):
                if len(f.name) == 40:
                    yield f.name

    def sweep_spool(self, max_age: float = 24 * 3600) -> int:
        """Remove what dead processes of this host left in the spool (a kill -9 mid-upload)."""
        host = socket.gethostname()
        removed = 0
        for d in self.spool_root.iterdir():
            name, _, pid = d.name.rpartition("-")
            if d == self.spool_dir or not d.is_dir():
                continue
            dead = name == host and pid.isdigit() and not _alive(int(pid))
            stale = name != host and time.time() - d.stat().st_mtime > max_age
            if dead or stale:
                for f in d.iterdir():
                    f.unlink(missing_ok=True)
                    removed += 1
                with contextlib.suppress(OSError):
                    d.rmdir()
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
