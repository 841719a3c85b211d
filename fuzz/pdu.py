"""The received-PDU path of our DUL (``affinity_domain.dicom_net`` on pynetdicom): a PDU's bytes
decoded as the DUL decodes them, made a primitive as the state machine does, and a P-DATA's values
read as our DIMSE receive reads them (``c_store_response``, then pynetdicom's message assembly).

Documented errors: any exception from ``PDU.decode`` (the DUL answers it with Evt19, an A-ABORT);
an exception from pynetdicom's ``to_primitive`` or DIMSE message assembly (its state machine catches
an action's error and ends the association: values no standard allows, such as an A-ABORT source
of 0x55). Anything raised by our own code on this path (``c_store_response``) is a crash, as is a
hang or memory past the bound, wherever it happens."""
from __future__ import annotations

from fuzz.harness import instrumented, main

with instrumented("pynetdicom.pdu", "pynetdicom.pdu_items", "pynetdicom.dimse_messages",
                  "affinity_domain.dicom_net"):
    from pynetdicom import dimse_messages, dul
    from pynetdicom.pdu_primitives import P_DATA

    from affinity_domain import dicom_net

dicom_net.install()


def test_one_input(data: bytes) -> None:
    kind = dul._PDU_TYPES.get(data[:1])
    if kind is None or len(data) < 6:
        return                       # the DUL refuses these from the header alone (Evt19/Evt17)
    pdu = kind[0]()
    try:
        pdu.decode(data)
    except Exception:                # READ_PDU_EXC_F: Evt19
        return
    try:
        primitive = pdu.to_primitive()
    except Exception:                # the state machine ends the association
        return
    if isinstance(primitive, P_DATA):
        for _, value in primitive.presentation_data_value_list:
            if value[:1] == b"\x03":
                dicom_net.c_store_response(bytes(value[1:]))
        message = dimse_messages.DIMSEMessage()
        try:
            if message.decode_msg(primitive):
                message.message_to_primitive()
        except Exception:            # the state machine (decode_msg) or DIMSE (Evt19) ends the association
            pass


def seeds() -> list[bytes]:
    """The PDUs of a real association (pynetdicom SCU to SCP on loopback: A-ASSOCIATE-RQ/AC, a
    C-ECHO, a C-STORE of a pydicom test file, A-RELEASE), and our own C-STORE framing."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pynetdicom import AE, evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.sop_class import CTImageStorage, Verification

    seen: list[bytes] = []
    handlers = [(evt.EVT_DATA_RECV, lambda event: seen.append(bytes(event.data)[:16384]))]
    scp = AE("FUZZ_SCP")
    scp.add_supported_context(Verification)
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers + [
        (evt.EVT_C_STORE, lambda event: 0x0000)])
    try:
        scu = AE("FUZZ_SCU")
        scu.add_requested_context(Verification)
        scu.add_requested_context(CTImageStorage)
        assoc = scu.associate("127.0.0.1", server.server_address[1], evt_handlers=handlers)
        if assoc.is_established:
            assoc.send_c_echo()
            path = get_testdata_file("CT_small.dcm", download=False)
            if path:
                assoc.send_c_store(dcmread(path))
            assoc.release()
    finally:
        server.shutdown()
    command = dicom_net.c_store_command(7, CTImageStorage, "1.2.3.4", 2, "FUZZ_SCU", 3)
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status, rsp.ErrorComment = 7, 0xB000, "coerced"
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4"
    own = [b"".join(dicom_net.wire_runs(command, [b"\x08\x00\x18\x00\x02\x00\x00\x001\x00"], 1, 16384)),
           b"".join(dicom_net.wire_runs(dicom_net.c_store_response_command(rsp), [], 1, 16384))]
    rejected = bytes.fromhex("0300000000040001 0101".replace(" ", ""))
    aborted = bytes.fromhex("07000000000400000000")
    return seen + own + [rejected, aborted]


if __name__ == "__main__":
    main("pdu", test_one_input, seeds, max_len=16384)
