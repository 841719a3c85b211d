"""MLLP framing (``0x0B message 0x1C 0x0D``) and a server that answers every frame, within bounds:
connections, threads, idle time, the time a frame may take to arrive, its size.

The framing reader is pure (bytes in, messages out) so that garbage between frames,
oversized frames and frames cut short can be tested without sockets.

Under TLS (the node's ``[tls]``, ``secure_node``) the server speaks MLLP over TLS only: each accepted
connection's handshake runs in a small pool of its own within ``[tls] handshake_timeout``, never in the
selector loop; ``send`` is the client side.
"""
from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from . import secure_node, tls
from .exceptions import XdsiError

START, END = b"\x0b", b"\x1c\x0d"
log = logging.getLogger("xdsi.mllp")


class FrameTooLarge(ValueError, XdsiError):
    """A frame longer than the reader's bound: refused, whatever arrives after it."""

    permanent = True


def frame(message: bytes) -> bytes:
    return START + message + END


class FrameReader:
    """Feed bytes; take complete messages. Bytes outside a frame are dropped."""

    def __init__(self, max_bytes: int = 1024 * 1024):
        self.buffer = bytearray()
        self.max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        messages = []
        while True:
            start = self.buffer.find(START)
            if start < 0:
                self.buffer.clear()
                return messages
            del self.buffer[:start]
            end = self.buffer.find(END)
            if end < 0:
                if len(self.buffer) > self.max_bytes:
                    self.buffer.clear()
                    raise FrameTooLarge(f"MLLP frame larger than {self.max_bytes} bytes")
                return messages
            if end - 1 > self.max_bytes:
                del self.buffer[:end + 2]
                raise FrameTooLarge(f"MLLP frame larger than {self.max_bytes} bytes")
            messages.append(bytes(self.buffer[1:end]))
            del self.buffer[:end + 2]

    @property
    def pending(self) -> bool:
        return bool(self.buffer)


Handler = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Limits:
    """What one listener allows a peer: each is an actor's configuration key (``affinity_domain.config``)."""

    max_bytes: int = 1024 * 1024       # a frame's size
    max_connections: int = 256         # open at once; past it the longest idle one is closed
    threads: int = 8                   # messages handled at once (an idle connection holds no thread)
    idle_seconds: float = 300.0        # a connection with no frame under way is closed after this
    message_seconds: float = 30.0      # a frame must be whole this long after its first byte
    backlog: int = 128                 # the listen queue


def limits_of(settings, prefix: str, max_bytes: int = 1024 * 1024) -> Limits:
    """An actor's ``<prefix>max_connections``, ``threads``, ``idle_seconds``, ``message_seconds`` and
    ``backlog`` settings as Limits."""
    def get(key):
        return getattr(settings, prefix + key)
    return Limits(max_bytes, get("max_connections"), get("threads"), get("idle_seconds"), get("message_seconds"),
                  get("backlog"))


