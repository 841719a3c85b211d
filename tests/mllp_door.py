"""Test-side checks of an MLLP door's bounds, over its real socket: a large message, a flood of
idle connections, a peer that trickles a frame, the listen backlog. Shared by the registry's, the
PIX manager's and the consumer's tests."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time

from tests.xds import mllp_send


def with_notes(message: bytes, count: int = 10000) -> bytes:
    """``message`` with ``count`` NTE segments after it (the issue's 790 KB message)."""
    notes = "".join(f"NTE|{i}||note {i} of a long clinical history, one line of many, kept as sent\r"
                    for i in range(1, count + 1))
    return message + notes.encode()


def timed_send(address: tuple[str, int], message: bytes, timeout: float = 30) -> tuple[str, float]:
    started = time.monotonic()
    ack = mllp_send(address, message, timeout=timeout)
    return ack, time.monotonic() - started


@contextlib.contextmanager
def idle_connections(address: tuple[str, int], count: int):
    """``count`` connections that send nothing, open for the block."""
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(address, timeout=5))
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def trickle_until_closed(address: tuple[str, int], interval: float, give_up: float) -> float | None:
    """Open a frame and send one more byte of it every ``interval`` seconds: how long until the
    server closes the connection, or None if it has not after ``give_up`` seconds."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"\x0bMSH|^~\\&|SLOW")
        while time.monotonic() - started < give_up:
            try:
                s.sendall(b"x")
            except OSError:
                return time.monotonic() - started
            if closed_by_peer(s, interval):
                return time.monotonic() - started
    return None


def backlog(port: int) -> int:
    """The listen queue of the socket listening on ``port`` (``ss``: Send-Q of a listening socket)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])
