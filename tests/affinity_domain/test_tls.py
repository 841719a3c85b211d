"""ITI-19 mutual TLS foundations: ``[tls]`` settings (environment, per-actor tables, refusals), the
plaintext rule, ``xdsi certs``, and the contexts proved against peers nobody here wrote:
``openssl s_client`` and ``curl`` against ``server_context``, ``openssl s_server`` against
``client_context``."""
from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from affinity_domain.config import DEFAULTS, ConfigError, load
from affinity_domain.tls import (BCP195_TLS12_CIPHERS, TlsSettings, client_context, is_loopback, peer_identity,
                                 plaintext_refusal, plaintext_warning, refusal, server_context, tls_settings)
from tests.affinity_domain.tls_peers import make_pki, responder, settings
from tests.services import ROOT, free_port, wait_for_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------ settings

def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "xdsi.toml"
    path.write_text(text)
    return path


def test_defaults_are_plain_on_loopback_with_client_certificates_required():
    s = tls_settings(load(environ={}), "registry")
    assert (s.enabled, s.require_client_cert, s.allow_plaintext) == (False, True, False)
    assert set(DEFAULTS["tls"]) == {"cert", "key", "ca", "require_client_cert", "allow_plaintext",
                                    "handshake_timeout"}


def test_the_three_environment_variables_the_contract_names(pki):
    env = {"XDSI_TLS_CERT": str(pki / "node.pem"), "XDSI_TLS_KEY": str(pki / "node.key"),
           "XDSI_TLS_CA": str(pki / "ca.pem"), "XDSI_TLS_REQUIRE_CLIENT_CERT": "false"}
    s = tls_settings(load(environ=env), "repository")
    assert (s.cert, s.key, s.ca) == (env["XDSI_TLS_CERT"], env["XDSI_TLS_KEY"], env["XDSI_TLS_CA"])
    assert s.enabled and not s.require_client_cert


def test_an_actor_table_overrides_tls_key_by_key(pki, tmp_path):
    path = _toml(tmp_path, f'[tls]\ncert = "{pki}/node.pem"\nkey = "{pki}/node.key"\nca = "{pki}/ca.pem"\n'
                           f'[registry.tls]\nrequire_client_cert = false\n')
    cfg = load(path, environ={})
    registry, pix = tls_settings(cfg, "registry"), tls_settings(cfg, "pix")
    assert registry.cert == pix.cert == f"{pki}/node.pem"
    assert (registry.require_client_cert, pix.require_client_cert) == (False, True)
    # and from the environment, XDSI_<ACTOR>_TLS_<KEY>, over the file
    cfg = load(path, environ={"XDSI_PIX_TLS_CERT": f"{pki}/client.pem", "XDSI_PIX_TLS_KEY": f"{pki}/client.key"})
    assert tls_settings(cfg, "pix").cert == f"{pki}/client.pem"
    assert tls_settings(cfg, "registry").cert == f"{pki}/node.pem"
    # an actor section's own keys are untouched by its tls table
    assert cfg.section("registry")["port"] == 8010


@pytest.mark.parametrize("text, message", [
    ('[tls]\ncert = "{pki}/node.pem"\nkey = "{pki}/node.key"\n', "[tls] ca: required"),
    ('[tls]\nca = "{pki}/ca.pem"\n', "[tls] ca is set but [tls] cert is not"),
    ('[tls]\ncert = "{pki}/nothing.pem"\nca = "{pki}/ca.pem"\n', "[tls] cert = "),
    ('[tls]\nrequire_client_certs = false\n', "[tls] require_client_certs: no such key"),
    ('[registry.tls]\nallow_plaintext = "yes please"\n', "[registry.tls] allow_plaintext: expected true or false"),
    ('[registry]\ntls = "on"\n', "[registry] tls: expected a table"),
    ('[tls]\ncert = "{pki}/node.pem"\nkey = "{pki}/node.key"\n[registry.tls]\nca = ""\n',
     "(with [registry.tls] over [tls])"),
])
def test_a_wrong_tls_setting_is_refused_with_its_key(pki, tmp_path, text, message):
    cfg = load(_toml(tmp_path, text.format(pki=pki)), environ={})
    with pytest.raises(ConfigError) as e:
        tls_settings(cfg, "registry")
    assert message in str(e.value)


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(pki):
    with pytest.raises(ConfigError, match="cert/key"):
        server_context(settings(pki, key=str(pki / "client.key")))


