"""Access control at the HL7 doors (issue 16): configured senders (MSH-3, MSH-4, hosts) and the
assigning authorities each may speak for, at the PIX manager (ITI-8/ITI-9), the registry's patient
feed and the consumer's orders. python-hl7's ``mllp_send`` is the outside sender.

Each actor listens on every address, so a sender reaches it over loopback and over the machine's
own address, which the actor sees as another host."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hospital import order
from tests.pix.pixmsg import HOSP_A, HOSP_B, adt, cx, new_id, qbp
from tests.services import DOMAIN, free_port, launch, own_address

MLLP_SEND = Path(sys.executable).with_name("mllp_send")
PLAIN_OFF_LOOPBACK = {"XDSI_TLS_ALLOW_PLAINTEXT": "true"}
LOCAL = "1.3.6.1.4.1.21367.2005.13.20.2000"      # the consumer's own patient-id domain (its default)


REMOTE = own_address()
needs_remote = pytest.mark.skipif(REMOTE is None, reason="this machine has no non-loopback address")


def send(host: str, port: int, message: bytes, tmp: Path) -> str:
    """The ACK python-hl7's mllp_send prints for ``message``."""
    path = tmp / f"m{new_id()}.hl7"
    path.write_bytes(b"\x0b" + message + b"\x1c\x0d")          # framed: what it reads without --loose
    done = subprocess.run([str(MLLP_SEND), "-p", str(port), "-f", str(path), host], capture_output=True,
                          timeout=30)
    return done.stdout.decode("utf-8", "replace").replace("\n", "\r")


def msa(ack: str) -> str:
    return next((seg.split("|")[1] for seg in ack.split("\r") if seg.startswith("MSA|")), "")


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pix(new_database, tmp_path_factory):
    port, http = free_port(), free_port()
    senders = (f'{{ WARD_A = {{ application = "ADT", facility = "HOSP", authorities = ["{HOSP_A}"], '
               f'hosts = ["{REMOTE or "192.0.2.254"}"] }} }}')
    proc, _ = launch("pix", tmp_path_factory.mktemp("pix-senders"), new_database(), {
        "host": "0.0.0.0", "port": port, "http_port": http, "senders": senders}, [port, http], env=PLAIN_OFF_LOOPBACK)
    yield port
    _stop(proc)


@needs_remote
def test_pix_refuses_an_unknown_sender_from_another_host_with_ar(pix, tmp_path):
    message = adt("A01", cx(new_id("A"), HOSP_A)).replace(b"|ADT|HOSP|", b"|EVIL|NOWHERE|", 1)
    ack = send(REMOTE, pix, message, tmp_path)
    assert msa(ack) == "AR" and "\rERR|" in ack and "not a configured sender" in ack, ack
    query = send(REMOTE, pix, qbp(cx(new_id("A"), HOSP_A)), tmp_path)      # MSH-3 CONSUMER: unknown too
    assert msa(query) == "AR", query


@needs_remote
def test_pix_takes_a_configured_sender_only_for_its_own_authorities(pix, tmp_path):
    assert msa(send(REMOTE, pix, adt("A01", cx(new_id("A"), HOSP_A)), tmp_path)) == "AA"
    other = send(REMOTE, pix, adt("A01", cx(new_id("B"), HOSP_B)), tmp_path)
    assert msa(other) == "AR" and HOSP_B in other and "\rERR|" in other, other
    # A merge that would subsume another authority's identity is refused too.
    merge = adt("A40", cx(new_id("A"), HOSP_A), mrg=cx(new_id("B"), HOSP_B))
    assert msa(send(REMOTE, pix, merge, tmp_path)) == "AR"


def test_pix_takes_any_sender_on_loopback_by_default(pix, tmp_path):
    ack = send("127.0.0.1", pix, adt("A01", cx(new_id("B"), HOSP_B)).replace(b"|ADT|HOSP|", b"|OTHER|SITE|", 1),
               tmp_path)
    assert msa(ack) == "AA", ack


