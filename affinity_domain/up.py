"""``xdsi up``: every installed actor as its own process, logs labelled; SIGINT or SIGTERM stops all.

``up`` owns the embedded PostgreSQL: it starts it, hands its actors the URL and stops it last, so an
actor that dies or has to be killed leaves no server behind. Each actor runs in a process group of
its own, which its forked workers share, so that a group that does not stop in time is killed whole,
even one whose leader is already gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from . import db, secure_node, tls
from .config import Config

GRACE = 15.0        # seconds an actor has to stop after SIGTERM; then its process group is killed


def _pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{name:>14} | {line.decode('utf-8', 'replace')}")


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:         # a member we may not signal: the group is still there
        return True


def run_all(config: Config, actors: dict) -> int:
    stop = threading.Event()
    # Installed explicitly: started with SIGINT ignored (a script's `cmd &`), Python installs no
    # KeyboardInterrupt. A second signal changes nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ, XDSI_DATA_DIR=str(config.data_dir))
    embedded = not config.database_url
    try:
        if embedded:
            env["XDSI_DATABASE_URL"] = db.embedded_url(config.data_dir)
        procs = {}
        from .tokens import first_token
        token = first_token(env.get("XDSI_DATABASE_URL") or config.database_url)
        if token:
            print(f"first operator token for the JSON APIs (shown once; more with xdsi token add): {token}",
                  flush=True)
        print("xdsi affinity domain — endpoints:", flush=True)
        for name, actor in sorted(actors.items()):
            if stop.is_set():
                break
            node = tls.tls_settings(config, name.replace("-", "_"))
            for label, where in actor.endpoints(config):
                print(f"  {name:<15} {label:<38} {secure_node.shown(where, node)}", flush=True)
            procs[name] = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", name],
                                           env=env, stderr=subprocess.PIPE, process_group=0)
            threading.Thread(target=_pump, args=(name, procs[name].stderr), daemon=True).start()
        while not stop.is_set() and all(p.poll() is None for p in procs.values()):
            stop.wait(0.5)
        return _stop(procs)
    finally:
        if embedded:
            db.stop_embedded(config.data_dir)


def _stop(procs: dict[str, subprocess.Popen]) -> int:
    """SIGTERM to every actor's group; whatever is left after GRACE is killed."""
    for p in procs.values():
        _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    failed = 0
    for name, p in procs.items():
        try:
            code = p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"{name:>14} | did not stop in {GRACE:.0f} s; killed\n")
            _signal_group(p.pid, signal.SIGKILL)
            code = p.wait(timeout=10)
        if code not in (0, -signal.SIGTERM):
            failed = 1
            sys.stderr.write(f"{name:>14} | exited with status {code}\n")
    # The workers of an actor that was killed outlive it in its group.
    for name, p in procs.items():
        while _signal_group(p.pid, 0):
            if time.monotonic() > deadline:
                sys.stderr.write(f"{name:>14} | workers did not stop; killed\n")
                _signal_group(p.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    return failed
