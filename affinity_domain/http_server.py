"""waitress, held to our limits: bodies refused before they are read, connections capped and fair.

waitress reads a whole request body (to a temporary file past 512 KB) before it calls the
application, up to one limit per server, and it stops accepting when its connection limit is
reached until an idle connection times out. Here:

- each path has its own body limit; a Content-Length over it is answered 413 by the door (its own
  error format: the WSGI environ carries ``web.BODY_REFUSED``) as soon as the headers are in, and a
  chunked body when it crosses the limit. What the client still sends is read and dropped for
  ``linger_seconds``, so that its kernel does not reset the connection under the answer;
- past ``max_connections`` the connection that has been quiet longest (and has no request being
  served) is closed to make room: a flood of idle connections cannot keep a request out;
- a request's line and headers must come within ``header_seconds`` and the whole request within
  ``request_seconds``; a connection with nothing to do is closed after ``idle_seconds``.

With an ``ssl.SSLContext`` (ITI-19) the same server serves HTTPS only, on the same port (waitress
itself has no TLS): each accepted connection's handshake runs in a small bounded pool within the
handshake timeout, so that a slow or silent peer never holds waitress's event loop; one that
completes becomes an ordinary channel over the ``SSLSocket``, whose reads and writes turn OpenSSL's
"want read / want write" into waitress's "nothing now". A refused handshake is logged with its
reason (``tls.refusal``) and given to ``on_refused`` (the Security Alert). The WSGI environ carries
``wsgi.url_scheme = https`` and ``PEER``, the client's ``PeerIdentity`` (None without a certificate).
"""
from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from .tls import PeerIdentity, accept, peer_identity
from .web import BODY_REFUSED

log = logging.getLogger("xdsi.http")
PEER = "xdsi.peer"          # the environ key of the client's PeerIdentity (TLS only)
_DISCONNECTED = {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE, errno.EBADF}


@dataclass(frozen=True)
class HttpLimits:
    """One listener's limits (each actor's ``http_*`` keys, and its body limits)."""

    body_bytes: int = 64 * 1024                   # the largest body on paths not in ``path_body_bytes``
    path_body_bytes: dict[str, int] = field(default_factory=dict)
    max_connections: int = 100
    idle_seconds: float = 30.0
    header_seconds: float = 10.0
    request_seconds: float = 300.0
    linger_seconds: float = 2.0

    def body_limit(self, path: str) -> int:
        return self.path_body_bytes.get(path.rstrip("/") or "/", self.body_bytes)


class _Parser(HTTPRequestParser):
    refused = 0        # the limit the body was refused by (0: not refused)

    def __init__(self, adj, channel: "_Channel"):
        super().__init__(adj)
        self.channel = channel

    def received(self, data):
        if self.completed:
            return 0
        in_head = self.body_rcv is None
        consumed = super().received(data)
        if self.error or self.body_rcv is None:
            return consumed
        limit = self.channel.server.limits.body_limit(self.path)
        over = self.content_length > limit if in_head and not self.chunked else len(self.body_rcv) > limit
        if over:
            self._refuse(limit)
            return len(data)
        return consumed

    def _refuse(self, limit: int) -> None:
        self.body_rcv.getbuf().close()
        self.body_rcv = None
        self.refused, self.completed, self.expect_continue = limit, True, False
        self.headers["CONNECTION"] = "close"
        self.channel.discarding = True


