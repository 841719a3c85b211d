"""The DICOM doors (the imaging source's port, the consumer's C-MOVE destination) against a hostile
peer, over real sockets to real processes with their default configuration: a PDU header that
claims a gigabyte, a flood of idle connections, more associations than the cap, and a C-STORE
whose SOP Instance UID is a path."""
from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, Verification

from affinity_domain import config, dicom_listener, dicom_status
from affinity_domain.dicom_limits import DEFAULT
from affinity_domain.dicom_net import EncodedInstance, install
from tests.services import DCMTK_ENV, free_port, launch

install()              # send_c_store takes an EncodedInstance: a UID pydicom would not write

GIB = 1 << 30
A_ABORT = 0x07
MB = 1024 * 1024


@dataclass
class Door:
    process: subprocess.Popen
    port: int
    ae_title: str
    data_dir: Path

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss(self) -> int:
        return self.status("VmRSS") * 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def start_source(database: str, tmp: Path, **settings) -> Door:
    dicom, http = free_port(), free_port()
    proc, _ = launch("imaging-source", tmp, database, {
        "dicom_port": dicom, "port": http, "store_dir": tmp / "images", "min_free_bytes": 0,
        "repository_url": f"http://127.0.0.1:{free_port()}/repository", "pix_port": free_port(),
        "registry_url": "", **settings}, [dicom, http])
    return Door(proc, dicom, "XDSI_SOURCE", tmp)


def start_consumer(database: str, tmp: Path, **settings) -> Door:
    mllp, http, dicom = free_port(), free_port(), free_port()
    proc, _ = launch("consumer", tmp, database, {"mllp_port": mllp, "http_port": http, "dicom_port": dicom,
                                                 "pix": f"127.0.0.1:{free_port()}", **settings}, [mllp, http, dicom])
    return Door(proc, dicom, "XDSI_CONSUMER", tmp)


@pytest.fixture(scope="module")
def source(new_database, tmp_path_factory):
    door = start_source(new_database(), tmp_path_factory.mktemp("source"))
    yield door
    door.stop()


@pytest.fixture(scope="module")
def consumer(new_database, tmp_path_factory):
    door = start_consumer(new_database(), tmp_path_factory.mktemp("consumer"))
    yield door
    door.stop()


@pytest.fixture(scope="module", params=["source", "consumer"])
def door(request):
    return request.getfixturevalue(request.param)


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def answer(sock: socket.socket, timeout: float) -> str:
    """What the server did: 'A-ABORT' (an A-ABORT PDU came), or 'closed' (the connection ended)."""
    sock.settimeout(timeout)
    try:
        first = sock.recv(1)
    except ConnectionResetError:
        return "closed"
    except TimeoutError:
        return "nothing"
    if not first:
        return "closed"
    return "A-ABORT" if first[0] == A_ABORT else f"PDU type 0x{first[0]:02X}"


