"""HTTPS under waitress (affinity_domain/http_server.py with a context), what the SOAP and JSON doors serve with
``[tls]`` set: curl and openssl s_client as clients, keep-alive and large bodies both ways,
refusals reported with their reason, silent peers let go without holding the others."""
from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from affinity_domain.http_server import PEER, HttpLimits, create
from affinity_domain.tls import client_context, server_context
from tests.affinity_domain.test_tls import _as, s_client
from tests.affinity_domain.tls_peers import make_pki, settings
from tests.services import wait_until


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def app(environ, start_response):
    """Says what it was given: the scheme, who the client is, the body's length and SHA-1."""
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(30 << 20))])
        return (bytes([i]) * (1 << 20) for i in range(30))
    body = environ["wsgi.input"].read()
    peer = environ[PEER]
    out = (f"{environ['wsgi.url_scheme']} {peer.common_name if peer else '-'} {len(body)} "
           f"{hashlib.sha1(body).hexdigest()}").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


@pytest.fixture
def server(pki):
    listener = socket.create_server(("127.0.0.1", 0))
    refused = []
    srv = create(app, listener, HttpLimits(body_bytes=1 << 30), threads=4, context=server_context(settings(pki)),
                 handshake_timeout=1.0, on_refused=lambda addr, why: refused.append(why))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield listener.getsockname()[1], refused
    # closed from the event loop's own thread, so that it ends instead of polling closed sockets
    srv.trigger.pull_trigger(lambda: [d.close() for d in list(srv._map.values())])
    thread.join(10)
    srv.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


def curl(port: int, pki: Path, *options: str, path: str = "/soap") -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki / "ca.pem"), *options,
                           f"https://localhost:{port}{path}"], capture_output=True, text=True, timeout=30)


def _curl_as(pki: Path, leaf: str) -> list[str]:
    return ["--cert", str(pki / f"{leaf}.pem"), "--key", str(pki / f"{leaf}.key")]


def test_curl_with_a_good_certificate_is_served_and_the_app_knows_who(server, pki):
    port, refused = server
    out = curl(port, pki, *_curl_as(pki, "client"), "--data-binary", "hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"https xdsi test client 5 {hashlib.sha1(b'hello').hexdigest()}"
    assert refused == []


@pytest.mark.parametrize("who, reason", [(None, "the peer sent no certificate"),
                                         ("other-client", "not signed by our CA")])
def test_curl_without_a_good_certificate_is_refused_and_reported(server, pki, who, reason):
    port, refused = server
    out = curl(port, pki, *(_curl_as(pki, who) if who else []))
    assert out.returncode != 0 and out.stdout == ""
    wait_until(lambda: refused)
    assert reason in refused[0]


def test_s_client_with_a_cbc_cipher_or_tls11_is_refused(server, pki):
    port, refused = server
    for options in (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"], ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]):
        assert "HTTP/1." not in s_client(port, pki, *_as(pki, "client"), *options).stdout
    wait_until(lambda: len(refused) == 2)
    assert "NO_SHARED_CIPHER" in refused[0] and "UNSUPPORTED_PROTOCOL" in refused[1]


def test_plain_http_on_the_https_port_is_refused(server, pki):
    port, refused = server
    out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/soap"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    wait_until(lambda: refused)
    assert refused[0].startswith("a plain HTTP request on a TLS port")


def test_keep_alive_and_large_bodies_both_ways(server, pki):
    port, _ = server
    conn = http.client.HTTPSConnection("localhost", port, context=client_context(settings(pki, leaf="client")),
                                       timeout=10)
    first_socket = None
    # 12,000 bytes come in one TLS record larger than what waitress reads at a time (recv_bytes, 8192):
    # the rest of it is in OpenSSL's buffer, which select() does not see.
    for size in (0, 12_000, 3_000_000, 12_000_000):
        body = bytes(range(256)) * (size // 256)
        conn.request("POST", "/soap", body=body)
        answer = conn.getresponse().read().decode()
        assert answer == f"https xdsi test client {len(body)} {hashlib.sha1(body).hexdigest()}"
        first_socket = first_socket or conn.sock
        assert conn.sock is first_socket            # one connection, kept alive
    conn.request("GET", "/big")
    big = conn.getresponse().read()
    assert len(big) == 30 << 20 and big[-1] == 29 and big[(5 << 20) + 7] == 5
    assert conn.sock is first_socket
    conn.close()


def test_silent_peers_do_not_hold_the_others_and_are_let_go(server, pki):
    port, refused = server
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        started = time.monotonic()
        out = curl(port, pki, *_curl_as(pki, "client"))
        assert out.returncode == 0 and time.monotonic() - started < 10     # generous: not held by the silent
        wait_until(lambda: len(refused) == 3, timeout=15)
        assert set(refused) == {"the peer did not finish the TLS handshake in time"}
        for s in silent:
            s.settimeout(5)
            assert s.recv(1) == b""
    finally:
        for s in silent:
            s.close()


def test_the_http_limits_hold_under_tls_too(pki):
    """One server, plain or TLS: a body over the limit is answered 413 before it is read, over TLS as in plain."""
    def door(environ, start_response):
        from affinity_domain.web import BODY_REFUSED
        status = "413 Payload Too Large" if environ.get(BODY_REFUSED) else "200 OK"
        start_response(status, [("Content-Length", "0")])
        return [b""]
    listener = socket.create_server(("127.0.0.1", 0))
    srv = create(door, listener, HttpLimits(body_bytes=1000), threads=2, context=server_context(settings(pki)))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        small = curl(port, pki, *_curl_as(pki, "client"), "--data-binary", "x" * 999, "-o", "/dev/null",
                     "-w", "%{http_code}")
        big = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), *_curl_as(pki, "client"),
                              "--data-binary", "x" * 5000, "-o", "/dev/null", "-w", "%{http_code}",
                              f"https://localhost:{port}/soap"], capture_output=True, text=True, timeout=30)
        assert small.stdout == "200" and big.stdout == "413", (small.stderr, big.stderr)
    finally:
        srv.trigger.pull_trigger(lambda: [d.close() for d in list(srv._map.values())])
        thread.join(10)
        srv.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
