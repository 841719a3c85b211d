"""The pynetdicom tuning: the waiting reactor is installed, and a pause request wakes it."""
from __future__ import annotations

import threading
from io import BytesIO
from pathlib import Path

import pytest

from pynetdicom.association import Association

from affinity_domain import dicom_net, part10


def test_the_waiting_reactor_is_installed():
    assert dicom_net.install() is True
    assert Association._run_reactor is dicom_net._reactor


def test_clearing_the_checkpoint_wakes_a_waiting_reactor():
    arrived = threading.Condition()
    checkpoint = dicom_net._Checkpoint(arrived)
    assert checkpoint.is_set()
    woke = threading.Event()

    def reactor_waiting():
        with arrived:
            arrived.wait(60)            # as long as a quiet association could wait
        woke.set()

    waiter = threading.Thread(target=reactor_waiting, daemon=True)
    waiter.start()
    while not arrived._waiters:         # until it is inside wait()
        threading.Event().wait(0.001)
    checkpoint.clear()
    assert woke.wait(10) and not checkpoint.is_set()


def test_an_encoded_instance_decodes_to_its_dataset():
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pynetdicom.dsutils import encode

    ds = dcmread(get_testdata_file("CT_small.dcm"))          # explicit VR little endian
    explicit = encode(ds, False, True, False)
    instance = dicom_net.EncodedInstance(explicit, ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1")
    assert instance.chunks(16384) == [explicit]
    decoded = instance.decoded()                             # for a peer that took implicit VR only
    assert encode(decoded, True, True, False) == encode(ds, True, True, False)


@pytest.mark.parametrize("originator", [(None, None), ("MOVESCU", 3), ("ODD", 65535)])
def test_the_c_store_command_is_the_one_pynetdicom_encodes(originator):
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    for sop_class, sop_instance in [("1.2.840.10008.5.1.4.1.1.2", "1.2.3"),
                                    ("1.2.840.10008.5.1.4.1.1.88.59", "1.2.34")]:
        primitive = C_STORE()
        primitive.MessageID, primitive.Priority = 7, 0
        primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = sop_class, sop_instance
        primitive.MoveOriginatorApplicationEntityTitle, primitive.MoveOriginatorMessageID = originator
        primitive.DataSet = BytesIO(b"ds")
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        ours = dicom_net.c_store_command(7, sop_class, sop_instance, 0, *originator)
        assert ours == encode(message.command_set, True, True)


def _c_store_message(dataset_bytes: bytes | None = None, path=None, offset=132,
                     sop_class="1.2.840.10008.5.1.4.1.1.2", sop_instance="1.2.3.4"):
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 2
    if path is not None:
        primitive._dataset_path = (path, offset)
    else:
        primitive.DataSet = BytesIO(dataset_bytes)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return message


def _pynetdicom_wire(message, context_id, max_pdu) -> bytes:
    """What pynetdicom itself would put on the wire: one P-DATA-TF PDU per fragment."""
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.pdu import P_DATA_TF

    return b"".join(_unpatched_encode(P_DATA_TF(p)) for p in DIMSEMessage.encode_msg(message, context_id, max_pdu))


def _our_wire(message, context_id, max_pdu) -> list[bytes]:
    from pynetdicom.dsutils import encode

    size = max_pdu - 6 if max_pdu else 0
    return list(dicom_net.wire_runs(encode(message.command_set, True, True),
                                    dicom_net._message_chunks(message, size), context_id, max_pdu))


def _unpatched_encode(pdu) -> bytes:
    from pynetdicom.pdu import PDU
    return PDU.encode(pdu)


@pytest.mark.parametrize("size,max_pdu", [(0, 16384), (1000, 16384), (16378, 16384), (16379, 16384),
                                          (100_000, 16384), (300_000, 0), (5_000_000, 16384)])
def test_runs_of_pdus_are_the_bytes_pynetdicom_would_send(size, max_pdu):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    message = _c_store_message(data)
    runs = _our_wire(message, 3, max_pdu)
    assert b"".join(runs) == _pynetdicom_wire(_c_store_message(data), 3, max_pdu)
    assert all(len(run) < dicom_net.RUN_BYTES + max(max_pdu, size) + 12 for run in runs)


@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_runs_of_pdus_from_a_file_are_the_bytes_pynetdicom_would_send(tmp_path, max_pdu):
    path = tmp_path / "instance.dcm"
    path.write_bytes(b"\0" * 132 + bytes(range(256)) * 20_000)      # 5 MB of dataset after a fake preamble
    ours = b"".join(_our_wire(_c_store_message(path=path), 1, max_pdu))
    assert ours == _pynetdicom_wire(_c_store_message(path=path), 1, max_pdu)


@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_a_stored_instance_is_framed_as_pynetdicom_frames_the_file(tmp_path, max_pdu):
    """The lean C-STORE path (our command set, the file's dataset read past its meta) puts the same
    bytes on the wire as pynetdicom's send_c_store given the file."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    ds = dcmread(source)
    instance = dicom_net.StoredInstance(Path(source), ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1")
    command = dicom_net.c_store_command(7, ds.SOPClassUID, ds.SOPInstanceUID, 2)
    ours = b"".join(dicom_net.wire_runs(command, instance.chunks(max_pdu), 1, max_pdu))
    offset = part10.dataset_offset(open(source, "rb").read(256))
    message = _c_store_message(path=Path(source), offset=offset, sop_class=ds.SOPClassUID,
                               sop_instance=ds.SOPInstanceUID)
    assert ours == _pynetdicom_wire(message, 1, max_pdu)


@pytest.mark.parametrize("status,comment", [(0x0000, None), (0xA900, "missing PatientID"), (0xC000, "odd")])
def test_the_c_store_response_is_the_one_pynetdicom_encodes(status, comment):
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.345"
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert dicom_net.c_store_response_command(rsp) == encode(message.command_set, True, True)


def test_a_received_instance_is_the_part10_file_pynetdicom_would_write():
    """Over a real association: what ``part10`` builds from a C-STORE is byte for byte what
    ``Event.encoded_dataset()`` returns, and the SCU gets the handler's status."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pynetdicom import AE, evt

    dicom_net.install()
    seen = []

    def on_store(event):
        seen.append((dicom_net.received_part10(event), event.encoded_dataset()))
        return 0xA900 if len(seen) == 2 else 0x0000

    scp = AE(ae_title="SCP")
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    scp.add_supported_context(ds.SOPClassUID, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store)] + dicom_net.TUNED)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(ds.SOPClassUID, "1.2.840.10008.1.2")
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP")
        assert assoc.is_established
        statuses = [assoc.send_c_store(ds).Status for _ in range(2)]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0x0000, 0xA900]
    assert len(seen) == 2 and all(ours == theirs for ours, theirs in seen)
    assert dcmread(BytesIO(seen[0][0])).SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("kind", ["C_MOVE", "C_GET"])
