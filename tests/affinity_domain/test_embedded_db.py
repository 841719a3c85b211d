"""The embedded PostgreSQL under a data dir: one made by an older xdsi (pgserver 0.1, PostgreSQL 16) is
upgraded in place with its rows, or refused in one line that names the folder."""
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from affinity_domain import db
from affinity_domain.config import ConfigError


@pytest.fixture
def tmp_path():
    """Outside pytest's own folder, which another pytest run may make 0700 again: the embedded
    server runs as its own user, who must reach the data dir."""
    d = Path(tempfile.mkdtemp(prefix="xdb", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_data_dir_of_pgserver_16_is_upgraded_with_its_rows(tmp_path):
    pgserver = pytest.importorskip("pgserver", reason="pgserver 0.1 makes the PostgreSQL 16 data dir")
    data = tmp_path / "d"
    data.mkdir()
    old = pgserver.get_server(data / "pg", cleanup_mode="stop")
    with psycopg.connect(old.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA registry; CREATE TABLE registry.kept AS SELECT 42 AS x")
    old.cleanup()
    assert (data / "pg" / "PG_VERSION").read_text().strip() == "16"
    try:
        with psycopg.connect(db.embedded_url(data)) as conn:
            assert conn.execute("SELECT x FROM registry.kept").fetchone() == (42,)
            assert conn.info.server_version >= 180000
    finally:
        db.stop_embedded(data)
    assert (data / "pg.16" / "PG_VERSION").read_text().strip() == "16"     # the old cluster, untouched
    assert sorted(p.name for p in data.iterdir()) == ["pg", "pg.16"]


@pytest.mark.parametrize("version", ["16", "12"])
def test_a_data_dir_that_cannot_be_upgraded_is_one_line_naming_it(tmp_path, version):
    pgdata = tmp_path / "d" / "pg"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text(version + "\n")      # not a cluster pg_upgrade can read
    with pytest.raises(ConfigError) as e:
        db.embedded_url(tmp_path / "d")
    message = str(e.value)
    assert "\n" not in message and str(pgdata) in message and f"PostgreSQL {version}" in message
    assert "move the folder aside" in message
    assert sorted(p.name for p in pgdata.iterdir()) == ["PG_VERSION"]       # left as it was
    assert not (tmp_path / "d" / "pg.upgrading").exists()
