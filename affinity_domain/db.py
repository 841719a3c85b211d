"""PostgreSQL, the only store: embedded (pgserver under the data dir) or any server by URL.

Each actor owns one PostgreSQL schema named after it, so that all actors can share one
database (as in compose.yaml) without their tables meeting. Schema changes are versioned SQL
files per actor, applied once, in order, under an advisory lock so that several processes
starting together do not race.
"""
from __future__ import annotations

import logging
import warnings
from importlib import resources
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from .config import Config

log = logging.getLogger("xdsi.db")
_embedded = {}  # data dir -> pgserver handle; kept alive for the life of the process


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pg`` and return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # only needed without a server URL

    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    if pgdata not in _embedded:
        _embedded[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
        log.info("embedded PostgreSQL", extra={"pgdata": str(pgdata)})
    return _embedded[pgdata].get_uri()


def database_url(config: Config) -> str:
    return config.database_url or embedded_url(config.data_dir)


def _snapshot_reader(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True


def open_pool(url: str, actor: str, max_size: int = 10, read_only: bool = False, checked: bool = True,
              durable: bool = True) -> ConnectionPool:
    """Connections whose search_path is the actor's own schema; ``read_only`` ones also read
    one snapshot per transaction. ``checked``: each connection is tested (a round trip) before it
    is lent, so a restarted server costs no failed statement; a hot path that retries on
    ``OperationalError`` instead can do without. ``durable=False``: commits return before their
    WAL is flushed (lost only in an OS crash, never inconsistent)."""
    options = f"-c search_path={actor}" + ("" if durable else " -c synchronous_commit=off")
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                          kwargs={"autocommit": False, "options": options},
                          configure=_snapshot_reader if read_only else None,
                          check=ConnectionPool.check_connection if checked else None)
    pool.open(wait=True, timeout=30)
    return pool


def migrate(url: str, actor: str, package: str) -> list[int]:
    """Apply ``package/migrations/NNN_*.sql`` not yet recorded for ``actor``; return the versions applied."""
    files = sorted((f for f in resources.files(package).joinpath("migrations").iterdir()
                    if f.name.endswith(".sql")), key=lambda f: f.name)
    applied = []
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            # One migrator at a time per database; the lock is released with the transaction.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('xdsi.migrate'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {actor}")
            conn.execute(f"SET LOCAL search_path = {actor}")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migration (version int PRIMARY KEY, "
                         "applied_at timestamptz DEFAULT now())")
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migration")}
            for f in files:
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                conn.execute(f.read_text())
                conn.execute("INSERT INTO schema_migration (version) VALUES (%s)", (version,))
                applied.append(version)
    if applied:
        log.info("schema migrated", extra={"actor": actor, "versions": applied})
    return applied
