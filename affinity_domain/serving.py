"""Running an actor's doors: a WSGI app under waitress (``http_server``), MLLP listeners, ``/health`` and
``/metrics`` beside each HTTP door, clean stop on signals. Every listener follows the node's ``[tls]``
(``secure_node``): TLS only when it is set, and no plain listener off loopback unless allowed."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from . import http_server as _http, metrics, secure_node, tls as _tls, web
from .config import ConfigError
from .health import Health
from .http_server import HttpLimits
from .tls import TlsSettings

log = logging.getLogger("xdsi.serve")


def path_app(path: str, app):
    """Serve ``app`` at exactly ``path``; anything else is a 404."""
    def routed(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") != path.rstrip("/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"nothing here; the service is at {path}\n".encode()]
        return app(environ, start_response)
    return routed


def prefix_app(prefix: str, app, otherwise):
    """``app`` for paths at or under ``prefix`` (a resource tree such as DICOMweb's), ``otherwise`` for the rest."""
    def routed(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            return app(environ, start_response)
        return otherwise(environ, start_response)
    return routed


def listen(host: str, port: int, tls: TlsSettings | None = None) -> socket.socket:
    """A bound, listening TCP socket that worker processes can share; refused off loopback without TLS
    (``tls``: the node's settings unless given)."""
    secure_node.check_listener(host, port, "HTTP", tls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise
    sock.listen(1024)
    return sock


def http_server(app, sock: socket.socket, threads: int = 8, limits: HttpLimits = HttpLimits(),
                tls: TlsSettings | None = None):
    """A waitress server on ``sock`` held to ``limits`` (``http_server.HttpLimits``); HTTPS only when
    the TLS settings (``tls``, else the node's: ``secure_node.setup``) are set."""
    if tls is None:
        context, timeout = secure_node.server_context(), secure_node.handshake_timeout()
    else:
        context, timeout = (_tls.server_context(tls) if tls.enabled else None), float(tls.handshake_timeout)
    return _http.create(app, sock, limits, threads, context, timeout, secure_node.on_refused("HTTPS"))


def http_limits(s, body_bytes: int, path_body_bytes: dict[str, int] | None = None) -> HttpLimits:
    """An actor's HTTP limits from its settings' ``http_*`` keys."""
    paths = {path.rstrip("/") or "/": limit for path, limit in (path_body_bytes or {}).items()}
    return HttpLimits(body_bytes, paths, s.http_max_connections, s.http_idle_seconds,
                      s.http_header_seconds, s.http_request_seconds, s.http_linger_seconds)


def observability(data_dir: Path, actor: str) -> Health:
    """The actor's health (probes to register) and metrics, under ``<data dir>/run/<actor>/``, emptied
    now: call it once, before forking."""
    run = Path(data_dir) / "run" / actor
    metrics.setup(run / "metrics")
    shutil.rmtree(run / "health", ignore_errors=True)
    (run / "health").mkdir(parents=True)
    return Health(run / "health")


def with_status(app, health: Health):
    """``app`` with ``GET /health`` (200, or 503 when unhealthy) and ``GET /metrics`` beside it."""
    def wsgi(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in ("/health", "/metrics"):
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return web.respond(start_response, "405 Method Not Allowed", {"error": f"GET {path}"}, [("Allow", "GET")])
        if environ.get(web.BODY_REFUSED):
            return web.respond(start_response, "413 Payload Too Large", {"error": web.too_large(
                environ[web.BODY_REFUSED]).message})
        if path == "/health":
            report = health.report()
            return web.respond(start_response, "200 OK" if report["status"] == "ok" else "503 Service Unavailable",
                               report)
        data = metrics.exposition(health)
        start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Content-Length", str(len(data)))])
        return [data]
    return wsgi


def fork_workers(count: int, health: Health | None = None) -> list[int] | None:
    """Fork ``count`` worker processes; returns their pids in the parent, None in a worker.

    Python's GIL keeps one process on one core; workers sharing the listening socket use the
    others. Fork before opening pools or threads: each process opens its own. With ``health``,
    each process of several reports its workers' state for the others (``Health.start_publishing``).
    """
    pids = []
    if health is not None and count:
        health.expected = {"main", *(f"worker-{n + 1}" for n in range(count))}
    for n in range(count):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            if health is not None:
                health.forked(f"worker-{n + 1}")
                health.start_publishing()
            return None
        pids.append(pid)
    if health is not None and count:
        health.start_publishing()
    return pids


def _die_with_parent() -> None:
    """A worker whose parent was killed (SIGKILL, OOM) gets SIGTERM instead of serving on alone."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _wait(stop: threading.Event) -> None:
    # A signal may be delivered to any thread; the main thread runs Python's handler only when it
    # runs bytecode, so a wait without a timeout can sleep through it.
    while not stop.wait(0.5):
        pass


def stop_workers(pids: list[int], grace: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids:
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    log.warning("worker did not stop; killed", extra={"pid": pid})
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        except ChildProcessError:
            pass


def bind(factory, host: str, port: int, tls: TlsSettings | None = None, listener: str = "listener"):
    """``factory()`` (an MLLP or DICOM listener on ``host:port``). The listeners check the plaintext rule
    themselves with the node's settings; ``tls``, when given, is checked here."""
    if tls is not None:
        secure_node.check_listener(host, port, listener, tls)
    try:
        return factory()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise


def wait_for_stop() -> None:
    """Block until SIGINT/SIGTERM (a worker process with no HTTP server of its own)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _wait(stop)


def run_until_stopped(http_servers: list, closers: list = ()) -> None:
    """Serve until SIGINT/SIGTERM, then close every listener."""
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():           # a second signal (xdsi up sends SIGTERM after Ctrl-C) changes nothing
            return
        stop.set()
        for s in http_servers:
            s.close()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=s.run, daemon=True) for s in http_servers]
    for t in threads:
        t.start()
    _wait(stop)
    for close in closers:
        close()
    log.info("stopped")