def test_pix_without_loopback_senders_refuses_unknown_senders_on_loopback(new_database, tmp_path):
    port, http = free_port(), free_port()
    proc, _ = launch("pix", tmp_path, new_database(), {"port": port, "http_port": http,
                                                       "loopback_senders": "false"}, [port, http])
    try:
        assert msa(send("127.0.0.1", port, adt("A01", cx(new_id("A"), HOSP_A)), tmp_path)) == "AR"
    finally:
        _stop(proc)


@needs_remote
def test_the_registry_feed_takes_only_its_configured_sender(new_database, tmp_path):
    port, feed = free_port(), free_port()
    senders = (f'{{ PIX = {{ application = "ADT", facility = "HOSP", authorities = ["{DOMAIN}"], '
               f'hosts = ["{REMOTE}"] }} }}')
    proc, _ = launch("registry", tmp_path, new_database(), {"port": port, "feed_host": "0.0.0.0", "feed_port": feed,
                                                            "feed_senders": senders}, [port, feed],
                     env=PLAIN_OFF_LOOPBACK)
    try:
        patient = f"{new_id('R')}^^^&{DOMAIN}&ISO"
        assert msa(send(REMOTE, feed, adt("A01", patient), tmp_path)) == "AA"
        stranger = send(REMOTE, feed, adt("A01", patient).replace(b"|ADT|HOSP|", b"|EVIL|NOWHERE|", 1), tmp_path)
        assert msa(stranger) == "AR" and "\rERR|" in stranger, stranger
    finally:
        _stop(proc)


@needs_remote
def test_consumer_orders_from_a_sender_for_another_authority_get_ar(new_database, tmp_path):
    mllp, http, dicom, nobody = free_port(), free_port(), free_port(), free_port()
    senders = ('{ RIS = { application = "RIS", facility = "HOSPB", authorities = ["1.2.3.999"], '
               f'hosts = ["{REMOTE}"] }} }}')
    proc, _ = launch("consumer", tmp_path, new_database(), {
        "host": "0.0.0.0", "mllp_port": mllp, "http_port": http, "dicom_port": dicom, "pix": f"127.0.0.1:{nobody}",
        "local_pacs": f"LOCALPACS@127.0.0.1:{nobody}", "order_senders": senders}, [mllp, http, dicom],
        env=PLAIN_OFF_LOOPBACK)
    try:
        refused = send(REMOTE, mllp, order(new_id("P"), LOCAL), tmp_path)
        assert msa(refused) == "AR" and LOCAL in refused, refused
        stranger = send(REMOTE, mllp, order(new_id("P"), LOCAL).replace(b"|RIS|HOSPB|", b"|EVIL|X|", 1), tmp_path)
        assert msa(stranger) == "AR", stranger
        assert msa(send("127.0.0.1", mllp, order(new_id("P"), LOCAL), tmp_path)) == "AA"   # loopback: the default
    finally:
        _stop(proc)


def test_sender_configuration_mistakes_are_refused_with_their_key():
    from affinity_domain import access
    from affinity_domain.config import ConfigError
    for table, word in (({"facility": "F"}, "application"), ({"application": "A", "facility": "F", "oids": []}, "oids"),
                        ({"application": "A", "facility": "F", "authorities": "1.2"}, "authorities")):
        with pytest.raises(ConfigError, match=word):
            access.hl7_senders({"S": table}, "pix")
    senders = access.hl7_senders({"S": {"application": "ADT", "facility": "1.2.3", "authorities": ["1.2"],
                                        "hosts": ["10.0.0.0/8"]}}, "pix")
    assert access.hl7_refusal(senders, False, "ADT", "HOSP^1.2.3^ISO", "10.1.1.1", ["1.2"]) is None  # MSH-4 by its OID
    assert access.hl7_refusal(senders, False, "ADT", "HOSP^1.2.3^ISO", "11.1.1.1", ["1.2"])         # another host
    assert "1.3" in access.hl7_refusal(senders, False, "ADT", "1.2.3", "10.1.1.1", ["1.2", "1.3"])