# ------------------------------------------------------------ the plaintext rule

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("pacs.example.org", False),
])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_plain_listener_off_loopback_is_refused_unless_allowed(pki):
    plain = TlsSettings(cert="", key="", ca="", require_client_cert=True, allow_plaintext=False,
                        handshake_timeout=10.0)
    refusal = plaintext_refusal("0.0.0.0", 8010, plain, "registry SOAP")
    assert refusal and "registry SOAP" in refusal and "0.0.0.0:8010" in refusal and "allow_plaintext" in refusal
    assert plaintext_warning("0.0.0.0", 8010, plain, "registry SOAP")   # said in the log if it were allowed
    assert plaintext_refusal("127.0.0.1", 8010, plain, "registry SOAP") is None
    assert plaintext_warning("127.0.0.1", 8010, plain, "registry SOAP") is None
    allowed = TlsSettings(cert="", key="", ca="", require_client_cert=True, allow_plaintext=True,
                          handshake_timeout=10.0)
    assert plaintext_refusal("10.1.2.3", 2575, allowed, "PIX MLLP") is None
    assert "WITHOUT TLS" in plaintext_warning("10.1.2.3", 2575, allowed, "PIX MLLP")
    assert plaintext_refusal("0.0.0.0", 8010, settings(pki), "registry SOAP") is None
    assert plaintext_warning("0.0.0.0", 8010, settings(pki), "registry SOAP") is None


# ------------------------------------------------------------ xdsi certs

def _certs(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affinity_domain.cli", "certs", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_makes_the_test_pki(pki):
    for stem in ("ca", "node", "client", "other-ca", "other-client"):
        assert stat.S_IMODE((pki / f"{stem}.key").stat().st_mode) == 0o600, stem
        assert (pki / f"{stem}.pem").exists()
    node = _cert(pki / "node.pem")
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert socket.gethostname() in sans.get_values_for_type(x509.DNSName)
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client_eku = _cert(pki / "client.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(client_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # openssl agrees on the chains: ours chain to ca, the other client's does not
    for leaf, ca, ok in (("node", "ca", True), ("client", "ca", True), ("other-client", "ca", False),
                         ("other-client", "other-ca", True)):
        done = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(pki / f"{ca}.pem"),
                               str(pki / f"{leaf}.pem")], capture_output=True, text=True)
        assert (done.returncode == 0) is ok, (leaf, ca, done.stdout, done.stderr)


def test_certs_prints_the_config_and_keeps_or_replaces_a_set(tmp_path):
    out = tmp_path / "pki"
    first = _certs(out, "--host", "xdsi.example.org")
    assert first.returncode == 0, first.stderr
    assert f'cert = "{out / "node.pem"}"' in first.stdout and f'ca = "{out / "ca.pem"}"' in first.stdout
    cfg_file = tmp_path / "xdsi.toml"
    cfg_file.write_text(first.stdout)
    s = tls_settings(load(cfg_file, environ={}), "registry")
    server_context(s), client_context(s)    # the printed lines are a working [tls]
    node, node_bytes = _cert(out / "node.pem"), (out / "node.pem").read_bytes()
    assert "xdsi.example.org" in node.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    again = _certs(out)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert (out / "node.pem").read_bytes() == node_bytes      # kept
    os.chmod(out / "node.key", 0o644)
    forced = _certs(out, "--force")
    assert forced.returncode == 0
    assert _cert(out / "node.pem").serial_number != node.serial_number      # replaced
    assert stat.S_IMODE((out / "node.key").stat().st_mode) == 0o600
    (out / "client.key").unlink()
    partial = _certs(out)
    assert partial.returncode == 2 and "client.key" in partial.stderr


# ------------------------------------------------------------ server_context against openssl s_client

def s_client(port: int, pki: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                           "-CAfile", str(pki / "ca.pem"), "-verify_return_error", "-brief", "-ign_eof",
                           *options], input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30)


def _as(pki: Path, leaf: str) -> list[str]:
    return ["-cert", str(pki / f"{leaf}.pem"), "-key", str(pki / f"{leaf}.key")]


