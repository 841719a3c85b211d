"""Bad input and faults on the PIX manager's MLLP listener, over real sockets against real PostgreSQL:
each gets an AE/AR with ERR or a clean close, the listener keeps serving, nothing accepted is lost."""
import json
import signal
import socket
import threading
import time
import urllib.request

import pytest

from affinity_domain.mllp import FrameReader, frame
from tests.pix.pixmsg import HOSP_A, HOSP_B, ack, adt, cx, fields, new_id, qbp, query
from tests.services import start_pix
from tests.xds import mllp_send

LIMIT = 4096


@pytest.fixture(scope="module")
def pix(new_database, tmp_path_factory):
    database = new_database()
    service = start_pix(database, tmp_path_factory.mktemp("pix-faults"), registry_feed="",
                        max_message_bytes=LIMIT)
    yield service
    service.stop()


def replies(sock: socket.socket, count: int, timeout: float = 10) -> list[str]:
    sock.settimeout(timeout)
    reader, out = FrameReader(), []
    while len(out) < count:
        data = sock.recv(65536)
        if not data:
            break
        out += [m.decode() for m in reader.feed(data)]
    return out


def test_garbage_between_frames_is_skipped_and_every_frame_answered(pix):
    pid = cx(new_id(), HOSP_A)
    with socket.create_connection(pix.mllp) as s:
        s.sendall(b"noise\r\n" + frame(adt("A01", pid, family="Garbage", given="Between", dob="19610101"))
                  + b"\x00\xffmore noise" + frame(qbp(pid)))
        ack_, answer = replies(s, 2)
    assert fields(ack_, "MSA")[1] == "AA"
    assert fields(answer, "MSA")[1] == "AA" and fields(answer, "QAK")[2] == "OK"


def test_v25_feed_is_accepted_and_the_ack_answers_in_kind(pix):
    pid = cx(new_id(), HOSP_B)
    message = adt("A04", pid, family="Version", given="Two Five", dob="19720202", version="2.5")
    reply = mllp_send(pix.mllp, message)
    control = message.decode().split("\r")[0].split("|")[9]
    assert fields(reply, "MSA")[1:3] == ["AA", control]
    assert fields(reply, "MSH")[11] == "2.5" and fields(reply, "MSH")[8].startswith("ACK^A04")


def test_oversized_message_gets_ar_and_the_listener_keeps_serving(pix):
    big = adt("A01", cx(new_id(), HOSP_A), family="X" * (2 * LIMIT))
    with socket.create_connection(pix.mllp) as s:
        s.sendall(frame(big))
        (reply,) = replies(s, 1)
        assert fields(reply, "MSA")[1] == "AR" and "100" in "|".join(fields(reply, "ERR"))
        assert s.recv(10) == b""                      # then a clean close
    pid = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", pid, family="After", given="Oversize", dob="19630303")) == "AA"


def test_a_frame_that_never_ends_blocks_nobody_and_applies_nothing(pix):
    stuck_pid = cx(new_id("S"), HOSP_A)
    stuck = socket.create_connection(pix.mllp)
    stuck.sendall(b"\x0b" + adt("A01", stuck_pid, family="Never", given="Ends", dob="19640404")[:-20])
    try:
        started = time.monotonic()
        pid = cx(new_id(), HOSP_A)
        assert ack(pix, adt("A01", pid, family="Not", given="Blocked", dob="19650505")) == "AA"
        assert query(pix, pid)[1] == "OK" and time.monotonic() - started < 5
    finally:
        stuck.close()                                 # dropped mid-message
    time.sleep(0.3)
    code, _, _, reply = query(pix, stuck_pid)
    assert code == "AE" and "204" in reply            # the half message was never applied
    assert ack(pix, adt("A01", cx(new_id(), HOSP_A), family="Still", given="Serving", dob="19660606")) == "AA"


def test_many_concurrent_senders(pix):
    results, errors = [], []

    def sender(n: int) -> None:
        try:
            pid = cx(new_id(f"C{n}"), HOSP_A)
            code = ack(pix, adt("A01", pid, family=f"Concurrent{n}", given="Sender", dob="19700101"))
            results.append((code, query(pix, pid)[1]))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results == [("AA", "OK")] * 24