@pytest.mark.parametrize("counts", [(5, 1, 0, 0), (0, 480, 12, 8), (65535, 0, 0, 0)])
def test_a_pending_retrieve_response_is_the_one_pynetdicom_encodes(kind, counts):
    from pynetdicom import dimse_messages, dimse_primitives
    from pynetdicom.dsutils import encode

    rsp = getattr(dimse_primitives, kind)()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 3, 0xFF00
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations,
     rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations) = counts
    rsp.Identifier = None
    message = getattr(dimse_messages, f"{kind}_RSP")()
    message.primitive_to_message(rsp)
    assert dicom_net.response_command(rsp) == encode(message.command_set, True, True)
    rsp.Identifier = BytesIO(b"\x08\x00\x58\x11")      # a final response listing failed instances
    assert dicom_net.response_command(rsp) is None


@pytest.mark.parametrize("status,comment", [(0x0000, None), (0xB000, None), (0xA700, "store is full")])
def test_a_c_store_response_reads_as_pynetdicom_reads_it(status, comment):
    from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu_primitives import P_DATA

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 41, status
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45"
    if comment:
        rsp.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    command = encode(message.command_set, True, True)
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[1, b"\x03" + command]]
    theirs = DIMSEMessage()
    assert theirs.decode_msg(pdata)
    expected = theirs.message_to_primitive()
    ours = dicom_net.c_store_response(command)
    for name in ("MessageIDBeingRespondedTo", "Status", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                 "ErrorComment"):
        assert getattr(ours, name) == getattr(expected, name), name
    rq = dicom_net.c_store_command(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45")
    assert dicom_net.c_store_response(rq) is None                      # a request: pynetdicom's to read
    assert dicom_net.c_store_response(command[:-3]) is None            # cut short