def echo(door: Door) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    out = subprocess.run(["/usr/bin/echoscu", "-to", "10", "-ta", "10", "-td", "10", "-aec", door.ae_title,
                          "127.0.0.1", str(door.port)], env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    return out, time.monotonic() - began


def associate(door: Door, **kwargs):
    ae = AE("HOSTILE")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate(*door.address, ae_title=door.ae_title, **kwargs)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ------------------------------------------------------------ memory taken at a peer's word

@pytest.mark.parametrize("pdu_type", [0x01, 0x04], ids=["A-ASSOCIATE-RQ", "P-DATA-TF"])
def test_a_pdu_header_claiming_a_gigabyte_is_aborted_before_anything_is_allocated(door, pdu_type):
    before = door.rss()
    with socket.create_connection(door.address) as sock:
        sock.sendall(pdu_header(pdu_type, GIB))
        assert answer(sock, 5) in ("A-ABORT", "closed")
    assert door.rss() - before < 8 * MB
    assert echo(door)[0].returncode == 0                # the port still serves


def test_twenty_such_headers_at_once_cost_nothing(door):
    # Twenty connections' own cost first (their threads' stacks and arenas), so that what is
    # measured is what the headers cost.
    warm = [socket.create_connection(door.address) for _ in range(20)]
    for sock in warm:
        sock.sendall(pdu_header(0x07, 4) + bytes(4))     # an A-ABORT: the door ends the connection
    assert {answer(sock, 10) for sock in warm} == {"closed"}
    before = door.rss()
    socks = [socket.create_connection(door.address) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(pdu_header(0x01, GIB))
        answers = [answer(sock, 10) for sock in socks]
        assert set(answers) <= {"A-ABORT", "closed"}, answers
            # Twenty connections' threads cost some hundreds of KB each; their claims, 1024 MB each.
        assert door.rss() - before < 20 * MB
    finally:
        for sock in socks:
            sock.close()
    assert echo(door)[0].returncode == 0


def test_a_p_data_pdu_longer_than_the_maximum_we_announced_aborts_the_association(door):
    assoc = associate(door)
    assert assoc.is_established
    announced = assoc.acceptor.maximum_length          # the Maximum Length the door sent in its A-ASSOCIATE-AC
    assert 0 < announced <= config.DEFAULTS["imaging_source"]["max_pdu_bytes"]
    before = door.rss()
    assoc.dul.socket.socket.sendall(pdu_header(0x04, announced + 1))
    assert wait_for(lambda: assoc.is_aborted, 5)
    assert door.rss() - before < 8 * MB


# ------------------------------------------------------------ connections bounded and fair

def test_the_listen_backlog_is_at_least_128(door):
    out = subprocess.run(["/usr/bin/ss", "-ltnH", f"sport = :{door.port}"], capture_output=True, text=True).stdout
    [line] = out.splitlines()
    assert int(line.split()[2]) >= 128                  # Send-Q of a listening socket: its backlog


def test_a_flood_of_idle_connections_does_not_stop_a_c_echo(door):
    threads = door.status("Threads")
    flood = [socket.create_connection(door.address) for _ in range(150)]
    try:
        out, took = echo(door)                          # right behind the flood, in the same backlog
        assert out.returncode == 0, out.stdout + out.stderr
        assert took < 1.0
        assert door.status("Threads") - threads <= 4    # an idle connection costs no thread
        # Those over the cap were closed, oldest first; the newest still wait.
        closed = [answer(sock, 0.01) for sock in flood]
        section = "imaging_source" if door.ae_title == "XDSI_SOURCE" else "consumer"
        held = config.DEFAULTS[section]["dicom_max_connections"]
        assert closed.count("nothing") <= held and closed[-1] == "nothing"
    finally:
        for sock in flood:
            sock.close()


@pytest.fixture(scope="module")
def small_consumer(new_database, tmp_path_factory):
    door = start_consumer(new_database(), tmp_path_factory.mktemp("small"), dicom_max_associations=2,
                          dicom_max_connections=3)
    yield door
    door.stop()


def _idle_gives_way(door: Door) -> bool:
    """With two associations held, an idle connection makes the cap of three; does a fourth one
    take its place (the idle one closed, the newer one kept)?"""
    with socket.create_connection(door.address) as idle:
        time.sleep(0.05)                                # admitted before the newer one comes
        with socket.create_connection(door.address) as newer:
            return answer(idle, 2) == "closed" and answer(newer, 0.2) == "nothing"


def test_an_association_over_the_cap_is_rejected_and_an_idle_connection_gives_way(small_consumer):
    held = [associate(small_consumer) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        over = associate(small_consumer)
        assert over.is_rejected
        rejection = over.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
        # (the rejected association holds its connection until its peer has closed it)
        assert wait_for(lambda: _idle_gives_way(small_consumer), 10)
        assert all(a.is_established for a in held)     # the associations were left alone
    finally:
        for a in held:
            a.release()
    assert echo(small_consumer)[0].returncode == 0


def test_when_every_connection_is_associated_a_new_one_is_closed_at_once():
    """In process: a listener of two connections, both associated."""
    ae = AE("CAPPED")
    ae.add_supported_context(Verification)
    limits = dataclasses.replace(DEFAULT, max_associations=2, max_connections=2)
    server = dicom_listener.start_server(ae, ("127.0.0.1", 0), [], limits)
    door = Door(None, server.server_address[1], "CAPPED", Path())
    try:
        held = [associate(door) for _ in range(2)]
        assert all(a.is_established for a in held)
        with socket.create_connection(door.address) as third:
            assert answer(third, 5) == "closed"
        assert all(a.is_established for a in held) and held[0].send_c_echo().Status == 0x0000
        for a in held:
            a.release()
    finally:
        server.shutdown()


# ------------------------------------------------------------ identifiers never become paths

def _ct(sop_instance: str) -> tuple[bytes, str]:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = sop_instance
    return encode(ds, False, True, False), ds.SOPClassUID       # explicit VR little endian


REFUSED, ABORTED = "refused", "aborted"


@pytest.mark.parametrize("command_uid,dataset_uid,outcome", [
    ("{path}", "{path}", REFUSED),                 # the C-STORE: both say the path
    ("{path}", "1.2.3.4", REFUSED),                # the command alone
    ("1.2.3.{n}", "{path}", REFUSED),              # the dataset alone
    ("1.2.03.4", "1.2.03.4", REFUSED),             # digits and dots, but a leading zero
    ("1.2.3.{n}", "1." + "2" * 70, REFUSED),       # longer than 64 characters
    ("1." + "2" * 70, "1.2.3.4", ABORTED)])        # a command set pynetdicom cannot read: A-ABORT
def test_a_c_store_whose_sop_instance_uid_is_not_a_uid_is_refused_and_writes_nothing(consumer, command_uid,
                                                                                       dataset_uid, outcome):
    target = f"xdsi-hostile-{uuid.uuid4().hex[:8]}"
    incoming = consumer.data_dir / "consumer" / "incoming"
    path = "../" * (len(incoming.parts) - 1) + f"tmp/{target}"     # from the C-MOVE destination's spool to /tmp
    assert len(path) <= 64
    n = uuid.uuid4().int
    command_uid, dataset_uid = (u.format(path=path, n=n) for u in (command_uid, dataset_uid))
    encoded, sop_class = _ct(dataset_uid)
    before = sorted(consumer.data_dir.rglob("*"))
    assoc = associate(consumer)
    try:
        status = assoc.send_c_store(EncodedInstance(encoded, sop_class, command_uid, "1.2.840.10008.1.2.1"))
        if outcome == REFUSED:
            assert status.Status == dicom_status.INVALID_SOP_INSTANCE
        else:
            assert "Status" not in status and wait_for(lambda: not assoc.is_established, 5)   # no answer: it ended
        assert not list(Path("/tmp").glob(f"{target}*"))
        assert sorted(consumer.data_dir.rglob("*")) == before
    finally:
        assoc.release()
        for p in Path("/tmp").glob(f"{target}*"):
            p.unlink()


def test_a_c_store_of_a_valid_instance_is_kept_under_a_name_of_ours(consumer):
    uid = f"2.25.{uuid.uuid4().int}"
    encoded, sop_class = _ct(uid)
    assoc = associate(consumer)
    try:
        status = assoc.send_c_store(EncodedInstance(encoded, sop_class, uid, "1.2.840.10008.1.2.1"))
    finally:
        assoc.release()
    assert status.Status == 0x0000
    [kept] = [p for p in consumer.data_dir.rglob("*.dcm") if dcmread(p).SOPInstanceUID == uid]
    assert uid not in str(kept)


@pytest.mark.parametrize("command_uid,dataset_uid,study_uid,status", [
    ("../../../tmp/x{n}", "../../../tmp/x{n}", None, dicom_status.INVALID_SOP_INSTANCE),
    ("../../../tmp/x{n}", "1.2.3.{n}", None, dicom_status.INVALID_SOP_INSTANCE),
    ("1.2.3.{n}", "1.2.03.{n}", None, dicom_status.INVALID_SOP_INSTANCE),
    ("1.2.3.{n}", "1.2.3.{n}", "../../../tmp/study", dicom_status.CANNOT_UNDERSTAND)])
def test_the_imaging_source_refuses_a_c_store_whose_uids_are_not_uids_and_keeps_nothing(
        source, command_uid, dataset_uid, study_uid, status):
    n = uuid.uuid4().int % 10**20
    command_uid, dataset_uid = (u.format(n=n) for u in (command_uid, dataset_uid))
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = dataset_uid
    if study_uid:
        ds.StudyInstanceUID = study_uid
    before = sorted(source.data_dir.rglob("*"))
    assoc = associate(source)
    try:
        answer = assoc.send_c_store(EncodedInstance(encode(ds, False, True, False), ds.SOPClassUID, command_uid,
                                                    "1.2.840.10008.1.2.1"))
    finally:
        assoc.release()
    assert answer.Status == status
    assert [p for p in sorted(source.data_dir.rglob("*")) if p not in before and p.suffix != ".log"
            and "run" not in p.parts] == []