def test_s_client_with_a_good_certificate_gets_tls13(pki):
    server = responder(pki)
    out = s_client(server.port, pki, *_as(pki, "client"))
    server.wait_for_outcome()
    assert "Protocol version: TLSv1.3" in out.stderr and "Verification: OK" in out.stderr
    assert "HTTP/1.0 200 OK" in out.stdout and "hello xdsi test client" in out.stdout
    (shake,) = server.accepted
    assert shake.version == "TLSv1.3" and shake.peer.common_name == "xdsi test client"
    assert shake.peer.issuer == "O=xdsi test PKI,CN=xdsi test CA"


@pytest.mark.parametrize("cipher", BCP195_TLS12_CIPHERS[:2])   # the RSA ones: our certificates are RSA
def test_s_client_on_tls12_gets_a_bcp195_cipher(pki, cipher):
    server = responder(pki)
    out = s_client(server.port, pki, *_as(pki, "client"), "-tls1_2", "-cipher", cipher)
    server.wait_for_outcome()
    assert "Protocol version: TLSv1.2" in out.stderr and f"Ciphersuite: {cipher}" in out.stderr
    assert "HTTP/1.0 200 OK" in out.stdout
    # and left to choose, a TLS 1.2 client gets the first of ours
    out = s_client(server.port, pki, *_as(pki, "client"), "-tls1_2")
    assert f"Ciphersuite: {BCP195_TLS12_CIPHERS[0]}" in out.stderr


@pytest.mark.parametrize("name, options, reason", [
    ("no client certificate", [], "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    ("no client certificate, TLS 1.2", ["-tls1_2"], "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    ("a certificate from another CA", ["OTHER"], "CERTIFICATE_VERIFY_FAILED"),
    ("TLS 1.1", ["GOOD", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "UNSUPPORTED_PROTOCOL"),
    ("TLS 1.0", ["GOOD", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], "UNSUPPORTED_PROTOCOL"),
    ("a CBC cipher", ["GOOD", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"], "NO_SHARED_CIPHER"),
    ("a CBC cipher, SHA-1", ["GOOD", "-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA"], "NO_SHARED_CIPHER"),
    ("RSA key transport", ["GOOD", "-tls1_2", "-cipher", "AES128-GCM-SHA256"], "NO_SHARED_CIPHER"),
    ("finite-field DHE", ["GOOD", "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"], "NO_SHARED_CIPHER"),
])
def test_s_client_is_refused_at_the_handshake(pki, name, options, reason):
    server = responder(pki)
    args = [a for o in options for a in (_as(pki, "client") if o == "GOOD" else _as(pki, "other-client")
                                         if o == "OTHER" else [o])]
    out = s_client(server.port, pki, *args)
    server.wait_for_outcome()
    assert server.accepted == [] and reason in server.refused[0], (name, server.refused)
    assert "HTTP/1.0" not in out.stdout and out.returncode != 0


def test_a_refusal_says_why_for_the_log_and_the_audit(pki):
    server = responder(pki)
    s_client(server.port, pki)
    s_client(server.port, pki, *_as(pki, "other-client"))
    plain = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{server.port}/"], capture_output=True, text=True,
                           timeout=30)
    server.wait_for_outcome(3)
    assert plain.returncode != 0 and server.accepted == []
    assert server.refused[0].startswith("the peer sent no certificate")
    assert server.refused[1].startswith("the peer's certificate is not signed by our CA")
    assert server.refused[2].startswith("a plain HTTP request on a TLS port")


def test_a_peer_that_never_finishes_the_handshake_is_let_go(pki):
    server = responder(pki)
    server.handshake_timeout = 0.5
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        server.wait_for_outcome()       # generous: wait_for_outcome allows 15 s
        assert server.refused == ["the peer did not finish the TLS handshake in time"]
        silent.settimeout(5)
        assert silent.recv(1) == b""    # and the connection is closed


def test_curl_with_cert_key_and_cacert(pki):
    server = responder(pki)
    for host in ("localhost", "127.0.0.1"):     # the node certificate names both: hostname checking passes
        out = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki / "ca.pem"),
                              "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"),
                              f"https://{host}:{server.port}/"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout == "hello xdsi test client\n", out.stderr
    for leaf in (None, "other-client"):
        cert = ["--cert", str(pki / f"{leaf}.pem"), "--key", str(pki / f"{leaf}.key")] if leaf else []
        out = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki / "ca.pem"), *cert,
                              f"https://localhost:{server.port}/"], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "hello" not in out.stdout, leaf
    server.wait_for_outcome(4)
    assert len(server.accepted) == 2 and len(server.refused) == 2


