"""The only module of the consumer that speaks SQL."""
from __future__ import annotations

import json

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .entries import ManifestEntry


class Store:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def new_fetch(self, trigger: str, local_patient: str) -> int:
        with self.pool.connection() as conn:
            return conn.execute("INSERT INTO prefetch (trigger, local_patient) VALUES (%s, %s) RETURNING id",
                                (trigger, local_patient)).fetchone()[0]

    def fetch_done(self, fetch: int, state: str, affinity_id: str | None = None, error: str | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE prefetch SET state = %s, affinity_id = coalesce(%s, affinity_id), error = %s, "
                         "updated_at = now() WHERE id = %s", (state, affinity_id, error, fetch))

    def add_jobs(self, fetch: int, local_patient: str, entries: list[ManifestEntry]) -> int:
        """New jobs for studies not fetched before for this patient; returns how many are new."""
        new = 0
        with self.pool.connection() as conn, conn.transaction():
            for e in entries:
                row = conn.execute(
                    "INSERT INTO job (prefetch, local_patient, document_unique_id, repository_unique_id, home, "
                    "study_uid, accession, history) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (local_patient, document_unique_id) DO NOTHING RETURNING id",
                    (fetch, local_patient, e.unique_id, e.repository_unique_id, e.home, e.study_uid, e.accession,
                     json.dumps([{"state": "found", "fetch": fetch}]))).fetchone()
                new += row is not None
        return new

    def resume(self) -> int:
        """At start-up: unfinished jobs leased by a process that is gone are due again."""
        with self.pool.connection() as conn:
            return conn.execute("UPDATE job SET next_attempt = now() WHERE state NOT IN ('stored', 'failed') "
                                "AND next_attempt > now()").rowcount

    def claim(self, limit: int = 4) -> list[dict]:
        """Due jobs, leased so that one worker (of any process) takes each."""
        with self.pool.connection() as conn, conn.transaction():
            return conn.cursor(row_factory=dict_row).execute(
                "UPDATE job SET next_attempt = now() + interval '10 minutes', attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM job WHERE state NOT IN ('stored', 'failed') AND next_attempt <= now() "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *", (limit,)).fetchall()

    def advance(self, job: int, state: str, note: str = "", **counts) -> None:
        sets = ", ".join(f"{k} = %({k})s" for k in counts)
        with self.pool.connection() as conn:
            conn.execute(
                f"UPDATE job SET state = %(state)s, last_error = NULL, updated_at = now(), "
                f"history = history || %(entry)s::jsonb{', ' + sets if sets else ''} WHERE id = %(id)s",
                {"state": state, "id": job, "entry": json.dumps([{"state": state, "note": note}]), **counts})

    def retry(self, job: int, error: str, delay: float, give_up: bool) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE job SET last_error = %s, next_attempt = now() + make_interval(secs => %s), "
                "state = CASE WHEN %s THEN 'failed' ELSE state END, updated_at = now(), "
                "history = history || %s::jsonb WHERE id = %s",
                (error[:500], delay, give_up, json.dumps([{"error": error[:300], "retry_in": delay,
                                                           "gave_up": give_up}]), job))

    def progress(self, job: int, done: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE job SET instances_done = %s, updated_at = now() WHERE id = %s", (done, job))

    def jobs(self, fetch: int | None = None, limit: int = 200) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM job WHERE %s::bigint IS NULL OR prefetch = %s ORDER BY id DESC LIMIT %s",
                                (fetch, fetch, limit)).fetchall()

    def fetches(self, limit: int = 100) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM prefetch ORDER BY id DESC LIMIT %s", (limit,)).fetchall()

    def fetch(self, fetch: int) -> dict | None:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM prefetch WHERE id = %s", (fetch,)).fetchone()
