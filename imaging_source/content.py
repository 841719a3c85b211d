"""The image store: received Part-10 files kept byte for byte, named by their SHA-1.

pynetdicom writes each received dataset to a spool file (``STORE_RECV_CHUNKED_DATASET``);
the spool is on the same file system as the store, so keeping an instance is a rename, never a
copy or a decode. An S3-compatible store would implement ``put``/``open``/``path``/``delete``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
from typing import BinaryIO


class StoreFull(OSError):
    """The store's file system is out of space (DICOM 0xA700, Out of Resources)."""


def sha1_of(path: Path) -> tuple[str, int]:
    h = hashlib.sha1()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class FileStore:
    def __init__(self, root: str | os.PathLike, fsync: bool = False, min_free_bytes: int = 0):
        self.root = Path(root)
        self.spool_dir = self.root / "spool" / str(os.getpid())
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.fsync, self.min_free_bytes = fsync, min_free_bytes
        self._dirs: set[Path] = set()

    def path(self, sha1: str) -> Path:
        return self.root / sha1[:2] / sha1[2:4] / sha1

    def has_room(self) -> bool:
        if not self.min_free_bytes:
            return True
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize >= self.min_free_bytes

    def put(self, spooled: Path) -> tuple[str, int]:
        """Keep ``spooled`` (consumed); return its (sha1, size)."""
        sha1, size = sha1_of(spooled)
        target = self.path(sha1)
        try:
            if self.fsync:
                with open(spooled, "rb+") as f:
                    os.fsync(f.fileno())
            if target.parent not in self._dirs:      # mkdir costs more than the rest of a put
                target.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(target.parent)
            os.replace(spooled, target)      # atomic: all of it under its name, or nothing
        except OSError as e:
            spooled.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(e.errno, "image store is full") from None
            raise
        return sha1, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        tmp = self.spool_dir / f"put-{os.getpid()}-{id(data)}"
        try:
            tmp.write_bytes(data)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(e.errno, "image store is full") from None
            raise
        return self.put(tmp)

    def open(self, sha1: str) -> BinaryIO:
        return open(self.path(sha1), "rb")

    def delete(self, sha1: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha1).unlink()

    def sweep_spool(self) -> int:
        """Remove spool files of processes that are gone (associations aborted mid-transfer)."""
        removed = 0
        for d in (self.root / "spool").iterdir():
            if d == self.spool_dir or not d.name.isdigit() or _alive(int(d.name)):
                continue
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
