"""The syslog wire against a peer nobody here wrote: Debian's rsyslogd (with rsyslog-gnutls), started by the
test with its own configuration, pid file and unprivileged ports.

- rsyslog as the destination: our sender's records arrive over mutual TLS (RFC 5425) and UDP (RFC 5426), and
  rsyslog's RFC 5424 parser reads our header (PRI 85, MSGID IHE+RFC-3881) and hands on the XML intact;
- rsyslog as the sender: its omfwd, TCP with octet-counted framing over TLS, delivers to our repository."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from lxml import etree

from affinity_domain.audit import syslog
from tests.audit.test_arr_wire import a_query, a_query_xml, new_patient, recorder, wait_found
from tests.services import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
pytestmark = pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="needs rsyslogd (apt-get install rsyslog "
                                                                     "rsyslog-gnutls)")


class Rsyslogd:
    def __init__(self, folder: Path, body: str, pki):
        self.folder, self.out = folder, folder / "received.log"
        (folder / "work").mkdir(exist_ok=True)
        conf = folder / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{folder / 'work'}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{pki.ca_cert}"
       defaultNetstreamDriverCertFile="{self.cert}" defaultNetstreamDriverKeyFile="{self.key}")
template(name="raw" type="string" string="%rawmsg%\\n")
{body}
""")
        self.process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(folder / "rsyslogd.pid")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stop(self) -> str:
        self.process.terminate()
        try:
            output, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate(timeout=5)
        return output.decode("utf-8", "replace")

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []

    def wait_for(self, predicate, timeout: float = 20) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stop()
            found = [line for line in self.lines() if predicate(line)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"rsyslog wrote nothing that matched; it has {self.lines()[-5:]}")


def wait_tcp(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "rsyslogd exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"rsyslogd does not listen on {port}")


@pytest.fixture
def rsyslog_destination(tmp_path, pki):
    tls_port, udp_port = free_port(), free_port()
    Rsyslogd.cert, Rsyslogd.key = pki.server_cert, pki.server_key
    r = Rsyslogd(tmp_path, f"""
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="{tls_port}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
*.* action(type="omfile" file="{tmp_path / 'received.log'}" template="raw")
""", pki)
    wait_tcp(tls_port, r.process)
    r.tls_port, r.udp_port = tls_port, udp_port
    yield r
    r.stop()


def _audit_xml(line: bytes) -> etree._Element:
    message = syslog.parse(line)
    assert (message.facility, message.severity, message.msgid) == (10, 5, "IHE+RFC-3881")
    return etree.fromstring(message.msg)


def test_rsyslog_receives_our_records_over_mutual_tls(rsyslog_destination, pki, tmp_path):
    patient = new_patient()
    r = recorder(tmp_path / "sender", [f"tls://127.0.0.1:{rsyslog_destination.tls_port}"], pki=pki).start()
    for _ in range(3):
        r.record(a_query(patient))
    lines = rsyslog_destination.wait_for(lambda line: patient.split("^")[0].encode() in line)
    deadline = time.monotonic() + 10
    while len(lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = [x for x in rsyslog_destination.lines() if patient.split("^")[0].encode() in x]
    r.stop()
    assert len(lines) == 3
    doc = _audit_xml(lines[0])
    assert doc.find("EventIdentification/EventID").get("csd-code") == "110112"
    assert doc.find("ParticipantObjectIdentification").get("ParticipantObjectID") == patient
    assert r.spool.backlog() == 0


def test_rsyslog_receives_our_records_over_udp(rsyslog_destination, tmp_path):
    patient = new_patient()
    r = recorder(tmp_path / "sender", [f"udp://127.0.0.1:{rsyslog_destination.udp_port}"]).start()
    r.record(a_query(patient))
    [line] = rsyslog_destination.wait_for(lambda line: patient.split("^")[0].encode() in line)
    r.stop()
    assert _audit_xml(line).find("AuditSourceIdentification").get("AuditSourceID").startswith("tests@")


def test_rsyslog_refuses_a_sender_without_the_domain_certificate(rsyslog_destination, pki, tmp_path):
    """Our sender presenting another CA's certificate is refused by rsyslog; the record stays queued."""
    patient = new_patient()
    r = recorder(tmp_path / "sender", [f"tls://127.0.0.1:{rsyslog_destination.tls_port}"], pki=pki)
    r.context.load_cert_chain(pki.rogue_cert, pki.rogue_key)
    r._links = {url: type(link)(link.host, link.port, r.context, link.timeout) for url, link in r._links.items()}
    r.start()
    r.record(a_query(patient))
    time.sleep(3)
    assert not [x for x in rsyslog_destination.lines() if patient.split("^")[0].encode() in x]
    assert r.spool.backlog() > 0 and r.senders[0].failures >= 1
    r.stop(timeout=0.5)


def test_rsyslog_forwards_to_our_repository(tls_arr, pki, tmp_path):
    """rsyslog's omfwd (TCP, octet-counted, TLS with the domain's client certificate) as a sender to our ARR."""
    udp_in = free_port()
    Rsyslogd.cert, Rsyslogd.key = pki.client_cert, pki.client_key
    r = Rsyslogd(tmp_path, f"""
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_in}")
*.* action(type="omfwd" target="127.0.0.1" port="{tls_arr.tls_port}" protocol="tcp" tcp_framing="octet-counted"
           streamDriver="gtls" streamDriverMode="1" streamDriverAuthMode="x509/certvalid"
           template="RSYSLOG_SyslogProtocol23Format"
           action.resumeRetryCount="-1" action.resumeInterval="1")
*.* action(type="omfile" file="{tmp_path / 'received.log'}" template="raw")
""", pki)
    try:
        patient = new_patient()
        frame = syslog.format_message(a_query_xml(patient), hostname="modality1", app_name="xdsi-test",
                                      procid="7", time=dt.datetime.now(dt.timezone.utc))
        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:   # until rsyslog's UDP input is up (copies are one record)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(frame, ("127.0.0.1", udp_in))
            found = wait_found(tls_arr, f"patient={quote(patient)}", timeout=1)
        [event] = found
    finally:
        output = r.stop()
    assert event["type"]["code"] == "110112", output
    import psycopg
    with psycopg.connect(tls_arr.database_url) as conn:
        transport, peer, host = conn.execute(
            "SELECT transport, peer, syslog_host FROM audit.record WHERE %s = ANY(patient_ids)", (patient,)).fetchone()
    assert (transport, host) == ("tls", "modality1") and "CN=client1" in peer
    assert json.dumps(event)