@pytest.mark.parametrize("mutate, code", [
    (lambda m: m.replace(b"ADT^A01^ADT_A01", b"ADT^A03^ADT_A03"), "AR"),     # an event the feed does not take
    (lambda m: m.replace(b"ADT^A01^ADT_A01", b"SIU^S12^SIU_S12"), "AR"),     # not ADT at all
    (lambda m: m.replace(b"MSH|", b"XYZ|", 1), "AR"),                        # not starting with MSH
    (lambda m: m.replace(b"\rPID|", b"\rNOT A SEGMENT\rPID|"), "AR"),
    (lambda m: m.replace(b"&ISO|", b"|"), "AE"),                             # HD without universal ID type
    (lambda m: m.replace(b"|P|2.3.1\r", b"|P|2.9\r"), "AR"),                 # unsupported version
    (lambda m: m.split(b"\rPID|")[0] + b"\r", "AE"),                          # no PID
], ids=["A03", "SIU", "no-MSH", "bad-segment", "bad-authority", "bad-version", "no-PID"])
def test_bad_messages_get_an_error_ack_with_err(pix, mutate, code):
    pid = cx(new_id(), HOSP_A)
    reply = mllp_send(pix.mllp, mutate(adt("A01", pid, family="Bad", given="Input", dob="19700707")))
    assert fields(reply, "MSA")[1] == code and "\rERR|" in reply
    assert query(pix, pid)[0] == "AE"                 # nothing was registered


def test_pdq_and_other_queries_are_not_answered_as_pix_queries(pix):
    reply = mllp_send(pix.mllp, qbp(cx("ANY", HOSP_A)).replace(b"QBP^Q23^QBP_Q21", b"QBP^Q22^QBP_Q21"))
    assert fields(reply, "MSA")[1] == "AR" and "201" in fields(reply, "ERR")[3]


def test_a_rejected_update_changes_nothing(pix):
    pid = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", pid, family="Stable", given="Record", dob="19800808")) == "AA"
    assert ack(pix, adt("A08", f"{pid}~OTHER^^^&1.2.3", family="Changed", given="Record", dob="19800808")) == "AE"
    person = query(pix, pid)
    assert person[1] == "OK"
    got = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_A}&pid={pid.split('^')[0]}"))
    assert got["identities"][0]["demographics"]["family"] == "STABLE"


def test_accepted_identities_survive_a_killed_process(new_database, tmp_path):
    database = new_database()
    first = start_pix(database, tmp_path, registry_feed="", workers=1)   # one process: SIGKILL ends it all
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
    try:
        assert ack(first, adt("A01", a, family="Durable", given="Person", dob="19550505")) == "AA"
        assert ack(first, adt("A01", b, family="Durable", given="Person", dob="19550505")) == "AA"
    finally:
        first.stop(signal.SIGKILL)
    second = start_pix(database, tmp_path, registry_feed="")
    try:
        code, status, ids, _ = query(second, a, [HOSP_B])
        assert (code, status, ids) == ("AA", "OK", [b])
    finally:
        second.stop()


def test_changed_blocking_keys_reach_the_stored_index_through_rekey(new_database, tmp_path):
    """Identities keep the keys they were stored with until ``xdsi pix rekey``."""
    import subprocess
    import sys
    other = "1.2.840.9.9"
    database = new_database()
    person = dict(family="Rekeyed", given="Rita", dob="19770303", sex="F", address="", phone="4165550199")
    a = cx(new_id("A"), HOSP_A)
    phone_only = start_pix(database, tmp_path, registry_feed="", blocking_keys='["phone"]')
    try:
        assert ack(phone_only, adt("A01", a, **person)) == "AA"
    finally:
        phone_only.stop()
    pix = start_pix(database, tmp_path, registry_feed="")          # the built-in keys from now on
    try:
        no_phone = dict(person, phone="")
        before = cx(new_id("C"), other)
        assert ack(pix, adt("A01", before, **no_phone)) == "AA"
        assert query(pix, a, [other])[1] == "NF"                   # not a candidate: stale keys
        done = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", "rekey"], env=pix.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "recomputed for 2" in done.stdout, done.stdout + done.stderr
        b = cx(new_id("B"), HOSP_B)
        assert ack(pix, adt("A01", b, **no_phone)) == "AA"
        assert query(pix, a, [HOSP_B])[2] == [b]
    finally:
        pix.stop()
