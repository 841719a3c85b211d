"""Fixtures for the PIX manager: the registry and ``xdsi serve pix`` as real processes on free ports,
the PIX manager forwarding affinity-domain ids to that registry."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

from services import start_pix, start_registry  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))


class Subscriber(threading.Thread):
    """An ITI-10 receiver: an MLLP listener that ACKs and keeps what it gets."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []
        self.received = threading.Condition()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\x1c\x0d"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                text = data.strip(b"\x0b\x1c\x0d").decode()
                control = text.split("\r")[0].split("|")[9]
                conn.sendall(f"\x0bMSH|^~\\&|SUB|SUB|X|X|20240101||ACK|1|P|2.5\rMSA|AA|{control}\r\x1c\x0d".encode())
                with self.received:
                    self.messages.append(text)
                    self.received.notify_all()

    def wait_for(self, predicate, timeout: float = 15) -> str:
        with self.received:
            ok = self.received.wait_for(lambda: any(predicate(m) for m in self.messages), timeout)
            assert ok, self.messages
            return next(m for m in self.messages if predicate(m))


@pytest.fixture(scope="module")
def subscriber():
    s = Subscriber()
    s.start()
    yield s
    s.sock.close()


@pytest.fixture(scope="module")
def domain(new_database, tmp_path_factory, subscriber):
    """(registry, pix) sharing one database, the PIX forwarding to the registry and notifying a subscriber."""
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("registry"))
    pix = start_pix(database, tmp_path_factory.mktemp("pix"), registry_feed=f"127.0.0.1:{registry.feed[1]}",
                    subscribers=f'["127.0.0.1:{subscriber.port}"]',
                    facility_authorities='{ WARD = "1.2.840.9.7" }')
    yield registry, pix
    pix.stop()
    registry.stop()
