"""The only module of the consumer that speaks SQL."""
from __future__ import annotations

import json

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .entries import ManifestEntry


class Store:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def new_fetch(self, trigger: str, local_patient: str, since: str = "", modalities: list[str] = ()) -> int:
        """A durable fetch, searched by a worker (so an ACKed order survives a restart)."""
        with self.pool.connection() as conn:
            return conn.execute("INSERT INTO prefetch (trigger, local_patient, since, modalities) "
                                "VALUES (%s, %s, %s, %s) RETURNING id",
                                (trigger, local_patient, since, json.dumps(list(modalities)))).fetchone()[0]

    def claim_fetch(self) -> dict | None:
        with self.pool.connection() as conn, conn.transaction():
            return conn.cursor(row_factory=dict_row).execute(
                "UPDATE prefetch SET next_attempt = now() + interval '10 minutes', attempts = attempts + 1 "
                "WHERE id = (SELECT id FROM prefetch WHERE state = 'new' AND next_attempt <= now() "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *").fetchone()

    def fetch_done(self, fetch: int, state: str, affinity_id: str | None = None, error: str | None = None,
                   note: str = "") -> None:
        entry = {"state": state, **({"note": note} if note else {}), **({"error": error} if error else {})}
        with self.pool.connection() as conn:
            conn.execute("UPDATE prefetch SET state = %s, affinity_id = coalesce(%s, affinity_id), error = %s, "
                         "history = history || %s::jsonb, updated_at = now() WHERE id = %s",
                         (state, affinity_id, error, json.dumps([entry]), fetch))

    def fetch_retry(self, fetch: int, error: str, delay: float) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE prefetch SET error = %s, next_attempt = now() + make_interval(secs => %s), "
                         "history = history || %s::jsonb, updated_at = now() WHERE id = %s",
                         (error[:500], delay, json.dumps([{"error": error[:300], "retry_in": delay}]), fetch))

    def add_jobs(self, fetch: int, local_patient: str, entries: list[ManifestEntry]) -> int:
        """New jobs for studies not fetched before for this patient; returns how many are new."""
        new = 0
        with self.pool.connection() as conn, conn.transaction():
            for e in entries:
                row = conn.execute(
                    "INSERT INTO job (prefetch, local_patient, document_unique_id, repository_unique_id, home, "
                    "study_uid, accession, report_unique_id, report_repository, report_mime, history) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    # A study that failed before is tried again by a new order; one stored or under way is left alone.
                    "ON CONFLICT (local_patient, document_unique_id) DO UPDATE SET state = 'found', attempts = 0, "
                    "next_attempt = now(), last_error = NULL, prefetch = EXCLUDED.prefetch, "
                    "history = job.history || EXCLUDED.history WHERE job.state = 'failed' RETURNING id",
                    (fetch, local_patient, e.unique_id, e.repository_unique_id, e.home, e.study_uid, e.accession,
                     e.report.unique_id if e.report else "", e.report.repository_unique_id if e.report else "",
                     e.report.mime_type if e.report else "",
                     json.dumps([{"state": "found", "fetch": fetch}]))).fetchone()
                new += row is not None
        return new

    def resume(self) -> int:
        """At start-up: unfinished fetches and jobs leased by a process that is gone are due again."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE prefetch SET next_attempt = now() WHERE state = 'new' AND next_attempt > now()")
            return conn.execute("UPDATE job SET next_attempt = now() WHERE state NOT IN ('stored', 'failed') "
                                "AND next_attempt > now()").rowcount

    def stored_sops(self, local_patient: str, uids: list[str]) -> set[str]:
        with self.pool.connection() as conn:
            return {u for (u,) in conn.execute("SELECT sop_uid FROM stored_instance WHERE local_patient = %s "
                                               "AND sop_uid = ANY(%s)", (local_patient, uids))}

    def mark_stored(self, job: int, local_patient: str, uids: list[str], done: int) -> None:
        """Instances now in the local PACS, and the job's count, in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO stored_instance (local_patient, sop_uid, job) VALUES (%s, %s, %s) "
                                "ON CONFLICT DO NOTHING", [(local_patient, u, job) for u in uids])
            conn.execute("UPDATE job SET instances_done = %s, updated_at = now() WHERE id = %s", (done, job))

    def set_job(self, job: int, **values) -> None:
        sets = ", ".join(f"{k} = %({k})s" for k in values)
        with self.pool.connection() as conn:
            conn.execute(f"UPDATE job SET {sets}, updated_at = now() WHERE id = %(id)s", {**values, "id": job})

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

    def note(self, job: int, note: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE job SET history = history || %s::jsonb, updated_at = now() WHERE id = %s",
                         (json.dumps([{"note": note}]), job))

    def retry(self, job: int, error: str, delay: float, give_up: bool) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE job SET last_error = %s, next_attempt = now() + make_interval(secs => %s), "
                "state = CASE WHEN %s THEN 'failed' ELSE state END, updated_at = now(), "
                "history = history || %s::jsonb WHERE id = %s",
                (error[:500], delay, give_up, json.dumps([{"error": error[:300], "retry_in": delay,
                                                           "gave_up": give_up}]), job))

    def jobs(self, fetch: int | None = None, patient: str | None = None, limit: int = 200) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute(
                "SELECT * FROM job WHERE (%(f)s::bigint IS NULL OR prefetch = %(f)s) "
                "AND (%(p)s::text IS NULL OR local_patient = %(p)s) ORDER BY id DESC LIMIT %(n)s",
                {"f": fetch, "p": patient, "n": limit}).fetchall()

    def job(self, job: int) -> dict | None:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM job WHERE id = %s", (job,)).fetchone()

    def fetches(self, limit: int = 100) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM prefetch ORDER BY id DESC LIMIT %s",
                                                             (limit,)).fetchall()

    def fetch(self, fetch: int) -> dict | None:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM prefetch WHERE id = %s",
                                                             (fetch,)).fetchone()

    def queue_depths(self) -> dict[str, dict]:
        """What waits, as a health probe reports it: fetches not yet searched, jobs not finished."""
        with self.pool.connection() as conn:
            fetches, open_jobs = conn.execute(
                "SELECT (SELECT count(*) FROM prefetch WHERE state = 'new'), "
                "(SELECT count(*) FROM job WHERE state NOT IN ('stored', 'failed'))").fetchone()
        return {"fetch-queue": {"queue": fetches}, "job-queue": {"queue": open_jobs}}
