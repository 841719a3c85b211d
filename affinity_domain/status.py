"""``xdsi status``: which actors of a data dir are up and healthy.

Each ``xdsi serve ACTOR`` records its pid and endpoints in ``<data dir>/run/ACTOR.json`` while it runs.
An actor is healthy when that pid is alive, every endpoint answers (an HTTP one at ``/health``, any
HTTP answer for an actor with no such resource; any other one to a TCP connect) and every background
worker it records (``record_workers``) is alive. Items its workers have quarantined are counted on
its line."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from . import config, tls
from .content import alive

TIMEOUT = 3.0


def record_path(data_dir: Path, actor: str) -> Path:
    return data_dir / "run" / f"{actor}.json"


@contextlib.contextmanager
def running(data_dir: Path, actor: str, endpoints: list[tuple[str, str]]):
    """Record this process as ``actor`` for the life of the block."""
    path = record_path(data_dir, actor)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path.write_text(json.dumps({"pid": pid, "endpoints": [where for _, where in endpoints]}))
    try:
        yield
    finally:
        # A forked worker leaves the block too; only the process recorded removes the record.
        if os.getpid() == pid and _read(path).get("pid") == pid:
            path.unlink(missing_ok=True)


def record_workers(data_dir: Path, actor: str, workers: dict[str, dict]) -> None:
    """Put the state of the actor's workers (``workers.Supervisor.state()``) in this process's run record."""
    path = record_path(data_dir, actor)
    record = _read(path)
    if record.get("pid") != os.getpid():
        return
    record["workers"] = workers
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def address(where: str) -> tuple[str, str, int]:
    """An endpoint as ``endpoints()`` prints it (``http://h:p/path``, ``AE@h:p``, ``h:p``): kind, host, port."""
    if where.startswith(("http://", "https://")):
        u = urlsplit(where)
        return "http", u.hostname, u.port or 80
    return ("tcp", *config.address(where.rpartition("@")[2], where))


def probe(where: str, timeout: float = TIMEOUT, context: ssl.SSLContext | None = None) -> str | None:
    """None when the endpoint answers; else why not. An ``https://`` one is asked with ``context``
    (our client certificate: the actor may require one)."""
    kind, host, port = address(where)
    try:
        if kind == "http" and where.startswith("https://"):
            urllib.request.urlopen(f"https://{host}:{port}/health", timeout=timeout, context=context).close()
        elif kind == "http":
            urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout).close()
        else:
            socket.create_connection((host, port), timeout).close()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        try:        # an unhealthy actor's 503 says why
            why = "; ".join(json.load(e).get("problems", []))
        except (ValueError, AttributeError, OSError):
            why = ""
        return f"{where}: HTTP {e.code}" + (f" ({why})" if why else "")
    except (OSError, urllib.error.URLError) as e:
        return f"{where}: {getattr(e, 'reason', e)}"
    return None


def _client(cfg: config.Config | None, actor: str) -> ssl.SSLContext | None:
    if cfg is None:
        return None
    settings = tls.tls_settings(cfg, actor.replace("-", "_"))
    return tls.client_context(settings) if settings.enabled else None


def actor_status(data_dir: Path, actor: str, cfg: config.Config | None = None) -> tuple[bool, str]:
    record = _read(record_path(data_dir, actor))
    pid = record.get("pid")
    if not pid or not alive(pid):
        return False, "not running"
    context = _client(cfg, actor) if any(w.startswith("https://") for w in record.get("endpoints", [])) else None
    problems = [p for p in (probe(where, context=context) for where in record.get("endpoints", [])) if p]
    workers = record.get("workers") or {}
    problems += [f"worker {name} is not running ({w.get('restarts', 0)} restarts; last error: {w.get('last_error')})"
                 for name, w in workers.items() if not w.get("alive")]
    held = [f"{name} {w['quarantined']}" for name, w in workers.items() if w.get("quarantined")]
    quarantined = f"; quarantined: {', '.join(held)}" if held else ""
    if problems:   # one line per actor, whatever an error's text holds
        return False, f"unhealthy (pid {pid}): " + " ".join("; ".join(problems).split()) + quarantined
    return True, f"up (pid {pid}): " + ", ".join(record.get("endpoints", [])) + quarantined


def report(data_dir: Path, actors: list[str], cfg: config.Config | None = None) -> int:
    """``cfg``: for the ``[tls]`` client certificate ``https://`` endpoints are asked with."""
    healthy = True
    for actor in sorted(actors):
        ok, line = actor_status(data_dir, actor, cfg)
        healthy &= ok
        print(f"{actor:<15} {line}")
    return 0 if healthy else 1
