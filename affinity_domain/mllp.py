"""MLLP framing (``0x0B message 0x1C 0x0D``) and a threaded server that answers every frame.

The framing reader is pure (bytes in, messages out) so that garbage between frames,
oversized frames and frames cut short can be tested without sockets.
"""
from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Callable

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


class _Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: MllpServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(server.idle_timeout)
        reader = FrameReader(server.max_bytes)
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not data:
                break
            try:
                messages = reader.feed(data)
            except FrameTooLarge as e:
                sock.sendall(frame(server.on_oversize(str(e))))
                break
            for message in messages:
                try:
                    reply = server.handler(message)
                except Exception:  # the handler must ACK; this is the last line of defence
                    log.exception("MLLP handler failed")
                    reply = server.on_oversize("internal error")
                sock.sendall(frame(reply))
        if reader.pending:
            log.warning("connection closed mid-message", extra={"peer": self.client_address[0]})


class MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Handler,
                 on_oversize: Callable[[str], bytes], max_bytes: int = 1024 * 1024,
                 idle_timeout: float = 300.0):
        self.handler, self.on_oversize = handler, on_oversize
        self.max_bytes, self.idle_timeout = max_bytes, idle_timeout
        super().__init__(address, _Connection)
        # Worker processes may share this socket: when another one wins a connection, accept()
        # must fail at once rather than block this loop (and its shutdown) forever.
        self.socket.setblocking(False)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="mllp", daemon=True)
        thread.start()
        return thread


def send(host: str, port: int, message: bytes, timeout: float = 10.0) -> bytes:
    """Send one message and return the reply (a small client for actors and tests)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
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