class _Connection:
    def __init__(self, sock: socket.socket, peer: str, max_bytes: int, now: float):
        self.sock, self.fd, self.peer, self.reader = sock, sock.fileno(), peer, FrameReader(max_bytes)
        self.last = now                  # when its last byte came (or its last answer went)
        self.started: float | None = None   # when the frame under way began
        self.busy = self.closed = False  # busy: a worker thread has it, the selector does not

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class MllpServer:
    """One selector thread reads every connection; complete frames go to a bounded pool of threads,
    one connection at a time per thread, answered in order. Idle connections cost a socket, not a
    thread; a frame that does not complete within ``message_seconds`` of its first byte (a trickling
    peer) closes its connection, as does ``idle_seconds`` without one."""

    def __init__(self, address: tuple[str, int], handler: Handler | None,
                 on_oversize: Callable[[str], bytes], max_bytes: int = 1024 * 1024,
                 idle_timeout: float = 300.0, limits: Limits | None = None,
                 context: ssl.SSLContext | None | bool = True):
        """``context``: the TLS server context; True (the default) takes the node's (``secure_node``),
        None serves plain MLLP."""
        self.handler, self.on_oversize = handler, on_oversize
        self.context = secure_node.server_context() if context is True else context
        self.handshake_timeout = secure_node.handshake_timeout()
        self.on_refused = secure_node.on_refused("MLLP TLS")
        self._handshakes: ThreadPoolExecutor | None = None
        self._shaking = 0            # connections mid-handshake (counted against max_connections)
        self.limits = limits or Limits(max_bytes=max_bytes, idle_seconds=idle_timeout)
        if context is True:
            secure_node.check_listener(address[0], address[1], "MLLP")
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(self.limits.backlog)
        except OSError:
            self.socket.close()
            raise
        # Worker processes may share this socket: when another one wins a connection, accept()
        # must fail at once rather than block this loop (and its shutdown) forever.
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        # The selector, its wake-up pair and the threads are made in the process that serves: a
        # worker process forked after binding must not share the parent's epoll set.
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = None
        self._pool: ThreadPoolExecutor | None = None
        self._connections: dict[int, _Connection] = {}
        self._returned: list[_Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- the selector thread

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve_forever, name="mllp", daemon=True)
        self._thread.start()
        return self._thread

    def _open(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, "listen")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pool = ThreadPoolExecutor(self.limits.threads, thread_name_prefix="mllp")
        if self.context is not None:
            self._handshakes = ThreadPoolExecutor(max(2, self.limits.threads // 2), thread_name_prefix="mllp-tls")

    def serve_forever(self) -> None:
        self._open()
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(0.25):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._read(key.data)
                self._take_back()
                self._sweep(time.monotonic())
        finally:
            for conn in list(self._connections.values()):
                conn.close()
            self._connections.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._handshakes is not None:
                self._handshakes.shutdown(wait=False, cancel_futures=True)
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):            # then the connections already open get their turn
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:            # out of file descriptors, a reset before accept: try again later
                log.warning("MLLP accept failed", exc_info=True)
                return
            if len(self._connections) + self._shaking >= self.limits.max_connections and not self._evict():
                log.warning("MLLP connection refused: at the cap", extra={"peer": peer[0],
                                                                           "cap": self.limits.max_connections})
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                with self._lock:
                    self._shaking += 1
                self._handshakes.submit(self._handshake, sock, peer)
                continue
            sock.setblocking(False)
            self._add(sock, peer[0])

    def _add(self, sock: socket.socket, peer: str) -> None:
        conn = _Connection(sock, peer, self.limits.max_bytes, time.monotonic())
        self._connections[conn.fd] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _handshake(self, sock: socket.socket, peer: tuple) -> None:
        """In the handshake pool: the TLS socket goes to the selector as a connection taken back."""
        try:
            sock.setblocking(True)
            secured = tls.accept(sock, self.context, self.handshake_timeout, peer, "MLLP TLS", self.on_refused)
        finally:
            with self._lock:
                self._shaking -= 1
        if secured is None:
            return
        conn = _Connection(secured, peer[0], self.limits.max_bytes, time.monotonic())
        conn.busy = True            # the selector thread takes it in (``_take_back``)
        self._give_back(conn)

    def _evict(self) -> bool:
        """Close the connection idle the longest (none that a thread is answering) to make room."""
        idle = [c for c in self._connections.values() if not c.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last)
        log.warning("MLLP connection closed to make room", extra={"peer": oldest.peer})
        self._drop(oldest)
        return True

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
            # What OpenSSL has decrypted beyond that is not seen by select(): read it now.
            while data and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                data += conn.sock.recv(conn.sock.pending())
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.reader.pending:
                log.warning("connection closed mid-message", extra={"peer": conn.peer})
            self._drop(conn)
            return
        now = conn.last = time.monotonic()
        try:
            messages = conn.reader.feed(data)
        except FrameTooLarge as e:
            self._hand_over(conn, self._refuse, str(e))
            return
        if not conn.reader.pending:
            conn.started = None
        elif conn.started is None or messages:
            conn.started = now
        if messages:
            self._hand_over(conn, self._answer, messages)

    def _hand_over(self, conn: _Connection, work, arg) -> None:
        self._selector.unregister(conn.sock)
        conn.busy = True
        self._pool.submit(work, conn, arg)

    def _take_back(self) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        for conn in returned:
            conn.busy = False
            self._connections.setdefault(conn.fd, conn)     # a TLS connection fresh from its handshake
            if conn.closed or self._stop.is_set():
                self._drop(conn)
            else:
                conn.sock.setblocking(False)
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self._connections.values() if not c.busy]:
            if conn.started is not None and now - conn.started > self.limits.message_seconds:
                log.warning("MLLP frame not complete in time; connection closed",
                            extra={"peer": conn.peer, "seconds": self.limits.message_seconds})
                self._drop(conn)
            elif conn.started is None and now - conn.last > self.limits.idle_seconds:
                self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        if not conn.busy and not conn.closed:
            self._selector.unregister(conn.sock)
        if self._connections.get(conn.fd) is conn:    # a closed socket's number may be a new one's already
            del self._connections[conn.fd]
        conn.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ---------------------------------------------------------------- the worker threads

    def _give_back(self, conn: _Connection) -> None:
        conn.last = time.monotonic()
        with self._lock:
            self._returned.append(conn)
        self._wake()

    def _send(self, conn: _Connection, reply: bytes) -> bool:
        try:
            conn.sock.settimeout(self.limits.message_seconds)     # a peer that does not read its ACK
            conn.sock.sendall(frame(reply))
            return True
        except OSError:
            conn.close()
            return False

    def _answer(self, conn: _Connection, messages: list[bytes]) -> None:
        _current.peer = conn.peer           # the handler reads it: access control, audit records
        try:
            for message in messages:
                try:
                    reply = self.handler(message)
                except Exception:  # the handler must ACK; this is the last line of defence
                    log.exception("MLLP handler failed")
                    reply = self.on_oversize("internal error")
                if not self._send(conn, reply):
                    break
        finally:
            self._give_back(conn)

    def _refuse(self, conn: _Connection, reason: str) -> None:
        try:
            self._send(conn, self.on_oversize(reason))
        finally:
            conn.close()
            self._give_back(conn)

    # ---------------------------------------------------------------- stopping

    def shutdown(self) -> None:
        """Stop accepting and reading, close every connection and the listener."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.server_close()

    def server_close(self) -> None:
        for s in (self.socket, self._wake_r, self._wake_w):
            if s is not None:
                s.close()

    def _wake(self) -> None:
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"\0")
        except OSError:             # full (the selector is waking anyway) or closed (it has stopped)
            pass


_current = threading.local()


def peer() -> str:
    """The IP address of the peer whose message the calling handler is answering ("" outside one)."""
    return getattr(_current, "peer", "")


def send(host: str, port: int, message: bytes, timeout: float = 10.0) -> bytes:
    """Send one message and return the reply (a small client for actors and tests); over TLS when the
    node has ``[tls]`` (``secure_node``)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        sock = secure_node.wrap_client(raw, host, timeout)
    except BaseException:
        raw.close()
        raise
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(frame(message))
        reader = FrameReader()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before a reply")
            replies = reader.feed(data)
            if replies:
                return replies[0]
