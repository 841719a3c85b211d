"""DICOM over TLS with DCMTK, a peer nobody here wrote: ``storescu +tls`` against a pynetdicom SCP
on ``server_context`` (``dicom_listener.start_server``), and pynetdicom with ``client_context`` against
``storescp +tls``. DCMTK 3.6.7's default profile (``+py``, Non-downgrading BCP 195) and ``+px``
meet ours on TLS 1.3, ``+pz`` (Extended BCP 195, TLS 1.2 only) on an ECDHE-RSA AES-GCM suite; its
older AES profile (``+pa``: RSA key transport, CBC) is refused, as is a certificate of another CA."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage

from affinity_domain.dicom_listener import start_server
from affinity_domain.tls import BCP195_TLS12_CIPHERS, client_context, peer_identity, server_context
from tests.affinity_domain.tls_peers import make_pki, settings
from tests.services import DCMTK_ENV, free_port, wait_for_port, wait_until

CT = get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def scp(pki):
    """A pynetdicom Storage SCP of the test's own, on server_context; records each C-STORE's TLS."""
    stored = []

    def on_store(event):
        tls = event.assoc.dul.socket.socket
        stored.append((tls.version(), tls.cipher()[0], peer_identity(tls.getpeercert())))
        return 0x0000

    ae = AE("TLS_SCP")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    refused = []
    start_server(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, on_store)], ssl_context=server_context(settings(pki)),
                 handshake_timeout=1.0, on_refused=lambda addr, why: refused.append(why))
    yield port, stored, refused
    ae.shutdown()


def storescu(port: int, pki: Path, leaf: str, *profile: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/storescu", "-to", "20", "-ta", "20", "-td", "20", "-aec", "TLS_SCP",
                           "+tls", str(pki / f"{leaf}.key"), str(pki / f"{leaf}.pem"),
                           "+cf", str(pki / "ca.pem"), *profile, "127.0.0.1", str(port), CT],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("profile, version", [((), "TLSv1.3"), (("+px",), "TLSv1.3"), (("+pz",), "TLSv1.2")])
def test_storescu_tls_stores_into_a_server_context_scp(scp, pki, profile, version):
    port, stored, refused = scp
    before = len(stored)
    out = storescu(port, pki, "client", *profile)
    assert out.returncode == 0, out.stderr
    (got_version, cipher, peer), = stored[before:]
    assert got_version == version and peer.common_name == "xdsi test client"
    assert cipher in BCP195_TLS12_CIPHERS if version == "TLSv1.2" else cipher.startswith("TLS_AES_")


@pytest.mark.parametrize("leaf, profile", [("other-client", ()), ("client", ("+pa",))])
def test_storescu_is_refused(scp, pki, leaf, profile):
    port, stored, refused = scp
    before = len(stored)
    out = storescu(port, pki, leaf, *profile)
    assert out.returncode != 0 and "Association Request Failed" in out.stderr
    assert len(stored) == before
    wait_until(lambda: refused)
    assert ("not signed by our CA" if leaf == "other-client" else "no BCP195 cipher suite") in refused.pop()


def test_a_silent_peer_does_not_stop_the_listener(scp, pki):
    # pynetdicom's own server does the handshake in its accept loop, without a timeout: there,
    # this storescu waits for ever behind the silent connection.
    port, stored, refused = scp
    with socket.create_connection(("127.0.0.1", port)) as silent:
        out = storescu(port, pki, "client")
        assert out.returncode == 0, out.stderr
        silent.settimeout(5)
        assert silent.recv(1) == b""


class StoreScpTls:
    def __init__(self, pki: Path, directory: Path, *profile: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["/usr/bin/storescp", "-v", "-aet", "STORESCP", "+tls", str(pki / "node.key"), str(pki / "node.pem"),
             "+cf", str(pki / "ca.pem"), *profile, "-od", str(directory), str(self.port)],
            env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_port(self.port, self.process)

    def stop(self) -> str:
        self.process.terminate()
        return self.process.communicate(timeout=10)[0]


def send(port: int, pki: Path, leaf: str = "client", ca: str = "ca", hostname: str = "localhost"):
    ae = AE("TLS_SCU")
    ae.add_requested_context(CTImageStorage)
    context = client_context(settings(pki, leaf=leaf, ca=ca))
    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP", tls_args=(context, hostname))
    if not assoc.is_established:
        return None
    tls = assoc.dul.socket.socket
    shake = (tls.version(), tls.cipher()[0], peer_identity(tls.getpeercert()))
    status = assoc.send_c_store(dcmread(CT)).Status
    assoc.release()
    return shake, status


@pytest.mark.parametrize("profile, version", [((), "TLSv1.3"), (("+pz",), "TLSv1.2")])
def test_client_context_stores_into_storescp_tls(pki, tmp_path, profile, version):
    scp = StoreScpTls(pki, tmp_path, *profile)
    try:
        (got_version, cipher, peer), status = send(scp.port, pki)
    finally:
        log = scp.stop()
    assert status == 0x0000 and got_version == version, log
    assert cipher in BCP195_TLS12_CIPHERS if version == "TLSv1.2" else cipher.startswith("TLS_AES_")
    assert peer.common_name and "localhost" in peer.dns_names
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("case, alert", [
    ("wrong host name", "bad certificate"),         # we refuse its certificate: it names localhost, not us
    ("untrusted storescp", "unknown ca"),           # we do not know its CA
    ("our certificate from another CA", "certificate verify failed"),   # storescp refuses ours
    ("storescp on the AES profile", "no shared cipher"),                 # RSA key transport, CBC
])
def test_client_context_and_storescp_tls_refuse(pki, tmp_path, case, alert):
    scp = StoreScpTls(pki, tmp_path, *(("+pa",) if case == "storescp on the AES profile" else ()))
    try:
        result = send(scp.port, pki, hostname="wrong.example.org" if case == "wrong host name" else "localhost",
                      leaf="other-client" if case.startswith("our") else "client",
                      ca="other-ca" if case == "untrusted storescp" else "ca")
    finally:
        log = scp.stop()
    assert result is None and alert in log, log
    assert list(tmp_path.iterdir()) == []