def test_optional_client_certificate_still_checks_one_that_is_sent(pki):
    server = responder(pki, require_client_cert=False)
    anonymous = s_client(server.port, pki)
    assert "hello anonymous" in anonymous.stdout
    assert "hello xdsi test client" in s_client(server.port, pki, *_as(pki, "client")).stdout
    other = s_client(server.port, pki, *_as(pki, "other-client"))
    assert "hello" not in other.stdout
    server.wait_for_outcome(3)
    assert [s.peer.common_name if s.peer else None for s in server.accepted] == [None, "xdsi test client"]
    assert "CERTIFICATE_VERIFY_FAILED" in server.refused[0]


# ------------------------------------------------------------ client_context against openssl s_server

class SServer:
    def __init__(self, pki: Path, *options: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(self.port), "-cert", str(pki / "node.pem"),
             "-key", str(pki / "node.key"), "-CAfile", str(pki / "ca.pem"), "-Verify", "1",
             "-verify_return_error", "-www", *options],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_port(self.port, self.process)

    def get(self, context: ssl.SSLContext, hostname: str = "localhost") -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            page = b""
            while chunk := tls.recv(65536):
                page += chunk
        return page.decode(errors="replace")

    def stop(self) -> str:
        self.process.terminate()
        return self.process.communicate(timeout=10)[0]


def test_client_context_against_s_server(pki):
    server = SServer(pki)
    try:
        page = server.get(client_context(settings(pki, leaf="client")))
    finally:
        log = server.stop()
    assert "HTTP/1.0 200 ok" in page and "New, TLSv1.3, Cipher is TLS_" in page
    assert "Subject: O=xdsi test PKI, CN=xdsi test client" in page     # s_server saw and checked our certificate
    # OpenSSL 3.0 writes "CN = name", 3.5 (Debian 13) "CN=name"
    assert "verify return:1" in log and re.search(r"CN ?= ?xdsi test client", log)


def test_client_context_on_a_tls12_only_server_offers_only_bcp195(pki):
    server = SServer(pki, "-tls1_2")
    try:
        page = server.get(client_context(settings(pki, leaf="client")))
    finally:
        server.stop()
    assert "New, TLSv1.2, Cipher is ECDHE-RSA-AES" in page
    # s_server lists the ciphers the client offered: only ours (TLS 1.3 ones aside)
    offered = page.split("Ciphers common between both SSL end points:")[1].split("Signature Algorithms")[0]
    assert set(offered.replace("\n", " ").split()) <= set(BCP195_TLS12_CIPHERS) | {
        "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}


@pytest.mark.parametrize("case", ["untrusted server", "wrong host name", "cbc server", "tls 1.1 server"])
def test_client_context_refuses(pki, case):
    options = {"cbc server": ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256:AES128-SHA"],
               "tls 1.1 server": ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]}.get(case, [])
    server = SServer(pki, *options)
    context = client_context(settings(pki, leaf="client", ca="other-ca" if case == "untrusted server" else "ca"))
    try:
        with pytest.raises(ssl.SSLError) as e:
            server.get(context, hostname="wrong.example.org" if case == "wrong host name" else "localhost")
    finally:
        server.stop()
    words = {"untrusted server": "not signed by our CA", "wrong host name": "not for the host we dialled",
             "cbc server": "no cipher suite we offered", "tls 1.1 server": "no TLS version we accept"}[case]
    assert refusal(e.value).startswith("the peer") and words in refusal(e.value)
    expected = {"untrusted server": "CERTIFICATE_VERIFY_FAILED", "wrong host name": "Hostname mismatch",
                "cbc server": "ALERT_HANDSHAKE_FAILURE",     # we offered no cipher it has
                "tls 1.1 server": "ALERT_PROTOCOL_VERSION"}[case]
    assert expected in str(e.value)


def test_peer_identity_reads_the_verified_certificate(pki):
    cert = ssl._ssl._test_decode_cert(str(pki / "node.pem"))
    who = peer_identity(cert)
    assert who.common_name == socket.gethostname()
    assert "localhost" in who.dns_names and {"127.0.0.1", "0:0:0:0:0:0:0:1"} <= set(who.ip_addresses)
    assert who.names[0] == who.common_name and "localhost" in who.names
    assert peer_identity(None) is None and peer_identity({}) is None
