"""Background workers under supervision.

A worker is a *step* run over and over on threads of its own until the actor stops: one round of
its queue (a batch to index, the due messages to deliver, a study to publish), waiting inside the
step when there is nothing to do. A step that raises is the worker dying: the supervisor logs it
with the error, counts a restart and runs the step again after a back-off that doubles with each
death in a row (``[workers] restart_seconds`` up to ``restart_max_seconds``). The worker is not
alive from its death until a step completes again, so whoever answers on its behalf can tell. A
thread that ends any other way is started anew by the supervisor's watch.

An item a worker cannot handle is the worker's to quarantine (kept, visible, retryable) while it
carries on with the rest; the supervisor only shows how many there are, and the queue's depth.

``Supervisor.state()`` is what ``/health``, ``/metrics`` and ``xdsi status`` show of the workers.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

from .config import Seconds

log = logging.getLogger("xdsi.workers")
ERROR_CHARS = 500               # last_error is cut to this length

Step = Callable[[threading.Event], None]        # one round; returns soon once the event is set


@dataclass(frozen=True)
class WorkerSettings:
    SECTION: ClassVar[str] = "workers"
    restart_seconds: Seconds        # the wait before the first restart of a worker that died
    restart_max_seconds: Seconds    # the longest wait between restarts of one that keeps dying
    stop_seconds: Seconds           # how long stopping waits for the workers, all together
    check_seconds: Seconds          # how often the supervisor looks at its workers and reports


def _counter(read: Callable[[], int] | None) -> Callable[[], int]:
    return read or (lambda: 0)


class Worker:
    """One supervised worker: ``threads`` threads running the same step."""

    def __init__(self, name: str, step: Step, threads: int, settings: WorkerSettings,
                 queue: Callable[[], int] | None, quarantined: Callable[[], int] | None,
                 changed: Callable[[], None]):
        self.name, self.step, self.s, self._changed = name, step, settings, changed
        self._read = {"queue": _counter(queue), "quarantined": _counter(quarantined)}
        self._counts = {"queue": 0, "quarantined": 0}
        self.restarts = 0
        self.last_error: str | None = None
        self._dying = [0] * threads           # per thread: deaths in a row since a step last completed
        self._threads: list[threading.Thread | None] = [None] * threads
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        """Every thread running, none of them dead since its step last completed."""
        return all(t is not None and t.is_alive() for t in self._threads) and not any(self._dying)

    def start(self, stop: threading.Event, slot: int | None = None) -> None:
        for i in range(len(self._threads)) if slot is None else [slot]:
            name = self.name if len(self._threads) == 1 else f"{self.name}-{i + 1}"
            thread = threading.Thread(target=self._loop, args=(i, stop), name=name, daemon=True)
            self._threads[i] = thread
            thread.start()

    def _loop(self, slot: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step(stop)
            except Exception as e:
                if stop.is_set():           # cut short by the stop: not a death
                    return
                self._died(slot, e, stop)
                continue
            if self._dying[slot]:
                self._dying[slot] = 0
                log.warning("worker running again", extra={"worker": self.name, "restarts": self.restarts})
                self._changed()

    def _died(self, slot: int, error: BaseException, stop: threading.Event) -> None:
        with self._lock:
            self._dying[slot] += 1
            self.restarts += 1
            self.last_error = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
            wait = min(self.s.restart_seconds * 2 ** (self._dying[slot] - 1), self.s.restart_max_seconds)
        log.error("worker died; restarting it", exc_info=error,
                  extra={"worker": self.name, "error": self.last_error, "restart_in": wait,
                         "restarts": self.restarts})
        self._changed()
        stop.wait(wait)

    def watch(self, stop: threading.Event) -> bool:
        """Start anew a thread that ended while the worker should run; True when one was."""
        ended = [i for i, t in enumerate(self._threads) if t is not None and not t.is_alive()]
        for i in ended:
            if stop.is_set():
                return False
            with self._lock:
                self.restarts += 1
                self.last_error = self.last_error or "its thread ended"
            log.error("worker thread ended; restarting it", extra={"worker": self.name, "restarts": self.restarts})
            self.start(stop, i)
        return bool(ended)

    def state(self) -> dict:
        for key, read in self._read.items():
            try:
                self._counts[key] = int(read())
            except Exception as e:      # a count that cannot be read now (the database down) keeps its last value
                log.debug("worker count unavailable", extra={"worker": self.name, "count": key, "error": str(e)})
        return {"alive": self.alive, "restarts": self.restarts, "quarantined": self._counts["quarantined"],
                "queue": self._counts["queue"], "last_error": self.last_error}

    def join(self, deadline: float) -> bool:
        for t in self._threads:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in self._threads)


class Supervisor:
    """An actor's background workers: started, watched, restarted, reported and stopped together.

    ``report``, when given, receives ``state()`` whenever it changes (at most every ``check_seconds``,
    and at once when a worker dies): the actor's run record, for ``xdsi status``."""

    def __init__(self, settings: WorkerSettings, report: Callable[[dict], None] | None = None):
        self.s, self.report = settings, report
        self.workers: dict[str, Worker] = {}
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        self._reported: dict | None = None

    def add(self, name: str, step: Step, *, threads: int = 1, queue: Callable[[], int] | None = None,
            quarantined: Callable[[], int] | None = None) -> Worker:
        worker = Worker(name, step, threads, self.s, queue, quarantined, self._wake.set)
        self.workers[name] = worker
        return worker

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start(self.stopping)
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def state(self) -> dict[str, dict]:
        """Per worker: alive (bool), restarts (int), quarantined (int), queue (int), last_error (str | None)."""
        return {name: worker.state() for name, worker in self.workers.items()}

    def alive(self, name: str) -> bool:
        return self.workers[name].alive

    def _watch(self) -> None:
        while not self.stopping.is_set():
            for worker in self.workers.values():
                worker.watch(self.stopping)
            self._report()
            self._wake.wait(self.s.check_seconds)
            self._wake.clear()

    def _report(self) -> None:
        if self.report is None:
            return
        state = self.state()
        if state != self._reported:
            try:
                self.report(state)
                self._reported = state
            except Exception:
                log.exception("worker state not recorded")

    def stop(self, timeout: float | None = None) -> bool:
        """Tell every worker to stop and wait for them, ``stop_seconds`` at most in all; False when
        one is still running (its thread is a daemon: it ends with the process)."""
        self.stopping.set()
        self._wake.set()
        deadline = time.monotonic() + (self.s.stop_seconds if timeout is None else timeout)
        stopped = True
        for worker in self.workers.values():
            if not worker.join(deadline):
                stopped = False
                log.warning("worker did not stop in time", extra={"worker": worker.name})
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        return stopped
