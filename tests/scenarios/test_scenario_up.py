"""``xdsi up`` stops every process it started, forked workers included, on Ctrl-C (SIGINT to the
whole process group, as a terminal sends it) and on SIGTERM from a supervisor."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.services import domain_on_free_ports, wait_until

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
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
