"""ITI-19 at every door of the running domain: every actor a process with ``[tls]`` set (XDSI_TLS_*),
against peers nobody here wrote: curl and openssl s_client on the SOAP and JSON ports, DCMTK
echoscu/storescu/findscu ``+tls`` against the imaging source, DCMTK storescp ``+tls`` as the local PACS
that the consumer fills by C-MOVE from the TLS imaging source into its TLS SCP, and MLLP over TLS
(openssl s_client piping a frame). No plaintext port is left: a plain peer gets no answer."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from affinity_domain import mllp, secure_node
from tests.affinity_domain.tls_peers import make_pki, mllp_s_client, settings
from tests.hospital import HOSP_A, HOSP_B, adt, order, published
from tests.services import DCMTK_ENV, ROOT, free_port, start_chain, wait_until

DCMTK = Path("/usr/bin")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def chain(new_database, tmp_path_factory, pki):
    tls = ("+tls", str(pki / "node.key"), str(pki / "node.pem"), "+cf", str(pki / "ca.pem"))
    with pytest.MonkeyPatch.context() as mp:     # the actors' processes inherit it
        for key in ("cert", "key"):
            mp.setenv(f"XDSI_TLS_{key.upper()}", str(pki / f"node.{'pem' if key == 'cert' else 'key'}"))
        mp.setenv("XDSI_TLS_CA", str(pki / "ca.pem"))
        c = start_chain(new_database(), tmp_path_factory.mktemp, pacs_options=tls,
                        consumer={"retrieve_order": '["c-move"]'})
    yield c
    c.stop()


@pytest.fixture
def as_node(pki):
    """This test process as a node of the domain (the client certificate): mllp.send over TLS."""
    secure_node.use(settings(pki, "client"))
    yield
    secure_node.use(secure_node.PLAIN)


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def http_ports(chain) -> dict[str, int]:
    return {"registry SOAP": port_of(chain.registry.url), "repository SOAP": port_of(chain.repository.url),
            "imaging source SOAP": port_of(chain.source_url), "PIX JSON": port_of(chain.pix.http),
            "consumer JSON": port_of(chain.consumer_http)}


def curl(port: int, pki: Path, *who: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", str(pki / "ca.pem"), *who,
                           f"https://localhost:{port}/health"], capture_output=True, text=True, timeout=30)


def cert(pki: Path, leaf: str) -> list[str]:
    return ["--cert", str(pki / f"{leaf}.pem"), "--key", str(pki / f"{leaf}.key")]


def s_client(port: int, pki: Path, leaf: str | None, data: bytes) -> subprocess.CompletedProcess:
    who = ["-cert", str(pki / f"{leaf}.pem"), "-key", str(pki / f"{leaf}.key")] if leaf else []
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.pem"),
                           "-verify_return_error", "-quiet", "-ign_eof", *who],
                          input=data, capture_output=True, timeout=30)


def test_curl_with_the_client_certificate_is_served_on_every_http_port(chain, pki):
    for name, port in http_ports(chain).items():
        out = curl(port, pki, *cert(pki, "client"))
        assert out.returncode == 0 and '"status"' in out.stdout, f"{name}: {out.stderr}"


@pytest.mark.parametrize("leaf", [None, "other-client"], ids=["no certificate", "another CA"])
def test_curl_without_a_good_certificate_is_refused(chain, pki, leaf):
    for name, port in http_ports(chain).items():
        out = curl(port, pki, *(cert(pki, leaf) if leaf else []))
        assert out.returncode != 0 and '"status"' not in out.stdout, name


@pytest.mark.parametrize("leaf, served", [("client", True), (None, False), ("other-client", False)])
def test_s_client_on_the_soap_and_json_ports(chain, pki, leaf, served):
    for name, port in http_ports(chain).items():
        out = s_client(port, pki, leaf, b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert (b"HTTP/1.1 200" in out.stdout or b"HTTP/1.0 200" in out.stdout) == served, \
            f"{name}: {out.stdout[-300:]!r} {out.stderr[-500:]!r}"


def plain_http(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        try:
            return s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return b""


def plain_mllp(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(mllp.frame(adt(f"P{uuid.uuid4().hex[:8]}", HOSP_A)))
        try:
            return s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return b""


def echoscu(port: int, ae: str, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DCMTK / "echoscu"), "-to", "10", "-ta", "10", "-td", "10", "-aec", ae, *tls,
                           "127.0.0.1", str(port)], env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


def dcmtk_tls(pki: Path, leaf: str = "client") -> list[str]:
    return ["+tls", str(pki / f"{leaf}.key"), str(pki / f"{leaf}.pem"), "+cf", str(pki / "ca.pem")]


def test_no_plaintext_port_answers(chain, pki):
    for name, port in http_ports(chain).items():
        assert b"HTTP/" not in plain_http(port), name
    for name, port in {"registry feed": chain.registry.feed[1], "PIX": chain.pix.mllp[1],
                       "consumer orders": chain.consumer_mllp}.items():
        assert b"MSA|" not in plain_mllp(port), name
    for ae, port in {"XDSI_SOURCE": chain.source_dicom_port, "XDSI_CONSUMER": chain.consumer_dicom}.items():
        out = echoscu(port, ae)
        assert out.returncode != 0, ae
        assert echoscu(port, ae, *dcmtk_tls(pki)).returncode == 0, ae


def test_mllp_over_tls_with_openssl_s_client(chain, pki):
    # The registry's feed answers AE for an id outside the affinity domain: an HL7 answer all the same.
    for port, code in ((chain.pix.mllp[1], b"MSA|AA"), (chain.registry.feed[1], b"MSA|AE")):
        assert code in mllp_s_client(port, pki, "client", adt(f"A{uuid.uuid4().hex[:8]}", HOSP_A)), port
        assert b"MSA|" not in mllp_s_client(port, pki, "other-client", adt(f"A{uuid.uuid4().hex[:8]}", HOSP_A))


def study_files(tmp_path: Path, pid: str, count: int = 4) -> tuple[str, list[Path]]:
    template = dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    files = []
    for i in range(count):
        ds = template.copy()
        ds.PatientID, ds.IssuerOfPatientID = pid, HOSP_A
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber, ds.Modality, ds.StudyDate, ds.InstanceNumber = "ACC19", "CT", "20260110", i + 1
        files.append(tmp_path / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return study, files


def test_dcmtk_tls_against_the_imaging_source_and_c_move_into_a_tls_pacs(chain, pki, tmp_path, as_node):
    a, b = f"A{uuid.uuid4().hex[:8]}", f"B{uuid.uuid4().hex[:8]}"
    family = "Tls" + uuid.uuid4().hex[:4]
    for pid, oid in ((a, HOSP_A), (b, HOSP_B)):     # ITI-8 over TLS, from this process's mllp.send
        assert b"MSA|AA" in mllp.send(*chain.pix.mllp, adt(pid, oid, family=family))
    study, files = study_files(tmp_path, a)
    store = subprocess.run([str(DCMTK / "storescu"), "-to", "20", "-ta", "20", "-td", "20", "-aec", "XDSI_SOURCE",
                            *dcmtk_tls(pki), "127.0.0.1", str(chain.source_dicom_port), *map(str, files)],
                           env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert store.returncode == 0, store.stderr
    refused = subprocess.run([str(DCMTK / "storescu"), "-to", "20", "-aec", "XDSI_SOURCE",
                              *dcmtk_tls(pki, "other-client"), "127.0.0.1", str(chain.source_dicom_port),
                              str(files[0])],
                             env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    published(chain, study)             # PIX query (ITI-9) and ITI-41 to the repository, over TLS
    find = subprocess.run([str(DCMTK / "findscu"), "-v", "-S", "-to", "20", "-aec", "XDSI_SOURCE", *dcmtk_tls(pki),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                           "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(chain.source_dicom_port)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert find.returncode == 0 and study in find.stdout + find.stderr, find.stderr
    # An order at hospital B (MLLP over TLS): the consumer queries the registry and C-MOVEs the study from
    # the imaging source into its own TLS SCP, then C-STOREs it into storescp +tls.
    assert b"MSA|AA" in mllp.send("127.0.0.1", chain.consumer_mllp, order(b))
    wait_until(lambda: len([f for f in chain.pacs.files() if f.suffix != ".tmp"]) >= len(files), 120, 0.5)
    got = {str(dcmread(f).SOPInstanceUID) for f in chain.pacs.files()}
    assert {f.stem for f in files} <= got


def serve(actor: str, tmp: Path, database_url: str, env: dict) -> subprocess.CompletedProcess | subprocess.Popen:
    full = dict(os.environ, XDSI_DATABASE_URL=database_url, XDSI_DATA_DIR=str(tmp), **env)
    for key in ("XDSI_TLS_CERT", "XDSI_TLS_KEY", "XDSI_TLS_CA"):
        full.pop(key, None)
    return subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", actor], env=full, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("actor, key", [("registry", "HOST"), ("registry", "FEED_HOST"), ("pix", "HOST"),
                                        ("imaging-source", "DICOM_HOST")])
def test_a_listener_off_loopback_without_tls_refuses_to_start(new_database, tmp_path, actor, key):
    prefix = "XDSI_" + actor.replace("-", "_").upper() + "_"
    ports = {prefix + k: str(free_port()) for k in {"registry": ("PORT", "FEED_PORT"), "pix": ("PORT", "HTTP_PORT"),
                                                     "imaging-source": ("PORT", "DICOM_PORT")}[actor]}
    env = {prefix + key: "0.0.0.0", **ports}
    proc = serve(actor, tmp_path, new_database(), env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0" in out and "without TLS" in out, out[-2000:]
    allowed = serve(actor, tmp_path, new_database(), {**env, "XDSI_TLS_ALLOW_PLAINTEXT": "true"})
    try:
        port = int(ports[prefix + key.replace("HOST", "PORT")])
        assert wait_until(lambda: _listening(port) or allowed.poll() is not None, 60) and allowed.poll() is None
    finally:
        allowed.terminate()
        out, _ = allowed.communicate(timeout=60)
    assert "WITHOUT TLS, as [tls] allow_plaintext = true allows" in out, out[-2000:]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        time.sleep(0.2)
        return False


def test_up_with_the_printed_tls_lines_runs_every_actor_on_tls_and_status_sees_it(new_database, tmp_path):
    """The README's quick start: ``xdsi certs --out DIR`` prints the [tls] lines; ``xdsi up`` with them
    in xdsi.toml; ``xdsi status`` asks each /health over https with the node's certificate."""
    from tests.services import domain_on_free_ports
    certs = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "certs", "--out", str(tmp_path / "pki")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert certs.returncode == 0 and "[tls]" in certs.stdout, certs.stderr
    (tmp_path / "xdsi.toml").write_text(certs.stdout)
    moved, ports = domain_on_free_ports()
    env = dict(os.environ, XDSI_DATA_DIR=str(tmp_path / "data"), XDSI_DATABASE_URL=new_database(), **moved)
    for key in ("XDSI_TLS_CERT", "XDSI_TLS_KEY", "XDSI_TLS_CA"):
        env.pop(key, None)
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "up"], env=env, cwd=tmp_path,
                          stdout=log, stderr=log, start_new_session=True)
    try:
        assert wait_until(lambda: all(_listening(p) for p in ports) or up.poll() is not None, 120) \
            and up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]

        def status(cwd: Path) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=env, cwd=cwd,
                                  capture_output=True, text=True, timeout=60)
        healthy = wait_until(lambda: status(tmp_path).returncode == 0, 60)
        out = status(tmp_path)
        assert healthy and out.stdout.count("https://") >= 5, out.stdout
        # Without the certificate (no xdsi.toml there) the same endpoints do not answer it.
        (tmp_path / "elsewhere").mkdir()
        plain = status(tmp_path / "elsewhere")
        assert plain.returncode == 1 and "unhealthy" in plain.stdout, plain.stdout
        printed = (tmp_path / "up.log").read_text()
        assert "http://" not in printed.split("endpoints:")[1].split("|")[0]
    finally:
        up.terminate()
        up.wait(60)
