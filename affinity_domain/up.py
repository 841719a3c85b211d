"""``xdsi up``: every installed actor as its own process, logs labelled, Ctrl-C stops all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from .config import Config


def _pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{name:>14} | {line.decode('utf-8', 'replace')}")


def run_all(config: Config, actors: dict) -> int:
    env = dict(os.environ, XDSI_DATA_DIR=str(config.data_dir))
    procs = {}
    print("xdsi affinity domain — endpoints:")
    for name, actor in sorted(actors.items()):
        for label, where in actor.endpoints(config):
            print(f"  {name:<15} {label:<38} {where}")
        procs[name] = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", name],
                                       env=env, stderr=subprocess.PIPE)
        threading.Thread(target=_pump, args=(name, procs[name].stderr), daemon=True).start()
    stop = threading.Event()
    # SIGTERM (a supervisor, the demo) stops the children as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and all(p.poll() is None for p in procs.values()):
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    failed = 0
    for name, p in procs.items():
        try:
            code = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        if code not in (0, -signal.SIGTERM):
            failed = 1
            sys.stderr.write(f"{name:>14} | exited with status {code}\n")
    return 1 if failed else 0
