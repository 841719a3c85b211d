"""Running an actor's doors: a WSGI app under waitress, MLLP listeners, clean stop on signals."""
from __future__ import annotations

import errno
import logging
import signal
import threading

import waitress

from .config import ConfigError

log = logging.getLogger("xdsi.serve")


def path_app(path: str, app):
    """Serve ``app`` at exactly ``path``; anything else is a 404."""
    def routed(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") != path.rstrip("/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"nothing here; the service is at {path}\n".encode()]
        return app(environ, start_response)
    return routed


def http_server(app, host: str, port: int, threads: int = 8):
    try:
        return waitress.create_server(app, host=host, port=port, threads=threads,
                                      clear_untrusted_proxy_headers=True, ident="xdsi")
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise


def bind(factory, host: str, port: int):
    try:
        return factory()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise


def run_until_stopped(http_servers: list, closers: list = ()) -> None:
    """Serve until SIGINT/SIGTERM, then close every listener."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        for s in http_servers:
            s.close()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=s.run, daemon=True) for s in http_servers]
    for t in threads:
        t.start()
    stop.wait()
    for close in closers:
        close()
    log.info("stopped")
