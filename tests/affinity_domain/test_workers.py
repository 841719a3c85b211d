"""The supervision of background workers (affinity_domain.workers), pure: threads, no peers."""
from __future__ import annotations

import threading
import time

import pytest

from affinity_domain import status
from affinity_domain.config import build_settings, load
from affinity_domain.workers import Supervisor, WorkerSettings
from tests.services import wait_until

FAST = WorkerSettings(restart_seconds=0.05, restart_max_seconds=0.2, stop_seconds=2.0, check_seconds=0.05)


def test_the_settings_have_defaults_and_are_configurable():
    s = build_settings(WorkerSettings, load(environ={"XDSI_WORKERS_RESTART_SECONDS": "3"}))
    assert s.restart_seconds == 3.0 and s.restart_max_seconds >= s.restart_seconds and s.stop_seconds > 0


def test_a_worker_that_dies_is_reported_restarted_and_alive_again_once_a_step_completes():
    failing = threading.Event()
    failing.set()
    rounds = []

    def step(stop):
        if failing.is_set():
            raise RuntimeError("the table is gone")
        rounds.append(1)
        stop.wait(0.01)

    reported = []
    supervisor = Supervisor(FAST, reported.append)
    supervisor.add("indexer", step, queue=lambda: 7, quarantined=lambda: 2)
    supervisor.start()
    try:
        dead = wait_until(lambda: (s := supervisor.state()["indexer"]) and s["restarts"] >= 2 and s, timeout=5)
        assert dead == {"alive": False, "restarts": dead["restarts"], "quarantined": 2, "queue": 7,
                        "last_error": "RuntimeError: the table is gone"}
        assert not supervisor.alive("indexer")
        assert wait_until(lambda: any(not r["indexer"]["alive"] for r in reported), timeout=5)
        failing.clear()
        assert wait_until(lambda: supervisor.alive("indexer") and rounds, timeout=5)
        assert wait_until(lambda: reported[-1]["indexer"]["alive"], timeout=5)
        assert supervisor.state()["indexer"]["last_error"] == "RuntimeError: the table is gone"   # kept for who looks
    finally:
        assert supervisor.stop()


def test_the_back_off_doubles_up_to_its_longest():
    deaths = []

    def step(stop):
        deaths.append(time.monotonic())
        raise ValueError("again")

    supervisor = Supervisor(WorkerSettings(restart_seconds=0.05, restart_max_seconds=0.2, stop_seconds=2.0,
                                           check_seconds=1.0))
    supervisor.add("w", step)
    supervisor.start()
    wait_until(lambda: len(deaths) >= 6, timeout=10)
    supervisor.stop()
    gaps = [b - a for a, b in zip(deaths, deaths[1:])]
    assert gaps[0] < gaps[2] and all(g < 1.0 for g in gaps)      # 0.05, 0.1, 0.2, 0.2 ... (generous bounds)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_ends_is_started_anew():
    ends = threading.Event()
    runs = []

    def step(stop):
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            ends.set()
            raise SystemExit      # not an Exception: the thread itself ends
        stop.wait(0.05)

    supervisor = Supervisor(FAST)
    supervisor.add("outbox", step)
    supervisor.start()
    try:
        assert wait_until(lambda: len(runs) >= 2, timeout=5)
        state = supervisor.state()["outbox"]
        assert state["restarts"] == 1 and wait_until(lambda: supervisor.alive("outbox"), timeout=5)
    finally:
        supervisor.stop()


def test_several_threads_are_one_worker_and_all_must_run():
    calls = {"jobs-1": 0, "jobs-2": 0}
    lock = threading.Lock()

    def step(stop):
        name = threading.current_thread().name
        with lock:
            calls[name] += 1
        if name == "jobs-2":
            raise OSError("PACS refused")
        stop.wait(0.02)

    supervisor = Supervisor(FAST)
    supervisor.add("jobs", step, threads=2)
    supervisor.start()
    try:
        assert wait_until(lambda: calls["jobs-1"] > 3 and calls["jobs-2"] > 1, timeout=5)
        assert not supervisor.alive("jobs")          # one of its threads is dying over and over
    finally:
        supervisor.stop()


def test_stopping_waits_no_longer_than_its_bound():
    def stuck(stop):
        time.sleep(30)          # a step that ignores the stop (a peer that never answers)

    supervisor = Supervisor(WorkerSettings(restart_seconds=0.05, restart_max_seconds=0.2, stop_seconds=0.5,
                                           check_seconds=0.05))
    supervisor.add("publisher", stuck)
    supervisor.start()
    started = time.monotonic()
    assert supervisor.stop() is False
    assert time.monotonic() - started < 5


def test_a_count_that_cannot_be_read_keeps_its_last_value():
    down = threading.Event()

    def count():
        if down.is_set():
            raise OSError("database down")
        return 3

    supervisor = Supervisor(FAST)
    supervisor.add("publisher", lambda stop: stop.wait(0.05), queue=count)
    assert supervisor.state()["publisher"]["queue"] == 3
    down.set()
    assert supervisor.state()["publisher"]["queue"] == 3


def test_the_run_record_shows_workers_to_xdsi_status(tmp_path, capsys):
    with status.running(tmp_path, "imaging-source", []):
        status.record_workers(tmp_path, "imaging-source", {
            "indexer": {"alive": True, "restarts": 0, "quarantined": 2, "queue": 0, "last_error": None},
            "publisher": {"alive": True, "restarts": 1, "quarantined": 0, "queue": 4, "last_error": "x"}})
        ok, line = status.actor_status(tmp_path, "imaging-source")
        assert ok and line.endswith("; quarantined: indexer 2"), line
        status.record_workers(tmp_path, "imaging-source", {
            "indexer": {"alive": False, "restarts": 3, "quarantined": 0, "queue": 9, "last_error": "UndefinedTable"}})
        ok, line = status.actor_status(tmp_path, "imaging-source")
        assert not ok and "worker indexer is not running (3 restarts; last error: UndefinedTable)" in line
    assert not status.record_path(tmp_path, "imaging-source").exists()
