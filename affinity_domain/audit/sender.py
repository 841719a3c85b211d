"""Sending the spool to each ``[audit] destinations`` URL: a background thread per destination, bounded batches,
timeouts on every wait, exponential back-off while the destination is down.

- ``tls://host:port``: RFC 5425, octet-counted frames over TLS (mutual, from ``[tls]``). Without ``[tls]`` a
  loopback destination is reached over plain TCP with the same framing (RFC 6587), as the local ARR serves it.
- ``tcp://host:port``: RFC 6587 octet counting, plain (loopback only, unless ``[tls] allow_plaintext``).
- ``udp://host:port``: RFC 5426, one message per datagram. UDP cannot tell a record was lost; only a port
  that answers "unreachable" holds the queue back.

A batch counts as delivered over TCP when the peer's TCP has acknowledged every byte of it (the socket's send
queue is empty); a connection that fails before that has its batch sent again on the next one (the ARR keeps
one copy of a record it got twice)."""
from __future__ import annotations

import fcntl
import logging
import select
import socket
import ssl
import struct
import termios
import threading
import time
from urllib.parse import urlsplit

from ..config import ConfigError
from ..tls import is_loopback
from .spool import Spool, destination_key
from .syslog import octet_frame

log = logging.getLogger("xdsi.audit")
ACCEPT_WAIT = 0.5       # seconds a new TLS 1.3 connection waits for the server to refuse our certificate
# After a batch smaller than a full one, the sender waits this long for more before it syncs and sends again:
# a sync, a send and an offset commit per record would cost a busy actor's requests (their appends wait on the
# segment's fsync) far more than a record arriving at the ARR 50 ms later.
LINGER = 0.05


def parse_destination(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("tls", "tcp", "udp") or not parts.hostname or not parts.port:
        raise ConfigError(f"[audit] destinations: {url!r} is not tls://host:port, tcp://host:port or udp://host:port")
    return parts.scheme, parts.hostname, parts.port


class Delivery(OSError):
    """The destination did not take the batch."""


class StreamTransport:
    """TLS or plain TCP with octet-counting frames."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None, timeout: float):
        self.host, self.port, self.context, self.timeout = host, port, context, timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is None:
            return raw
        try:
            tls = self.context.wrap_socket(raw, server_hostname=self.host)
        except (ssl.SSLError, OSError):
            raw.close()
            raise
        if tls.version() == "TLSv1.3":
            self._accepted(tls)
        return tls

    def _accepted(self, tls: ssl.SSLSocket) -> None:
        """TLS 1.3 ends the client's handshake before the server has checked the client's certificate; a refusal
        comes as an alert afterwards, and records sent meanwhile would be acknowledged by TCP and thrown away.
        So a new connection waits a moment for that alert before it carries anything."""
        tls.settimeout(ACCEPT_WAIT)
        try:
            if tls.recv(1) == b"":
                raise Delivery("the destination closed the connection after the handshake")
        except socket.timeout:
            pass
        except (ssl.SSLError, OSError) as e:
            tls.close()
            raise Delivery(f"the destination refused our certificate: {e}") from None
        finally:
            if tls.fileno() >= 0:
                tls.settimeout(self.timeout)

    def send(self, records: list[bytes]) -> None:
        if self.sock is None:
            self.sock = self._connect()
        self._check_open()
        self.sock.sendall(b"".join(octet_frame(r) for r in records))
        self._drained()

    def _check_open(self) -> None:
        """A peer that closed the connection (idle timeout, restart) shows as readable end-of-file."""
        if not select.select([self.sock], [], [], 0)[0]:
            return
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(4096)
        except (ssl.SSLWantReadError, BlockingIOError):
            data = None                       # TLS 1.3 session tickets: nothing for us
        finally:
            self.sock.settimeout(self.timeout)
        if data == b"":
            raise Delivery("the destination closed the connection")

    def _drained(self) -> None:
        """Wait until the peer's TCP has acknowledged all we sent (Linux: SIOCOUTQ)."""
        deadline = time.monotonic() + self.timeout
        buf = bytearray(4)
        while True:
            try:
                fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, buf)
            except OSError:
                return                       # not Linux: sendall's return is all we know
            if struct.unpack("i", buf)[0] == 0:
                return
            if time.monotonic() > deadline:
                raise Delivery(f"the destination acknowledged nothing for {self.timeout:.0f} s")
            self._check_open()
            time.sleep(0.002)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


class DatagramTransport:
    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None

    def send(self, records: list[bytes]) -> None:
        if self.sock is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect((self.host, self.port))
        for record in records:
            try:
                self.sock.send(record)
            except OSError as e:
                if e.errno == 90:            # EMSGSIZE: never fits a datagram; drop it, not the queue
                    log.error("audit record too large for UDP; not sent", extra={"bytes": len(record)})
                    continue
                raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def transport(url: str, context: ssl.SSLContext | None, allow_plaintext: bool, timeout: float):
    scheme, host, port = parse_destination(url)
    if scheme == "udp":
        return DatagramTransport(host, port, timeout)
    if scheme == "tls" and context is not None:
        return StreamTransport(host, port, context, timeout)
    if not (is_loopback(host) or allow_plaintext):
        raise ConfigError(f"[audit] destinations: {url} needs [tls] cert, key and ca (or [tls] allow_plaintext)")
    if scheme == "tls":
        log.warning("audit: no [tls] configured; records go to the loopback ARR over plain TCP",
                    extra={"destination": url})
    return StreamTransport(host, port, None, timeout)


class Sender(threading.Thread):
    """Sends one destination's share of the spool until stopped."""

    def __init__(self, spool: Spool, url: str, link, batch: int, retry_base: float, retry_max: float):
        super().__init__(daemon=True, name=f"audit-sender {url}")
        self.spool, self.url, self.link, self.batch = spool, url, link, batch
        self.key = destination_key(url)
        self.retry_base, self.retry_max = retry_base, retry_max
        self.stopping = threading.Event()
        self.failures = 0
        self.sent = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = self.step()
            if not sent:
                self.spool.wait(0.5)
            elif sent < self.batch:
                self.stopping.wait(LINGER)
        self.link.close()

    def step(self) -> int:
        """Send one batch; how many records it held (0: nothing to send, or the destination failed)."""
        self.spool.sync()
        segment, records, offset = self.spool.read(self.key, self.batch)
        if not records:
            return 0
        try:
            self.link.send(records)
        except (OSError, ssl.SSLError) as e:
            self.link.close()
            self.failures += 1
            delay = min(self.retry_base * 2 ** (self.failures - 1), self.retry_max)
            if self.failures == 1 or self.failures % 10 == 0:
                log.warning("audit destination not reachable; records stay queued",
                            extra={"destination": self.url, "error": str(e), "retry_in": delay,
                                   "attempts": self.failures})
            self.stopping.wait(delay)
            return 0
        if self.failures:
            log.info("audit destination reachable again", extra={"destination": self.url})
        self.failures = 0
        self.spool.commit(segment, self.key, offset)
        self.sent += len(records)
        return len(records)

    def drain(self, timeout: float) -> None:
        """Stop, after trying to send what is queued for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.stopping.set()
        self.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.is_alive():
            return
        while time.monotonic() < deadline and not self.failures and self.step():
            pass
        self.link.close()
