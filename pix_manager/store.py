"""The only module of the PIX manager that speaks SQL."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import ConnectionPool

from .demographics import Demographics
from .matching import Candidate


@dataclass
class Identity:
    id: int
    domain: str
    pid: str
    enterprise: int
    demographics: Demographics
    linked_by: str


def _identity(row) -> Identity:
    return Identity(row.id, row.domain, row.pid, row.enterprise, Demographics(**row.demographics), row.linked_by)


class Tx:
    """One transaction's view of the index."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def lock(self, keys: list[str]) -> None:
        """Serialize matching among identities that could match each other."""
        for key in sorted(set(keys)):
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))

    def add_domain(self, oid: str) -> None:
        self.conn.execute("INSERT INTO domain (oid) VALUES (%s) ON CONFLICT DO NOTHING", (oid,))

    def domains(self) -> set[str]:
        return {r.oid for r in self.conn.execute("SELECT oid FROM domain")}

    def identity(self, domain: str, pid: str) -> Identity | None:
        row = self.conn.execute("SELECT * FROM identity WHERE domain = %s AND pid = %s AND merged_into IS NULL",
                                (domain, pid)).fetchone()
        return _identity(row) if row else None

    def identity_by_id(self, identity: int) -> Identity:
        return _identity(self.conn.execute("SELECT * FROM identity WHERE id = %s", (identity,)).fetchone())

    def candidates(self, keys: list[str], exclude: int | None = None, limit: int = 500) -> list[Candidate]:
        if not keys:
            return []
        rows = self.conn.execute(
            "SELECT id, enterprise, domain, demographics FROM identity WHERE blocking && %s "
            "AND merged_into IS NULL AND id IS DISTINCT FROM %s LIMIT %s", (keys, exclude, limit)).fetchall()
        return [Candidate(r.id, r.enterprise, r.domain, Demographics(**r.demographics)) for r in rows]

    def occupied(self, domain: str, enterprises: set[int], exclude: int | None = None) -> set[int]:
        """Which of ``enterprises`` already hold an identity of ``domain``."""
        if not enterprises:
            return set()
        return {r.enterprise for r in self.conn.execute(
            "SELECT enterprise FROM identity WHERE enterprise = ANY(%s) AND domain = %s AND merged_into IS NULL "
            "AND id IS DISTINCT FROM %s", (list(enterprises), domain, exclude))}

    def decisions(self, identity: int) -> dict[int, tuple[str, str]]:
        return {r.b: (r.verdict, r.decided_by) for r in self.conn.execute(
            "SELECT b, verdict, decided_by FROM decision WHERE a = %s "
            "UNION ALL SELECT a, verdict, decided_by FROM decision WHERE b = %s", (identity, identity))}

    def kept_apart(self, identity: int) -> set[int]:
        """The persons now holding an identity a person said is not this one (a remembered break):
        whoever else joins them later, this identity is never linked into them."""
        return {r.enterprise for r in self.conn.execute(
            "SELECT i.enterprise FROM decision d JOIN identity i ON i.id = CASE WHEN d.a = %s THEN d.b ELSE d.a END "
            "WHERE (d.a = %s OR d.b = %s) AND d.verdict = 'break' AND i.merged_into IS NULL",
            (identity, identity, identity))}

    def new_enterprise(self, affinity_id: str | None, affinity_prefix: str, authority: str) -> tuple[int, str]:
        new = self.conn.execute("SELECT nextval(pg_get_serial_sequence('enterprise', 'id'))").fetchone()[0]
        affinity_id = affinity_id or f"{affinity_prefix}{new}^^^&{authority}&ISO"
        self.conn.execute("INSERT INTO enterprise (id, affinity_id) VALUES (%s, %s)", (new, affinity_id))
        return new, affinity_id

    def affinity_id(self, enterprise: int) -> str:
        return self.conn.execute("SELECT affinity_id FROM enterprise WHERE id = %s", (enterprise,)).fetchone()[0]

    def add_identity(self, domain: str, pid: str, enterprise: int, d: Demographics, keys: list[str],
                     score: float | None, explanation: str, linked_by: str) -> int:
        return self.conn.execute(
            "INSERT INTO identity (domain, pid, enterprise, demographics, blocking, link_score, link_explanation, "
            "linked_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (domain, pid, enterprise, json.dumps(d.as_dict()), keys, score, explanation, linked_by)).fetchone()[0]

    def update_identity(self, identity: int, d: Demographics, keys: list[str]) -> None:
        self.conn.execute("UPDATE identity SET demographics = %s, blocking = %s, updated_at = now() WHERE id = %s",
                          (json.dumps(d.as_dict()), keys, identity))

    def move_identity(self, identity: int, enterprise: int, score: float | None, explanation: str,
                      linked_by: str) -> None:
        self.conn.execute("UPDATE identity SET enterprise = %s, link_score = %s, link_explanation = %s, "
                          "linked_by = %s, updated_at = now() WHERE id = %s",
                          (enterprise, score, explanation, linked_by, identity))

    def members(self, enterprise: int) -> list[Identity]:
        return [_identity(r) for r in self.conn.execute(
            "SELECT * FROM identity WHERE enterprise = %s AND merged_into IS NULL ORDER BY id", (enterprise,))]

    def merge_enterprise(self, subsumed: int, surviving: int) -> None:
        self.conn.execute("UPDATE identity SET enterprise = %s WHERE enterprise = %s", (surviving, subsumed))
        self.conn.execute("UPDATE enterprise SET merged_into = %s WHERE id = %s", (surviving, subsumed))

    def merge_identity(self, subsumed: int, surviving: int) -> None:
        self.conn.execute("UPDATE identity SET merged_into = %s, updated_at = now() WHERE id = %s",
                          (surviving, subsumed))

    def rename_identity(self, identity: int, pid: str) -> None:
        self.conn.execute("UPDATE identity SET pid = %s, updated_at = now() WHERE id = %s", (pid, identity))

    def add_review(self, identity: int, candidate: int, score: float, explanation: str) -> int:
        return self.conn.execute("INSERT INTO review_item (identity, candidate, score, explanation) "
                                 "VALUES (%s, %s, %s, %s) RETURNING id",
                                 (identity, candidate, score, explanation)).fetchone()[0]

    def review_item(self, item: int, lock: bool = False):
        return self.conn.execute("SELECT * FROM review_item WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                                 (item,)).fetchone()

    def close_review(self, item: int, status: str, who: str) -> None:
        self.conn.execute("UPDATE review_item SET status = %s, decided_by = %s, decided_at = now() WHERE id = %s",
                          (status, who, item))

    def close_reviews_between(self, a: int, b: int, status: str, who: str) -> None:
        self.conn.execute("UPDATE review_item SET status = %s, decided_by = %s, decided_at = now() "
                          "WHERE status = 'open' AND ((identity = %s AND candidate = %s) OR "
                          "(identity = %s AND candidate = %s))", (status, who, a, b, b, a))

    def remember(self, a: int, b: int, verdict: str, who: str) -> None:
        a, b = min(a, b), max(a, b)
        self.conn.execute("INSERT INTO decision (a, b, verdict, decided_by) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (a, b) DO UPDATE SET verdict = EXCLUDED.verdict, "
                          "decided_by = EXCLUDED.decided_by, decided_at = now()", (a, b, verdict, who))

    def enqueue(self, destination: str, message: bytes) -> None:
        self.conn.execute("INSERT INTO outbox (destination, message) VALUES (%s, %s)", (destination, message))


class Store:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            conn.row_factory = namedtuple_row
            with conn.transaction():
                yield Tx(conn)

    def reviews(self, status: str = "open", limit: int = 100) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.cursor(row_factory=psycopg.rows.dict_row).execute(
                "SELECT r.id, r.status, r.score, r.explanation, r.decided_by, r.decided_at, r.created_at, "
                "a.domain AS identity_domain, a.pid AS identity_pid, a.demographics AS identity_demographics, "
                "b.domain AS candidate_domain, b.pid AS candidate_pid, b.demographics AS candidate_demographics "
                "FROM review_item r JOIN identity a ON a.id = r.identity JOIN identity b ON b.id = r.candidate "
                "WHERE %s = '' OR r.status = %s ORDER BY r.id LIMIT %s", (status, status, limit)).fetchall()

    def review(self, item: int) -> dict | None:
        """One review item in full: both identities side by side, and the persons they belong to now."""
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            row = cur.execute(
                "SELECT r.*, a.domain AS identity_domain, a.pid AS identity_pid, "
                "a.demographics AS identity_demographics, ea.affinity_id AS identity_person, "
                "b.domain AS candidate_domain, b.pid AS candidate_pid, b.demographics AS candidate_demographics, "
                "eb.affinity_id AS candidate_person FROM review_item r "
                "JOIN identity a ON a.id = r.identity JOIN enterprise ea ON ea.id = a.enterprise "
                "JOIN identity b ON b.id = r.candidate JOIN enterprise eb ON eb.id = b.enterprise "
                "WHERE r.id = %s", (item,)).fetchone()
            if row is not None:
                row["decisions"] = cur.execute(
                    "SELECT verdict, decided_by, decided_at FROM decision WHERE a = %s AND b = %s",
                    (min(row["identity"], row["candidate"]), max(row["identity"], row["candidate"]))).fetchall()
            return row

    def person(self, domain: str, pid: str) -> dict | None:
        with self.pool.connection() as conn:
            conn = conn.cursor(row_factory=psycopg.rows.dict_row)
            me = conn.execute("SELECT enterprise FROM identity WHERE domain = %s AND pid = %s AND merged_into IS NULL",
                              (domain, pid)).fetchone()
            if me is None:
                return None
            e = conn.execute("SELECT id, affinity_id FROM enterprise WHERE id = %s", (me["enterprise"],)).fetchone()
            e["identities"] = conn.execute(
                "SELECT domain, pid, demographics, link_score, link_explanation, linked_by FROM identity "
                "WHERE enterprise = %s AND merged_into IS NULL ORDER BY id", (me["enterprise"],)).fetchall()
            return e

    def rekey(self, keys_of, batch: int = 5000) -> int:
        """Recompute every identity's blocking keys (after ``[pix] blocking_keys`` changed), in batches
        so that the feed goes on meanwhile; ``keys_of(Demographics) -> list[str]``."""
        done, last = 0, 0
        while True:
            with self.transaction() as tx:
                rows = tx.conn.execute("SELECT id, demographics FROM identity WHERE id > %s ORDER BY id LIMIT %s",
                                       (last, batch)).fetchall()
                if not rows:
                    return done
                with tx.conn.cursor() as cur:
                    cur.executemany("UPDATE identity SET blocking = %s WHERE id = %s",
                                    [(keys_of(Demographics(**r.demographics)), r.id) for r in rows])
            done, last = done + len(rows), rows[-1].id

    # ---------------------------------------------------------------- outbox

    def due(self, limit: int = 20):
        """Claim messages due for delivery (one deliverer per message across processes)."""
        with self.pool.connection() as conn:
            conn.row_factory = namedtuple_row
            with conn.transaction():
                return conn.execute(
                    "UPDATE outbox SET next_attempt = now() + interval '60 seconds', attempts = attempts + 1 "
                    "WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt <= now() "
                    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, destination, message, attempts",
                    (limit,)).fetchall()

    def delivered(self, message: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE outbox SET delivered_at = now(), last_error = NULL, quarantined = false "
                         "WHERE id = %s", (message,))

    def failed(self, message: int, error: str, retry_in: float, quarantined: bool = False) -> None:
        """Not delivered this time; ``quarantined``: by a failure no retry gets past by itself."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE outbox SET last_error = %s, next_attempt = now() + make_interval(secs => %s), "
                         "quarantined = %s WHERE id = %s", (error[:500], retry_in, quarantined, message))

    def quarantined(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND quarantined").fetchone()[0]

    def pending(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