class _Task(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        if self.request.refused:
            environ[BODY_REFUSED] = self.request.refused
        if self.channel.tls:
            environ[PEER] = self.channel.peer
        return environ


class _Channel(HTTPChannel):
    task_class = _Task
    discarding = False           # a refused body is still coming: drop it
    linger_until = 0.0           # set when the answer is out and the connection half-closed
    request_started = 0.0
    tls = False                  # the socket is an SSLSocket
    peer: PeerIdentity | None = None

    def parser_class(self, adj):
        self.request_started = time.monotonic()
        return _Parser(adj, self)

    def received(self, data):
        if self.discarding:
            return True
        return super().received(data)

    def handle_read(self):
        if not self.tls:
            return super().handle_read()
        try:
            data = self.socket.recv(self.adj.recv_bytes)
            # What OpenSSL has decrypted beyond that is not seen by select(): read it now.
            while data and self.socket.pending():
                data += self.socket.recv(self.socket.pending())
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:     # ssl.SSLError is one: a broken record or an alert ends the connection
            self.close_now()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
        else:
            self.connected = False

    def send(self, data, do_close=True):
        if not self.tls:
            return super().send(data, do_close)
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

    def handle_close(self):
        if self.discarding and self.connected and not self.linger_until:
            if self.busy:          # the client is done sending before the 413 is out: send it first
                return
            # The 413 is out: stop sending, keep reading (and dropping) for a while.
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.will_close = self.close_when_flushed = False
                self.linger_until = time.monotonic() + self.server.limits.linger_seconds
                return
        self.close_now()

    def close_now(self) -> None:
        HTTPChannel.handle_close(self)

    @property
    def busy(self) -> bool:
        """A request is being served or its answer is still going out."""
        return bool(self.requests) or bool(self.total_outbufs_len)


class _Server(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, app, sock: socket.socket, limits: HttpLimits, threads: int,
                 context: ssl.SSLContext | None = None, handshake_timeout: float = 10.0,
                 on_refused: Callable[[tuple, str], None] | None = None):
        self.limits = limits
        self.context, self.handshake_timeout, self.on_refused = context, handshake_timeout, on_refused
        if context is not None:
            # Bounded: a flood of connections waits for a handshake thread, never more threads.
            handshakes = max(4, threads)
            self.handshakes = ThreadPoolExecutor(max_workers=handshakes, thread_name_prefix="tls-handshake")
            self.waiting = threading.BoundedSemaphore(handshakes * 8)
        adj = Adjustments(sockets=[sock], threads=threads, clear_untrusted_proxy_headers=True, ident="xdsi",
                          url_scheme="https" if context is not None else "http",
                          # The checks here replace waitress's own (which answer in plain text, after
                          # a 100 Continue): its limits are set where they never apply.
                          max_request_body_size=1 << 62, connection_limit=1 << 30, cleanup_interval=1)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        super().__init__(app, map={}, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        return len(self.active_channels) < self.limits.max_connections or self._quietest() is not None

    def handle_accept(self):
        try:
            pair = self.accept()
        except OSError:             # the peer was gone before we took it
            return
        if pair is None:            # another worker process took it
            return
        conn, addr = pair
        if len(self.active_channels) >= self.limits.max_connections:
            quietest = self._quietest()
            if quietest is None:    # every connection is being served: this one waits its turn elsewhere
                conn.close()
                return
            log.info("connection limit reached: closed the quietest connection",
                     extra={"peer": quietest.addr[0] if quietest.addr else "", "open": len(self.active_channels)})
            quietest.close_now()
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        if self.context is None:
            self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        elif not self.waiting.acquire(blocking=False):
            conn.close()        # more peers mid-handshake than we hold: shed, as a full backlog would
        else:
            self.handshakes.submit(self._handshake, conn, self.fix_addr(addr))

    def _handshake(self, conn: socket.socket, addr) -> None:
        try:
            conn.setblocking(True)
            tls = accept(conn, self.context, self.handshake_timeout, addr, "HTTPS", self.on_refused)
        finally:
            self.waiting.release()
        if tls is None:
            return
        tls.setblocking(False)
        peer = peer_identity(tls.getpeercert())
        self.trigger.pull_trigger(lambda: self._open(tls, addr, peer))

    def _open(self, tls: ssl.SSLSocket, addr, peer: PeerIdentity | None) -> None:
        channel = self.channel_class(self, tls, addr, self.adj, map=self._map)
        channel.tls, channel.peer = True, peer

    def close(self):
        if self.context is not None:
            self.handshakes.shutdown(wait=False, cancel_futures=True)
        super().close()

    def _quietest(self) -> _Channel | None:
        idle = [c for c in self.active_channels.values() if not c.busy]
        return min(idle, key=lambda c: c.last_activity) if idle else None

    def maintenance(self, now):
        clock, limits = time.monotonic(), self.limits
        for channel in list(self.active_channels.values()):
            if channel.linger_until:
                if clock > channel.linger_until:
                    channel.close_now()
                continue
            if channel.busy:
                continue
            partial = channel.request
            if partial is None:
                late = now - channel.last_activity > limits.idle_seconds
            elif not partial.headers_finished:
                late = clock - channel.request_started > limits.header_seconds
            else:
                late = clock - channel.request_started > limits.request_seconds
            if late:
                channel.will_close = True


def create(app, sock: socket.socket, limits: HttpLimits, threads: int = 8, context: ssl.SSLContext | None = None,
           handshake_timeout: float = 10.0, on_refused: Callable[[tuple, str], None] | None = None) -> _Server:
    """A waitress server on the bound, listening ``sock`` (``serving.listen``); ``run()`` serves.
    With ``context``, HTTPS only (``tls.server_context``)."""
    return _Server(app, sock, limits, threads, context, handshake_timeout, on_refused)
