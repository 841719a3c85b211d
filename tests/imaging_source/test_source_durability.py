"""What the imaging source acknowledges, it keeps: by default a C-STORE is answered only after the
instance's file, its directory entry and its intake journal line are synced, seen from outside by
strace on the running process; with ``durability = "fast"`` nothing is synced. The intake's
PostgreSQL connections commit synchronously unless fast. The journal's group commit shares one
fdatasync among appends made at once, and never lets an append return before a sync that began
after its write."""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from affinity_domain import config as config_mod
from affinity_domain.config import ConfigError
from imaging_source import cli, indexer
from tests.imaging_source import source_dicom as dd
from tests.services import free_port, launch, wait_until


@pytest.fixture(scope="module")
def intake_only(new_database, tmp_path_factory):
    """Two imaging sources that only take instances in: the default one and a fast one."""
    started = {}
    for name, extra in (("default", {}), ("fast", {"durability": "fast"})):
        tmp = tmp_path_factory.mktemp(f"source-{name}")
        dicom, http = free_port(), free_port()
        settings = {"dicom_port": dicom, "port": http, "store_dir": tmp / "images", "min_free_bytes": 0,
                    "quiet_seconds": 3600, "pix_port": free_port(), **extra}
        proc, _ = launch("imaging-source", tmp, new_database(), settings, [dicom, http])
        started[name] = SimpleNamespace(process=proc, dicom_port=dicom, store=tmp / "images")
    yield started
    for s in started.values():
        s.process.terminate()
        s.process.wait(timeout=30)


_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")                  # strace -f -o: "PID call(args) = result"
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>")


def syscalls(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(line where it began, line where it returned, name, arguments) of each traced call,
    joining strace's ``<unfinished ...>`` and ``<... resumed>`` halves (threads interleave)."""
    calls, pending = [], {}
    for n, line in enumerate(lines):
        if m := _RESUMED.match(line):
            began, name, args = pending.pop((m[1], m[2]), (n, m[2], ""))
            calls.append((began, n, name, args))
        elif m := _CALL.match(line):
            if line.endswith("<unfinished ...>"):
                pending[(m[1], m[2])] = (n, m[2], m[3])
            else:
                calls.append((n, n, m[2], m[3]))
    return calls


def traced_c_store(source, directory: Path) -> tuple[list[tuple[int, int, str, str]], int]:
    """Send one instance with DCMTK storescu while strace follows every thread of the source; the
    traced calls and the line where the C-STORE response (the first P-DATA sent) began."""
    study = dd.make_study(directory / "study", "DURABLE1", series=1, per_series=1)
    out = directory / "strace.out"
    tracer = subprocess.Popen(["strace", "-f", "-yy", "-s", "4", "-e", "trace=fsync,fdatasync,sendto,sendmsg,write",
                               "-o", str(out), "-p", str(source.process.pid)],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "attached" in tracer.stderr.readline()        # "Process N attached with K threads"
        subprocess.run(["/usr/bin/storescu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port),
                        str(study.files[0])], env=dd.ENV, check=True, capture_output=True, timeout=30)

        def sent_on_dicom() -> list:
            lines = out.read_text().splitlines()
            return [c for c in syscalls(lines) if c[2] in ("sendto", "sendmsg", "write")
                    and f":{source.dicom_port}->" in c[3]]
        wait_until(lambda: len(sent_on_dicom()) >= 3, timeout=10)    # A-ASSOCIATE-AC, C-STORE-RSP, A-RELEASE-RP
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    calls = syscalls(out.read_text().splitlines())
    response = next(c for c in calls if c[2] in ("sendto", "sendmsg", "write")
                    and f":{source.dicom_port}->" in c[3] and '"\\4' in c[3])      # a P-DATA-TF PDU
    return calls, response[0]


def test_the_default_source_syncs_file_name_and_journal_before_it_answers(intake_only, tmp_path):
    source = intake_only["default"]
    calls, answered = traced_c_store(source, tmp_path)
    store = str(source.store)
    synced = [(ended, name, args) for _, ended, name, args in calls if name in ("fsync", "fdatasync")]
    spooled = [ended for ended, name, args in synced if f"<{store}/spool/" in args]
    named = [ended for ended, name, args in synced if re.search(rf"<{re.escape(store)}/[0-9a-f]{{2}}>", args)]
    journaled = [ended for ended, name, args in synced if f"<{store}/intake.journal>" in args]
    assert spooled and spooled[0] < answered, "the instance's bytes were not synced before the answer"
    assert named and spooled[0] < named[0] < answered, "its directory entry was not synced before the answer"
    assert journaled and journaled[0] < answered, "its journal line was not synced before the answer"


def test_a_fast_source_answers_without_syncing(intake_only, tmp_path):
    source = intake_only["fast"]
    calls, answered = traced_c_store(source, tmp_path)
    assert not [c for c in calls if c[2] in ("fsync", "fdatasync") and str(source.store) in c[3]
                and c[1] < answered]


@pytest.mark.parametrize("durability, expected", [(None, "on"), ("fast", "off")])
def test_intake_commits_are_synchronous_unless_fast(new_database, tmp_path, durability, expected):
    environ = {"XDSI_DATABASE_URL": new_database(), "XDSI_DATA_DIR": str(tmp_path)}
    if durability:
        environ["XDSI_IMAGING_SOURCE_DURABILITY"] = durability
    s, content, index = cli._open(config_mod.load(environ=environ))
    try:
        with index.intake_pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == expected
        assert content.fsync is (expected == "on")
    finally:
        index.close()


def test_durability_takes_only_its_two_words(tmp_path):
    config = config_mod.load(environ={"XDSI_IMAGING_SOURCE_DURABILITY": "sometimes"})
    with pytest.raises(ConfigError, match="durability"):
        config_mod.build_settings(cli.ImagingSourceSettings, config)


def test_appends_made_at_once_share_a_sync_and_none_returns_before_its_line_is_synced(tmp_path, monkeypatch):
    path = tmp_path / "intake.journal"
    journal = indexer.Journal(path, fsync=True)
    synced: list[int] = []                  # per sync done, the journal's size when it began
    real = os.fdatasync

    def slow_fdatasync(fd):
        began = os.fstat(fd).st_size
        time.sleep(0.005)                    # a disk slower than this one: appends pile up behind it
        real(fd)
        synced.append(began)
    monkeypatch.setattr(indexer.os, "fdatasync", slow_fdatasync)
    returned: dict[bytes, int] = {}          # line -> syncs done when its append returned

    def append_many(k: int) -> None:
        for i in range(25):
            line = f"{k} {i}\n".encode()
            journal.append(line)
            returned[line] = len(synced)
    threads = [threading.Thread(target=append_many, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    journal.close()
    data = path.read_bytes()
    assert len(returned) == 200 and data.count(b"\n") == 200
    for line, done in returned.items():
        end = data.index(line) + len(line)
        assert any(size >= end for size in synced[:done]), f"{line!r} returned before a sync covered it"
    assert len(synced) < 100, f"{len(synced)} syncs for 200 appends from 8 threads"
