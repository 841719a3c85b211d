"""The repository's index in PostgreSQL: the only module that speaks SQL.

Bytes and rows change together under a per-hash advisory lock, so that a failed submission
never deletes bytes another document (a retry, the same report twice) still needs.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

from psycopg.rows import class_row
from psycopg_pool import ConnectionPool


@dataclass
class Row:
    unique_id: str
    sha1: str
    size: int
    mime_type: str
    state: str
    owner: str
    old: bool = False          # pending past the grace period (read by unfinished())
    patient_id: str | None = None   # the DocumentEntry's patientId (for the audit record of a retrieve)


_LOCK = "SELECT pg_advisory_xact_lock(hashtext('xdsi.repository.' || %s))"


class Index:
    def __init__(self, pool: ConnectionPool, owner: str | None = None):
        self.pool = pool
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"

    def reserve(self, docs: list[Row]) -> tuple[list[str], list[Row]]:
        """Record ``docs`` as pending, in one transaction. Returns (uniqueIds newly recorded,
        rows already there for the others: a retry or a conflict, for the caller to judge).
        One round trip, and a second only when some uniqueId is already there."""
        with self.pool.connection() as conn, conn.pipeline():
            for sha1 in sorted({d.sha1 for d in docs}):
                conn.execute(_LOCK, (sha1,))
            inserts = [(d, conn.cursor(row_factory=class_row(Row)).execute(
                "INSERT INTO document (unique_id, sha1, size, mime_type, state, owner, patient_id) "
                "VALUES (%s, %s, %s, %s, 'pending', %s, %s) ON CONFLICT (unique_id) DO NOTHING "
                "RETURNING unique_id, sha1, size, mime_type, state, owner",
                (d.unique_id, d.sha1, d.size, d.mime_type, self.owner, d.patient_id))) for d in docs]
            created = [d.unique_id for d, cur in inserts if cur.fetchone()]
            taken = [d.unique_id for d in docs if d.unique_id not in created]
            existing = conn.cursor(row_factory=class_row(Row)).execute(
                "SELECT unique_id, sha1, size, mime_type, state, owner FROM document "
                "WHERE unique_id = ANY(%s)", (taken,)).fetchall() if taken else []
            conn.execute("COMMIT")
        return created, existing

    def mark_registered(self, unique_ids: list[str]) -> None:
        """Not flushed before it returns: after a crash the row is still pending, and recovery,
        which asks the registry, marks it registered again. What was acknowledged (the bytes, the
        pending row, the registry's entry) is on disk before the answer either way."""
        if not unique_ids:
            return
        with self.pool.connection() as conn, conn.pipeline():
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute("UPDATE document SET state = 'registered', registered_at = now() "
                         "WHERE unique_id = ANY(%s) AND state = 'pending'", (unique_ids,))
            conn.execute("COMMIT")

    def forget(self, unique_ids: list[str], delete_bytes: Callable[[str], None]) -> None:
        """Drop pending rows and the bytes no other row needs (deleted before commit: a crash
        leaves a pending row without bytes, which recovery forgets, never bytes without a row)."""
        if not unique_ids:
            return
        with self.pool.connection() as conn, conn.transaction():
            hashes = [h for (h,) in conn.execute(
                "SELECT DISTINCT sha1 FROM document WHERE unique_id = ANY(%s) AND state = 'pending' "
                "ORDER BY sha1", (unique_ids,))]
            for sha1 in hashes:
                conn.execute(_LOCK, (sha1,))
            conn.execute("DELETE FROM document WHERE unique_id = ANY(%s) AND state = 'pending'",
                         (unique_ids,))
            for sha1 in hashes:
                if conn.execute("SELECT 1 FROM document WHERE sha1 = %s LIMIT 1", (sha1,)).fetchone() is None:
                    delete_bytes(sha1)

    def registered(self, unique_ids: list[str]) -> dict[str, Row]:
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Row))
            rows = cur.execute("SELECT unique_id, sha1, size, mime_type, state, owner, patient_id FROM document "
                               "WHERE unique_id = ANY(%s) AND state = 'registered'", (unique_ids,)).fetchall()
            conn.rollback()
        return {r.unique_id: r for r in rows}

    def unfinished(self, grace_seconds: float) -> list[Row]:
        """Pending rows that no live submission is working on: those of dead processes of this
        host, and any older than the grace period, this process's own included (a submission whose
        registration timed out has answered, and nobody else will finish it)."""
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Row))
            rows = cur.execute(
                "SELECT unique_id, sha1, size, mime_type, state, owner, "
                "created_at < now() - make_interval(secs => %s) AS old FROM document "
                "WHERE state = 'pending' ORDER BY created_at", (grace_seconds,)).fetchall()
            conn.rollback()
        host = socket.gethostname()
        return [r for r in rows if r.old or (r.owner != self.owner and _dead_here(r.owner, host))]

    def orphans(self, hashes: list[str], delete_bytes: Callable[[str], None]) -> int:
        """Delete stored bytes that no row names."""
        if not hashes:
            return 0
        with self.pool.connection() as conn:
            named = {h for (h,) in conn.execute("SELECT DISTINCT sha1 FROM document WHERE sha1 = ANY(%s)",
                                                (hashes,))}
            conn.rollback()
        removed = 0
        for sha1 in (h for h in hashes if h not in named):
            with self.pool.connection() as conn, conn.transaction():
                conn.execute(_LOCK, (sha1,))      # a submission may be naming them right now
                if conn.execute("SELECT 1 FROM document WHERE sha1 = %s LIMIT 1", (sha1,)).fetchone() is None:
                    delete_bytes(sha1)
                    removed += 1
        return removed

    def counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT state, count(*) FROM document GROUP BY state").fetchall()
            conn.rollback()
        return dict(rows)


def _dead_here(owner: str, host: str) -> bool:
    name, _, pid = owner.rpartition(":")
    if name != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
