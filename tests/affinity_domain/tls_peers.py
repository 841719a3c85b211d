"""What the TLS tests share: a test PKI made by ``xdsi certs``, settings over it, and a small HTTPS
responder of the tests' own (not one of the project's doors) that wraps each accepted socket with
``server_context`` and records what each handshake gave."""
from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from affinity_domain.mllp import END, frame
from affinity_domain.tls import TlsSettings, handshake, peer_identity, refusal, server_context
from tests.services import ROOT, wait_until


def make_pki(out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "certs", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def settings(pki: Path, leaf: str = "node", ca: str = "ca", **over) -> TlsSettings:
    values = dict(cert=str(pki / f"{leaf}.pem"), key=str(pki / f"{leaf}.key"), ca=str(pki / f"{ca}.pem"),
                  require_client_cert=True, allow_plaintext=False, handshake_timeout=10.0)
    return TlsSettings(**{**values, **over})


@dataclass
class Handshake:
    version: str
    cipher: str
    peer: object        # PeerIdentity | None


@dataclass
class TlsResponder:
    """Answers ``HTTP/1.0 200`` with the client's certificate CN to each TLS client it accepts."""

    context: ssl.SSLContext
    handshake_timeout: float = 10.0
    accepted: list[Handshake] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = handshake(raw, self.context, timeout=self.handshake_timeout)
        except (ssl.SSLError, OSError) as e:
            self.refused.append(refusal(e))
            raw.close()
            return
        tls.settimeout(10)
        with tls:
            peer = peer_identity(tls.getpeercert())
            self.accepted.append(Handshake(tls.version(), tls.cipher()[0], peer))
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                body = f"hello {peer.common_name if peer else 'anonymous'}\n".encode()
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(body), body))
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass

    def wait_for_outcome(self, count: int = 1) -> None:
        wait_until(lambda: len(self.accepted) + len(self.refused) >= count, timeout=15)

    def close(self) -> None:
        self.listener.close()


def responder(pki: Path, **over) -> TlsResponder:
    return TlsResponder(server_context(settings(pki, **over)))


def mllp_s_client(port: int, pki: Path, leaf: str, message: bytes, timeout: float = 20) -> bytes:
    """openssl s_client as an MLLP peer: the frame in, what comes back until the frame's end (s_client
    -quiet waits for the server to close, which an MLLP server does not do after an ACK)."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.pem"),
                             "-verify_return_error", "-quiet", "-cert", str(pki / f"{leaf}.pem"),
                             "-key", str(pki / f"{leaf}.key")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdin.write(frame(message))
    proc.stdin.flush()
    got, deadline = b"", time.monotonic() + timeout
    try:
        while not got.endswith(END) and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                got += chunk
    finally:
        proc.kill()
        proc.wait(10)
    return got
