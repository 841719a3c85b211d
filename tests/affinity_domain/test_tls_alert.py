"""A peer whose certificate our CA did not sign is refused at the handshake by every kind of door (HTTP,
MLLP, DICOM), and each refusal leaves a Security Alert (Node Authentication) audit record: here the
record is taken off the wire, as syslog over UDP (RFC 5426), by a bare socket of the test's own."""
from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from affinity_domain import audit, config as config_mod, dicom_listener, secure_node, serving
from affinity_domain.mllp import MllpServer
from tests.affinity_domain.tls_peers import make_pki, mllp_s_client, settings
from tests.services import DCMTK_ENV, free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def node(pki, tmp_path):
    """This process as a TLS node recording audit to a UDP socket; yields that socket."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(15)
    env = {"XDSI_AUDIT_DESTINATIONS": json.dumps([f"udp://127.0.0.1:{receiver.getsockname()[1]}"])}
    audit.start(config_mod.load(None, tmp_path, environ=env), "tls-test")
    secure_node.use(settings(pki, handshake_timeout=2.0), "tls-test")
    yield receiver
    secure_node.use(secure_node.PLAIN)
    audit.stop(timeout=2)
    receiver.close()


def security_alerts(receiver: socket.socket, count: int) -> list[str]:
    found = []
    while len(found) < count:
        record = receiver.recv(65536).decode("utf-8", "replace")
        if 'csd-code="110113"' in record:       # Security Alert; the others are Application Activity
            found.append(record)
    return found


def curl_as(port: int, pki, leaf: str) -> bool:
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", "--cacert", str(pki / "ca.pem"),
                           "--cert", str(pki / f"{leaf}.pem"), "--key", str(pki / f"{leaf}.key"),
                           f"https://localhost:{port}/"], capture_output=True, text=True, timeout=30).returncode == 0


def dcmtk_echo(port: int, pki, leaf: str) -> bool:
    return subprocess.run(["/usr/bin/echoscu", "-to", "10", "-ta", "10", "+tls", str(pki / f"{leaf}.key"),
                           str(pki / f"{leaf}.pem"), "+cf", str(pki / "ca.pem"), "127.0.0.1", str(port)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60).returncode == 0


def openssl_mllp(port: int, pki, leaf: str) -> bool:
    return b"MSA|AA" in mllp_s_client(port, pki, leaf, b"MSH|^~\\&|\r")


def start(kind: str):
    """A door of ``kind`` on the node's TLS; returns its port and how to stop it."""
    port = free_port()
    if kind == "http":
        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        server = serving.http_server(app, serving.listen("127.0.0.1", port), 2)
        threading.Thread(target=server.run, daemon=True).start()
        return port, lambda: server.trigger.pull_trigger(lambda: [d.close() for d in list(server._map.values())])
    if kind == "mllp":
        server = MllpServer(("127.0.0.1", port), lambda m: b"MSH|^~\\&|\rMSA|AA|\r", lambda why: b"")
        server.start()
        return port, server.shutdown
    ae = AE("TLS_TEST")
    ae.add_supported_context(Verification)
    dicom_listener.start_server(ae, ("127.0.0.1", port), [])
    return port, ae.shutdown


@pytest.mark.parametrize("kind, peer", [("http", curl_as), ("mllp", openssl_mllp), ("dicom", dcmtk_echo)])
def test_a_certificate_of_another_ca_is_refused_and_audited_as_a_security_alert(node, pki, kind, peer):
    port, stop = start(kind)
    try:
        assert peer(port, pki, "client")
        assert not peer(port, pki, "other-client")
        [alert] = security_alerts(node, 1)
    finally:
        stop()
    assert 'csd-code="110126"' in alert                 # EventTypeCode Node Authentication
    assert "not signed by our CA" in alert and "127.0.0.1" in alert
