"""The only module of the repository that speaks SQL: batches of received records in, searches out."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from psycopg import sql
from psycopg_pool import ConnectionPool

from .records import COLUMNS, Row


@dataclass
class Criteria:
    """What a search asks for; each list matches any of its values, and all given criteria must hold."""

    patients: list[str] = field(default_factory=list)     # a CX (id^^^&OID&ISO) or an id without authority
    after: list[tuple[str, dt.datetime]] = field(default_factory=list)   # (">=" or ">", time)
    before: list[tuple[str, dt.datetime]] = field(default_factory=list)  # ("<=" or "<", time)
    codes: list[str] = field(default_factory=list)        # EventID or EventTypeCode
    subtypes: list[str] = field(default_factory=list)     # EventTypeCode only
    users: list[str] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    limit: int = 100


def where(c: Criteria) -> tuple[sql.Composable, list]:
    """The WHERE clause of a search, and its parameters (pure)."""
    parts, params = [], []
    if c.patients:
        full = [p for p in c.patients if "^" in p]
        bare = [p for p in c.patients if "^" not in p]
        parts.append(sql.SQL("(patient_ids && %s::text[] OR patient_numbers && %s::text[])"))
        params += [full, bare]
    for op, when in c.after + c.before:
        assert op in (">=", ">", "<=", "<")
        parts.append(sql.SQL("event_time {} %s").format(sql.SQL(op)))
        params.append(when)
    if c.codes:
        parts.append(sql.SQL("(event_id = ANY(%s) OR event_types && %s::text[])"))
        params += [c.codes, c.codes]
    if c.subtypes:
        parts.append(sql.SQL("event_types && %s::text[]"))
        params.append(c.subtypes)
    for name, values in (("user_ids", c.users),):
        if values:
            parts.append(sql.SQL("{} && %s::text[]").format(sql.Identifier(name)))
            params.append(values)
    if c.outcomes:
        parts.append(sql.SQL("outcome = ANY(%s)"))
        params.append(c.outcomes)
    if c.sources:
        parts.append(sql.SQL("source_id = ANY(%s)"))
        params.append(c.sources)
    clause = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    return clause, params


class Store:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def insert(self, rows: list[Row]) -> int:
        """Store a batch in one transaction; a record already stored (same bytes) is not stored again.
        Returns how many were new."""
        if not rows:
            return 0
        columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        with self.pool.connection() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE record INCLUDING DEFAULTS) "
                         "ON COMMIT DELETE ROWS")
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY incoming ({}) FROM STDIN").format(columns)) as copy:
                    for row in rows:
                        copy.write_row([getattr(row, name) for name in COLUMNS])
                cur.execute(sql.SQL("INSERT INTO record ({c}) SELECT {c} FROM incoming ORDER BY id "
                                    "ON CONFLICT (digest) DO NOTHING").format(c=columns))
                return cur.rowcount

    def search(self, c: Criteria) -> list[dict]:
        clause, params = where(c)
        query = sql.SQL("SELECT id, received_at, transport, peer, event_id, event_types, action, outcome, "
                        "event_time, patient_ids, user_ids, source_id, problem, message FROM record WHERE {} "
                        "ORDER BY event_time DESC NULLS LAST, id DESC LIMIT %s").format(clause)
        with self.pool.connection() as conn:
            cur = conn.execute(query, [*params, c.limit])
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def get(self, record_id: int) -> dict | None:
        with self.pool.connection() as conn:
            cur = conn.execute("SELECT id, message FROM record WHERE id = %s", (record_id,))
            found = cur.fetchone()
            return None if found is None else {"id": found[0], "message": found[1]}

    def count(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM record").fetchone()[0]
