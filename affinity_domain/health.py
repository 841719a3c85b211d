"""An actor's health: it is alive (it answers), and what its workers' probes report, across its processes.

A probe is a callable returning ``{worker name: state}``; a state has any of ``alive`` (bool),
``restarts``, ``quarantined``, ``queue`` (counts) and ``last_error`` (text), which is what
``affinity_domain.workers.Supervisor.state()`` returns: ``health.register(supervisor.state)``.
The actor is unhealthy (``/health`` answers 503) when a worker is not alive, a probe fails, or one of
its processes stops reporting.

An actor of several processes (``serving.fork_workers``) has each of them write its report to
``<data dir>/run/<actor>/health/<process>.json`` every second: whichever process answers ``/health``
reads the others' there, so a worker process that died shows as not reporting.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("xdsi.health")

Probe = Callable[[], dict[str, dict]]
PUBLISH_SECONDS = 1.0
STALE_SECONDS = 5.0          # a process whose last report is older is not reporting


def threads(**named: threading.Thread | None) -> Probe:
    """A probe for plain threads: each alive or not."""
    return lambda: {name: {"alive": t is not None and t.is_alive()} for name, t in named.items()}


class Health:
    def __init__(self, directory: Path | None = None, process: str = "main"):
        self.directory, self.process = directory, process
        self.probes: list[Probe] = []
        self.expected: set[str] = set()      # the processes that must report (set before forking)
        self._stop = threading.Event()
        self._publisher: threading.Thread | None = None
        self._writing = threading.Lock()

    def register(self, probe: Probe) -> None:
        self.probes.append(probe)
        if self._publisher is not None:
            self._publish()                 # the others see it now, not a round later

    def forked(self, process: str) -> None:
        """In a forked worker process: its own name and probes (the parent's are not its own)."""
        self.process, self.probes = process, []
        self._stop, self._publisher, self._writing = threading.Event(), None, threading.Lock()

    def workers(self) -> dict[str, dict]:
        """This process's workers, as its probes report them now."""
        found: dict[str, dict] = {}
        for probe in self.probes:
            try:
                found.update(probe())
            except Exception as e:      # a probe that fails is a problem to report, not to hide
                name = getattr(probe, "__qualname__", "probe")
                found[name] = {"alive": False, "last_error": f"the probe failed: {e}"}
        return found

    def report(self) -> dict:
        """``{"status": "ok" | "unhealthy", "problems": [...], "processes": {name: {...}}}``."""
        processes = {self.process: {"pid": os.getpid(), "workers": self.workers()}}
        now = time.time()
        for path in sorted(self.directory.glob("*.json")) if self.directory else ():
            name = path.stem
            if name == self.process:
                continue
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                continue                     # being replaced right now; its next report counts
            other["reported_seconds_ago"] = round(now - other.pop("at", 0), 1)
            processes[name] = other
        problems = [f"process {name} has not reported" for name in sorted(self.expected - set(processes))]
        for name, process in processes.items():
            if process.get("reported_seconds_ago", 0) > STALE_SECONDS:
                problems.append(f"process {name} (pid {process.get('pid')}) has not reported for "
                                f"{process['reported_seconds_ago']} s")
            for worker, state in process.get("workers", {}).items():
                if state.get("alive") is False:
                    why = f": {state['last_error']}" if state.get("last_error") else ""
                    problems.append(f"worker {worker} of process {name} is not alive{why}")
        return {"status": "unhealthy" if problems else "ok", "problems": problems, "processes": processes}

    # ---------------------------------------------------------------- several processes

    def start_publishing(self) -> None:
        """Write this process's report for the others every second (call it in each process)."""
        if self.directory is None or self._publisher is not None:
            return
        self._publish()             # before anyone can ask
        self._publisher = threading.Thread(target=self._publish_forever, name="health", daemon=True)
        self._publisher.start()

    def _publish_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._publish()
            except Exception:            # the next round may do; a stale report says so meanwhile
                log.exception("cannot publish this process's health")
            self._stop.wait(PUBLISH_SECONDS)

    def _publish(self) -> None:
        path = self.directory / f"{self.process}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        report = json.dumps({"pid": os.getpid(), "at": time.time(), "workers": self.workers()}, default=str)
        with self._writing:
            tmp.write_text(report)
            tmp.replace(path)

    def retire(self) -> None:
        """This process stops: its report goes (a process that stops on purpose is no problem)."""
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join(PUBLISH_SECONDS * 2)
            (self.directory / f"{self.process}.json").unlink(missing_ok=True)
