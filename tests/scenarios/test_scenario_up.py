"""``xdsi up`` stops every process it started, forked workers and the embedded PostgreSQL included, on
Ctrl-C (SIGINT to the whole process group, as a terminal sends it), on SIGINT to it alone when it was
started in the background with SIGINT ignored (a script's ``xdsi up &``), on SIGTERM from a supervisor,
and when one of its actors is killed. ``xdsi status`` says which actors of the data dir are up."""
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from affinity_domain.cli import actors
from tests import hostile
from tests.services import domain_on_free_ports, start_pix, wait_until


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    children = {int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                               text=True).stdout.split()}
    return children.union(*(descendants(c) for c in children)) if children else set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for this purpose.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_up_stops_every_process_it_started(new_database, tmp_path, how):
    moved, ports = domain_on_free_ports()
    env = dict(os.environ, XDSI_DATA_DIR=str(tmp_path / "data"), XDSI_DATABASE_URL=new_database(), **moved)
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "up"], env=env, cwd=tmp_path,
                          stdout=log, stderr=log, start_new_session=True)
    try:
        assert wait_until(lambda: all(listening(p) for p in ports), 90), "the domain did not come up"
        started = descendants(up.pid)
        # The quick start's first operator token, printed once, opens the JSON APIs.
        token = re.search(r"first operator token.*: (xdsi_\S+)", (tmp_path / "up.log").read_text()).group(1)
        review = f"http://127.0.0.1:{moved['XDSI_PIX_HTTP_PORT']}/review"
        assert hostile.curl(review, token=token)[0] == 200 and hostile.curl(review, token="")[0] == 401
        # five actors, and the workers that registry, repository and PIX fork
        assert len([p for p in started if "serve" in open(f"/proc/{p}/cmdline").read()]) > 5
        if how == "ctrl-c":
            os.killpg(up.pid, signal.SIGINT)
        else:
            up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
        assert wait_until(lambda: not any(alive(p) for p in started), 20), \
            f"still running: {[p for p in started if alive(p)]}"
        assert not any(listening(p) for p in ports)
    finally:
        kill_all(up, tmp_path / "data")


def left_behind(data: Path, session: int) -> list[str]:
    """Every live process of ``up``'s session, or whose command line or environment names its data dir
    (the embedded PostgreSQL leaves the session and names it in ``-D``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
            ours = os.getsid(int(entry.name)) == session or str(data) in cmdline \
                or f"XDSI_DATA_DIR={data}".encode() in environ
            if ours and alive(int(entry.name)):
                found.append(f"{entry.name}: {cmdline}")
        except (OSError, ProcessLookupError):
            continue        # gone meanwhile
    return found


@pytest.fixture
def data():
    """A data dir outside pytest's own folder, which a concurrent pytest run may make 0700 again: as
    root the embedded PostgreSQL runs as a user of its own, which must reach its folder to stop."""
    with tempfile.TemporaryDirectory(prefix="xup", dir="/tmp") as d:
        yield Path(d)


def kill_all(up: subprocess.Popen, data: Path) -> None:
    """After a failure: nothing of this test may outlive it (the actors have process groups of their own)."""
    for line in left_behind(data, up.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    up.wait(10)


def start_in_background(tmp_path: Path, data: Path) -> tuple[subprocess.Popen, list[int], dict]:
    """``xdsi up`` on the embedded PostgreSQL, with SIGINT ignored as a non-interactive shell's ``&`` leaves it."""
    moved, ports = domain_on_free_ports()
    env = dict(os.environ, XDSI_DATA_DIR=str(data), **moved)
    env.pop("XDSI_DATABASE_URL", None)
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "up"], env=env, cwd=tmp_path,
                          stdout=log, stderr=log, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_until(lambda: all(listening(p) for p in ports) or up.poll() is not None, 90)
        assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
    except BaseException:
        kill_all(up, data)
        raise
    return up, ports, env


def status(env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def actor_pid(up: subprocess.Popen, actor: str) -> int:
    """The actor's own process, a child of ``up`` (its forked workers have the same command line)."""
    children = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True, text=True).stdout.split()
    return next(int(p) for p in children if open(f"/proc/{p}/cmdline").read().split("\0")[-2:-1] == [actor])


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_up_in_the_background_stops_everything_it_started(tmp_path, data, how):
    up, ports, env = start_in_background(tmp_path, data)
    try:
        running = left_behind(data, up.pid)
        assert any(" -D " in p and "postgres" in p for p in running), running    # the embedded PostgreSQL
        now = status(env, tmp_path)
        assert now.returncode == 0, now.stdout + now.stderr
        assert len([line for line in now.stdout.splitlines() if " up (pid " in line]) == len(actors()), now.stdout
        up.send_signal(how)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
        assert wait_until(lambda: not left_behind(data, up.pid), 20, 0.5)
        assert not any(listening(p) for p in ports)
        after = status(env, tmp_path)
        assert after.returncode == 1 and after.stdout.count("not running") == len(actors()), after.stdout
    finally:
        kill_all(up, data)


def test_up_after_one_of_its_actors_was_killed_leaves_nothing(tmp_path, data):
    up, ports, env = start_in_background(tmp_path, data)
    try:
        os.kill(actor_pid(up, "registry"), signal.SIGKILL)
        assert up.wait(60) == 1, (tmp_path / "up.log").read_text()[-3000:]
        assert "registry | exited with status -9" in (tmp_path / "up.log").read_text()
        try:
            wait_until(lambda: not left_behind(data, up.pid), 30, 0.5)
        except TimeoutError:
            pytest.fail(f"still running: {left_behind(data, up.pid)}")
        assert not any(listening(p) for p in ports)
        assert status(env, tmp_path).returncode == 1
    finally:
        kill_all(up, data)


def test_status_names_the_one_actor_running_of_its_data_dir(new_database, tmp_path):
    pix = start_pix(new_database(), tmp_path)
    try:
        now = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "--data-dir", str(tmp_path), "status"],
                             env={k: v for k, v in pix.env.items() if k != "XDSI_DATA_DIR"}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        lines = dict(line.split(None, 1) for line in now.stdout.splitlines())
        assert now.returncode == 1 and sorted(lines) == sorted(actors()), now.stdout + now.stderr
        assert lines["pix"].startswith(f"up (pid {pix.process.pid}): ") and pix.http in lines["pix"]
        assert [name for name, line in lines.items() if line == "not running"] == sorted(set(actors()) - {"pix"})
    finally:
        pix.stop()
    assert not (tmp_path / "run" / "pix.json").exists()
