"""HTTPS for the doors that serve WSGI under waitress (SOAP, JSON): waitress itself has no TLS.

Each accepted connection's handshake runs in a small pool of handshake threads, within
``[tls] handshake_timeout``, so that a slow or silent peer never holds waitress's event loop; a
connection that completes it becomes an ordinary waitress channel over the ``SSLSocket``, whose
reads and writes translate OpenSSL's "want read / want write" into waitress's "nothing now". A
refused handshake is logged with its reason (``tls.refusal``) and given to ``on_refused``, for
the Security Alert audit record. The WSGI environ carries ``wsgi.url_scheme = https`` and
``xdsi.peer``, the client's ``PeerIdentity`` (None when it sent no certificate).
"""
from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from .tls import PeerIdentity, accept, peer_identity


PEER = "xdsi.peer"          # the environ key of the client's PeerIdentity
_DISCONNECTED = {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE, errno.EBADF}


class _TlsTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ[PEER] = self.channel.peer
        return environ


class TlsChannel(HTTPChannel):
    task_class = _TlsTask
    peer: PeerIdentity | None = None

    def handle_read(self):
        try:
            data = self.socket.recv(self.adj.recv_bytes)
            # What OpenSSL has decrypted beyond that is not seen by select(): read it now.
            while data and self.socket.pending():
                data += self.socket.recv(self.socket.pending())
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:     # ssl.SSLError is one: a broken record or an alert ends the connection
            self.handle_close()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
        else:
            self.connected = False

    def send(self, data, do_close=True):
        try:
            return self.socket.send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return 0        # OpenSSL keeps what it took: the same bytes come again (a moving buffer is allowed)
        except OSError as e:
            if isinstance(e, ssl.SSLError) or e.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise


class TlsWSGIServer(TcpWSGIServer):
    channel_class = TlsChannel

    def __init__(self, application, sock: socket.socket, context: ssl.SSLContext, handshake_timeout: float,
                 threads: int, handshakes: int, on_refused: Callable[[tuple, str], None] | None, **adjustments):
        self.context, self.handshake_timeout, self.on_refused = context, handshake_timeout, on_refused
        # Bounded: a flood of connections waits for a handshake thread, never more threads.
        self.handshakes = ThreadPoolExecutor(max_workers=handshakes, thread_name_prefix="tls-handshake")
        self.waiting = threading.BoundedSemaphore(handshakes * 8)
        adj = Adjustments(sockets=[sock], threads=threads, url_scheme="https", **adjustments)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        super().__init__(application, map={}, _start=True, _sock=sock, dispatcher=dispatcher, adj=adj,
                         bind_socket=False, sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def handle_accept(self):
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        if not self.waiting.acquire(blocking=False):
            conn.close()        # more peers mid-handshake than we hold: shed, as a full backlog would
            return
        self.handshakes.submit(self._handshake, conn, addr)

    def _handshake(self, conn: socket.socket, addr) -> None:
        try:
            conn.setblocking(True)
            tls = accept(conn, self.context, self.handshake_timeout, addr, "TLS", self.on_refused)
        finally:
            self.waiting.release()
        if tls is None:
            return
        tls.setblocking(False)
        peer = peer_identity(tls.getpeercert())
        self.trigger.pull_trigger(lambda: self._open(tls, addr, peer))

    def _open(self, tls: ssl.SSLSocket, addr, peer: PeerIdentity | None) -> None:
        channel = self.channel_class(self, tls, addr, self.adj, map=self._map)
        channel.peer = peer

    def close(self):
        self.handshakes.shutdown(wait=False, cancel_futures=True)
        super().close()


def https_server(app, sock: socket.socket, context: ssl.SSLContext, handshake_timeout: float, threads: int = 8,
                 on_refused: Callable[[tuple, str], None] | None = None) -> TlsWSGIServer:
    """What ``serving.http_server`` is with TLS: the same app, on the same listening socket."""
    return TlsWSGIServer(app, sock, context, handshake_timeout, threads, handshakes=max(4, threads),
                         on_refused=on_refused, clear_untrusted_proxy_headers=True, ident="xdsi")
