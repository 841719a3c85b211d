"""pynetdicom tuned for throughput: what ``install()`` changes, process-wide, in pynetdicom 3.0.

pynetdicom runs two threads per association, both polling: the association's reactor sleeps 1 ms
between looks at its DIMSE queue (and every ``send_*`` waits for it to pause), and the DUL thread
sleeps between looks at its socket and its queue of primitives to send. It queues one primitive
per PDU, reads PDUs 4 KB per call, and builds each command set as a pydicom dataset. Each of these
costs little; per C-STORE of a CT they added up to several times DCMTK's whole time.

- The reactor waits on the DIMSE queue's condition and is woken at once by a pause request; per
  turn it still serves a complete message, answers a release, notices an abort, a dead DUL or an
  idle timeout.
- The DUL thread waits in ``select`` on its socket and a wake-up socket pair that ``send_pdu``
  writes to (``DUL_TICK`` bounds the wait, for its timers), instead of sleeping.
- A DIMSE message goes to the DUL as runs of P-DATA-TF PDUs framed here (the same fragmentation and
  bytes as pynetdicom's, tested) and is written with one ``send`` per run.
- PDUs are read into one buffer (``recv_into``) instead of 4 KB at a time, once their length is
  known to be one we accept (``dicom_limits.read_pdu_data``: memory bounded by our maximum PDU).
- C-STORE requests of bytes already encoded, plain C-STORE responses and pending C-MOVE/C-GET
  responses get their command sets built directly (byte-identical to pynetdicom's, tested), and a
  received C-STORE response is read with ``struct`` (these skip pynetdicom's EVT_DIMSE_SENT and
  EVT_DIMSE_RECV, which nothing here binds).
- A C-MOVE/C-GET handler may yield a ``StoredInstance`` (a stored Part-10 file) and ``send_c_store``
  takes an ``EncodedInstance`` (a dataset encoded in memory): each is sent as its bytes when the peer
  accepted its transfer syntax, and decoded for pynetdicom to convert only when not.

``TUNED`` sets TCP_NODELAY on every association (without it each small PDU waits for the peer's
delayed ACK). ``received_part10(event)`` gives a received C-STORE as a Part-10 file without pydicom building
its meta. ``install()`` leaves any other pynetdicom version alone (its polling then stays).
"""
from __future__ import annotations

import logging
import queue
import select
import socket
import struct
import threading
import time
from io import BytesIO
from pathlib import Path

import pynetdicom
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider
from pynetdicom.dimse_messages import encode as encode_dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE, N_ACTION
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import dicom_limits, part10

log = logging.getLogger("xdsi.dicom")

IDLE_TICK = 0.001          # how often an idle association looks at release, abort and timers
DUL_TICK = 0.01            # longest a DUL thread waits for its socket or a primitive (timers, kill)
# ... while its connection has not asked for an association: only the ARTIM timer (seconds) is due,
# and a flood of such connections must not keep the process busy.
AWAITING_REQUEST_TICK = 0.25


def nodelay(assoc) -> None:
    """Without TCP_NODELAY every small PDU waits for the peer's delayed ACK (~40 ms on Linux)."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# For evt_handlers (start_server, associate, a C-MOVE destination): tune each association as it opens.
TUNED = [(evt.EVT_CONN_OPEN, lambda event: nodelay(event.assoc))]


class _Checkpoint(threading.Event):
    """The reactor's pause gate; clearing it (a ``send_*`` wants the association) also wakes a
    reactor that is waiting for a message, so the pause is taken at once."""

    def __init__(self, wake: threading.Condition):
        super().__init__()
        self._wake = wake
        self.set()

    def clear(self) -> None:
        super().clear()
        with self._wake:
            self._wake.notify_all()


def _wait_for_message(assoc) -> None:
    arrived = assoc.dimse.msg_queue.not_empty
    with arrived:
        if not assoc.dimse.msg_queue.queue and assoc._reactor_checkpoint.is_set():
            arrived.wait(IDLE_TICK)


def _reactor(self) -> None:
    """Serve DIMSE requests as they complete; end the association on release, abort or timeout."""
    while not self._kill:
        self._is_paused = True
        self._paused.set()
        self._reactor_checkpoint.wait()          # held while a send_* call owns the association
        self._is_paused = False
        self._paused.clear()

        _wait_for_message(self)
        if not self._reactor_checkpoint.is_set():
            continue                             # a send_* call wants the next message: leave it
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            refused = getattr(self, "xdsi_refuse", None)          # access control (DicomDoor.admit)
            status = refused(msg) if refused is not None else None
            if status is None:
                self._serve_request(msg, context_id)
            else:
                self.dimse.send_msg(refused_response(msg, status), context_id)

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released, self.is_established = True, False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)     # lets EVT_ACSE_RECV subscribers see the abort
            self.is_aborted, self.is_established = True, False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return
        if not self.dul.is_alive():
            self.kill()
            return
        if self.dul.idle_timer_expired():
            log.warning("DICOM network timeout", extra={"peer": self.requestor.ae_title})
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def refused_response(request, status: int):
    """The response to a DIMSE request refused before any handler ran (a peer without the role):
    the request's own kind, with ``status`` and nothing else."""
    rsp = type(request)()
    rsp.MessageIDBeingRespondedTo = request.MessageID
    if isinstance(request, N_ACTION):
        rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = request.RequestedSOPClassUID, \
            request.RequestedSOPInstanceUID
        rsp.ActionTypeID = request.ActionTypeID
    else:
        rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
        if isinstance(request, C_STORE):
            rsp.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    rsp.Status = status
    return rsp


# ------------------------------------------------------------ sending P-DATA in runs

RUN_BYTES = 4 << 20        # framed bytes handed to the DUL at a time (bounds memory for big files)
_PDV_HEADER = struct.Struct(">BBIIBB")   # PDU type, reserved, PDU length, PDV length, context, control
COMMAND, LAST = 0x01, 0x02               # message control header bits (PS3.8 E.2)


class PduRun(P_DATA):
    """A P-DATA request already framed as consecutive P-DATA-TF PDUs."""

    def __init__(self, wire: bytes):
        super().__init__()
        self.wire = wire


def _split(data, size: int):
    view = memoryview(data)
    if not size:
        yield view
        return
    for start in range(0, len(view), size):
        yield view[start:start + size]


def _message_chunks(message, size: int):
    """A pynetdicom DIMSE message's dataset: from memory, or read from its file in whole fragments."""
    if message.data_set is not None:
        data = message.data_set.getvalue()
        if data:
            yield data
    elif message._data_set_path is not None:
        yield from _file_chunks(*message._data_set_path, size)


def _file_chunks(path, offset: int, size: int):
    step = size * max(RUN_BYTES // size, 1) if size else -1     # -1: the whole file at once
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(step):
            yield chunk


def message_fragments(command: bytes, dataset_chunks, size: int):
    """(control header, data) of each PDV of a DIMSE message, fragments at most ``size`` bytes
    (0: unlimited): the command set, then the dataset; the last of each carries the LAST bit."""
    *body, last = _split(command, size)
    for fragment in body:
        yield COMMAND, fragment
    yield COMMAND | LAST, last
    held = None
    for chunk in dataset_chunks:
        for fragment in _split(chunk, size):
            if held is not None:
                yield 0x00, held
            held = fragment
    if held is not None:
        yield LAST, held


def wire_runs(command: bytes, dataset_chunks, context_id: int, max_pdu: int):
    """A DIMSE message (its encoded command set, then its dataset in chunks that are whole
    fragments) as P-DATA-TF PDUs of one PDV each, as pynetdicom fragments it, joined into runs of
    about RUN_BYTES."""
    parts, length = [], 0
    for control, data in message_fragments(command, dataset_chunks, max_pdu - 6 if max_pdu else 0):
        n = len(data)
        parts += (_PDV_HEADER.pack(0x04, 0, n + 6, n + 2, context_id, control), data)
        length += n + 12
        if length >= RUN_BYTES:
            yield b"".join(parts)
            parts, length = [], 0
    if parts:
        yield b"".join(parts)


def _send_msg(self: DIMSEServiceProvider, primitive, context_id: int) -> None:
    """pynetdicom's send_msg, with the P-DATA queued in runs instead of one PDU at a time, and the
    responses sent once per instance (``response_command``) encoded without building a dataset."""
    command = response_command(primitive)
    if command is not None:
        for run in wire_runs(command, (), context_id, self.maximum_pdu_size):
            self.dul.send_pdu(PduRun(run))
        return
    if primitive.MessageIDBeingRespondedTo is None:
        message = _RQ_TO_MESSAGE[primitive.__class__]()
    else:
        message = _RSP_TO_MESSAGE[primitive.__class__]()
    message.primitive_to_message(primitive)
    message.context_id = context_id
    evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
    size = self.maximum_pdu_size - 6 if self.maximum_pdu_size else 0
    command = encode_dataset(message.command_set, True, True)
    for run in wire_runs(command, _message_chunks(message, size), context_id, self.maximum_pdu_size):
        self.dul.send_pdu(PduRun(run))


# ------------------------------------------------------------ C-STORE of bytes already encoded

def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


_US = struct.Struct("<H").pack


def _command(body: bytes) -> bytes:
    """A command set: its group length, then its elements (PS3.7 6.3.1)."""
    return _element(0x0000, struct.pack("<I", len(body))) + body


def c_store_command(message_id: int, sop_class: str, sop_instance: str, priority: int = 2,
                    originator_aet: str | None = None, originator_id: int | None = None) -> bytes:
    """A C-STORE-RQ command set with a dataset, implicit VR little endian (PS3.7 9.3.1.1), as
    pynetdicom encodes it."""
    body = (_element(0x0002, _text(sop_class, b"\0")) + _element(0x0100, _US(0x0001)) +
            _element(0x0110, _US(message_id)) + _element(0x0700, _US(priority)) +
            _element(0x0800, _US(0x0001)) + _element(0x1000, _text(sop_instance, b"\0")))
    if originator_aet:
        body += _element(0x1030, _text(originator_aet, b" "))
    if originator_id is not None:
        body += _element(0x1031, _US(originator_id))
    return _command(body)


def c_store_response_command(rsp) -> bytes | None:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2) as pynetdicom encodes it, or None for a request or
    a response carrying elements other than an error comment."""
    if rsp.MessageIDBeingRespondedTo is None or rsp.OffendingElement or not rsp.AffectedSOPClassUID \
            or not rsp.AffectedSOPInstanceUID or rsp.Status is None:
        return None
    body = (_element(0x0002, _text(rsp.AffectedSOPClassUID, b"\0")) + _element(0x0100, _US(0x8001)) +
            _element(0x0120, _US(rsp.MessageIDBeingRespondedTo)) + _element(0x0800, _US(0x0101)) +
            _element(0x0900, _US(rsp.Status)))
    if rsp.ErrorComment:
        body += _element(0x0902, _text(rsp.ErrorComment, b" "))
    return _command(body + _element(0x1000, _text(rsp.AffectedSOPInstanceUID, b"\0")))


_RETRIEVE_RESPONSE_FIELD = {C_MOVE: 0x8021, C_GET: 0x8010}


def retrieve_response_command(rsp) -> bytes | None:
    """A C-MOVE-RSP or C-GET-RSP command set without an identifier (the pending responses sent
    after each sub-operation; PS3.7 9.3.4.2, 9.3.3.2) as pynetdicom encodes it, else None."""
    counts = (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations,
              rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations)
    if rsp.MessageIDBeingRespondedTo is None or rsp.Identifier is not None or None in counts \
            or getattr(rsp, "ErrorComment", None) or getattr(rsp, "OffendingElement", None) \
            or not rsp.AffectedSOPClassUID or rsp.Status is None:
        return None
    return _command(_element(0x0002, _text(rsp.AffectedSOPClassUID, b"\0")) +
                    _element(0x0100, _US(_RETRIEVE_RESPONSE_FIELD[type(rsp)])) +
                    _element(0x0120, _US(rsp.MessageIDBeingRespondedTo)) + _element(0x0800, _US(0x0101)) +
                    _element(0x0900, _US(rsp.Status)) +
                    b"".join(_element(0x1020 + i, _US(n)) for i, n in enumerate(counts)))


def response_command(primitive) -> bytes | None:
    """The command set of a response sent once per instance (C-STORE, and C-MOVE/C-GET pending),
    encoded directly; None for any other message, which pynetdicom encodes."""
    if isinstance(primitive, C_STORE):
        return c_store_response_command(primitive)
    if isinstance(primitive, (C_MOVE, C_GET)):
        return retrieve_response_command(primitive)
    return None


_C_STORE_RSP_ELEMENTS = {0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x0902, 0x1000}


def c_store_response(command: bytes) -> C_STORE | None:
    """The C-STORE response a command set encodes (implicit VR little endian), read with struct;
    None for any other command, or a response with elements beyond the usual ones (pynetdicom
    then decodes it)."""
    values, at = {}, 0
    try:
        while at < len(command):
            group, element, length = struct.unpack_from("<HHI", command, at)
            if group != 0x0000 or element not in _C_STORE_RSP_ELEMENTS:
                return None
            values[element] = command[at + 8:at + 8 + length]
            at += 8 + length
    except struct.error:
        return None
    if at != len(command) or values.get(0x0100) != b"\x01\x80" or values.get(0x0800) != b"\x01\x01" \
            or len(values.get(0x0120, b"")) != 2 or len(values.get(0x0900, b"")) != 2:
        return None
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = struct.unpack("<H", values[0x0120])[0]
    rsp.Status = struct.unpack("<H", values[0x0900])[0]
    try:        # a UID that is not ASCII: pynetdicom's decode judges it
        for element, name in ((0x0002, "AffectedSOPClassUID"), (0x1000, "AffectedSOPInstanceUID")):
            if element in values:
                setattr(rsp, name, values[element].rstrip(b"\0 ").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if 0x0902 in values:
        rsp.ErrorComment = values[0x0902].rstrip(b"\0 ").decode("ascii", "replace")
    return rsp


def _receive_primitive(original):
    """DIMSE receive that reads a C-STORE response (one fragment, no dataset: what a storage SCP
    sends per instance) with ``c_store_response``, and hands pynetdicom everything else."""
    def receive_primitive(self, primitive) -> None:
        pdvs = primitive.presentation_data_value_list
        if self.message is None and len(pdvs) == 1 and pdvs[0][1][:1] == b"\x03":
            rsp = c_store_response(pdvs[0][1][1:])
            if rsp is not None:
                self.msg_queue.put((pdvs[0][0], rsp))
                return
        original(self, primitive)
    return receive_primitive


def _meta_element(group_element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, group_element, vr, len(value)) + value


def received_part10(event) -> bytes:
    """A received C-STORE dataset as a Part-10 file: preamble, the file meta pynetdicom's
    ``Event.encoded_dataset()`` writes (same bytes), then the dataset as received; without building
    the meta as a pydicom dataset."""
    request = event.request
    syntax = event.context.transfer_syntax
    meta = (struct.pack("<HH2s2xI", 0x0002, 0x0001, b"OB", 2) + b"\x00\x01" +      # meta version 1
            _meta_element(0x0002, b"UI", _text(request.AffectedSOPClassUID, b"\0")) +
            _meta_element(0x0003, b"UI", _text(request.AffectedSOPInstanceUID, b"\0")) +
            _meta_element(0x0010, b"UI", _text(syntax, b"\0")) +
            _meta_element(0x0012, b"UI", _text(pynetdicom.PYNETDICOM_IMPLEMENTATION_UID, b"\0")) +
            _meta_element(0x0013, b"SH", _text(pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION, b" ")))
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(meta)))  # meta's own form: explicit VR
    return b"".join((b"\0" * 128, b"DICM", group_length, meta, request.DataSet.getvalue()))


def _store_encoded(assoc, context, sop_class: str, sop_instance: str, chunks, msg_id: int,
                   priority: int, originator_aet, originator_id) -> Dataset:
    """Send one C-STORE whose dataset is already encoded in the context's transfer syntax, and
    wait for its response; pynetdicom's send_c_store without building a dataset for the command."""
    aet = originator_aet.decode() if isinstance(originator_aet, bytes) else originator_aet
    command = c_store_command(msg_id, sop_class, sop_instance, priority, aet, originator_id)
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:      # set by the reactor when held, or while it runs an SCP handler
        if not assoc._paused.wait(0.5) and not assoc.is_established:
            break
    try:
        for run in wire_runs(command, chunks, context.context_id, assoc.dimse.maximum_pdu_size):
            assoc.dul.send_pdu(PduRun(run))
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)


def _from_primitive(original):
    def from_primitive(self, primitive):
        self.wire = getattr(primitive, "wire", None)
        if self.wire is None:
            original(self, primitive)
    return from_primitive


def _encode(original):
    def encode(self):
        wire = getattr(self, "wire", None)
        return memoryview(wire) if wire is not None else original(self)   # a view: partial sends copy nothing
    return encode


# ------------------------------------------------------------ a DUL thread that waits

def _dul_wait(dul) -> None:
    """Sleep until the peer sent something, a primitive was queued, or DUL_TICK passed; pynetdicom
    sleeps a fixed 1 ms instead, and a shorter fixed sleep costs every other thread GIL turns."""
    if dul.event_queue.queue or dul.to_provider_queue.queue or dul._kill_thread:
        return
    wake = dul._wake[0]
    watched = [wake]
    transport = dul.socket
    sock = transport.socket if transport is not None and transport._is_connected else None
    if sock is not None:
        if getattr(sock, "pending", None) and sock.pending():      # TLS bytes already decrypted
            return
        watched.append(sock)
    try:
        tick = AWAITING_REQUEST_TICK if dicom_limits.awaiting_request(dul) else DUL_TICK
        ready, _, _ = select.select(watched, [], [], tick)
    except (OSError, ValueError):
        return                      # a closed socket: the loop's own check reports it
    if wake in ready:
        try:
            wake.recv(4096)
        except BlockingIOError:
            pass


def _dul_reactor(self) -> None:
    """pynetdicom's DUL loop, waiting in ``_dul_wait`` instead of sleeping: per turn, the ARTIM
    timer, then either a queued primitive or incoming data, then one state machine event."""
    try:
        _dul_loop(self)
    finally:
        for end in self._wake:
            end.close()


def _dul_loop(self) -> None:
    self._idle_timer.start()
    idle = False
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
            idle = True
        if idle:
            _dul_wait(self)
        if self._kill_thread:
            break
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        try:
            if self._process_recv_primitive():
                pass
            elif self._is_transport_event():
                self._idle_timer.restart()
        except Exception:
            log.exception("DUL failed, aborting the association")
            abort = A_ABORT_RQ()
            abort.source, abort.reason_diagnostic = 0x02, 0x00
            self.socket.send(abort.encode())
            self.assoc.is_aborted, self.assoc.is_established = True, False
            self.assoc._kill = self._kill_thread = True
            return
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        self.state_machine.do_action(event)
        idle = False


def _stop_dul(self) -> bool:
    """pynetdicom's stop_dul, waking the DUL thread so that it sees it must stop at once."""
    if self.state_machine.current_state != "Sta1":
        return False
    self._kill_thread = True
    _wake_dul(self)
    while self.is_alive():
        time.sleep(self._run_loop_delay)
    return True


def _wake_dul(dul) -> None:
    try:
        dul._wake[1].send(b"\0")
    except (BlockingIOError, OSError):
        pass                        # already signalled, or closing


def _with_wake(method):
    def wrapped(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        _wake_dul(self)
        return result
    return wrapped


class StoredInstance(Dataset):
    """A stored Part-10 file, known by its index entry, to yield from a C-MOVE/C-GET handler."""

    def __init__(self, path: Path, sop_class: str, sop_instance: str, transfer_syntax: str):
        super().__init__()
        # pynetdicom names a failed sub-operation by these.
        self.SOPClassUID, self.SOPInstanceUID = sop_class, sop_instance
        self.stored_path, self.transfer_syntax = path, transfer_syntax

    def decoded(self) -> Dataset:
        return dcmread(self.stored_path)

    def chunks(self, max_pdu: int):
        """The file's dataset in whole fragments, or None when its meta has no group length (then
        pynetdicom finds where the dataset starts)."""
        with open(self.stored_path, "rb") as f:
            offset = part10.dataset_offset(f.read(256))
        size = max_pdu - 6 if max_pdu else 0
        return None if offset is None else _file_chunks(self.stored_path, offset, size)


class EncodedInstance:
    """A dataset already encoded (no preamble or meta), to give ``send_c_store``. Not a pydicom
    Dataset: setting a Dataset's UIDs validates them, a cost per instance sent for nothing."""

    def __init__(self, encoded: bytes, sop_class: str, sop_instance: str, transfer_syntax: str):
        self.encoded, self.transfer_syntax = encoded, transfer_syntax
        self.SOPClassUID, self.SOPInstanceUID = sop_class, sop_instance

    def chunks(self, max_pdu: int):
        return [self.encoded]

    def decoded(self) -> Dataset:
        syntax = UID(self.transfer_syntax)
        ds = read_dataset(BytesIO(self.encoded), syntax.is_implicit_VR, syntax.is_little_endian)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        return ds


def _send_stored(original):
    """send_c_store that sends a StoredInstance or an EncodedInstance as its bytes when the peer
    accepted their transfer syntax, and has pynetdicom convert a decoded copy when not."""
    def send_c_store(self, dataset, msg_id=1, priority=2, originator_aet=None, originator_id=None):
        if not isinstance(dataset, (StoredInstance, EncodedInstance)) or not self.is_established:
            return original(self, dataset, msg_id, priority, originator_aet, originator_id)
        try:
            context = self._get_valid_context(dataset.SOPClassUID, dataset.transfer_syntax, "scu",
                                              allow_conversion=False)
        except ValueError:
            return original(self, dataset.decoded(), msg_id, priority, originator_aet, originator_id)
        chunks = dataset.chunks(self.dimse.maximum_pdu_size)
        if chunks is None:
            return original(self, dataset.stored_path, msg_id, priority, originator_aet, originator_id)
        return _store_encoded(self, context, dataset.SOPClassUID, dataset.SOPInstanceUID, chunks,
                              msg_id, priority, originator_aet, originator_id)
    return send_c_store


_SUPPORTED = ("3.0.",)
_installed = False


def install() -> bool:
    """Swap in the waiting reactor (once, process-wide); False when this pynetdicom is not one it
    was written for, in which case pynetdicom's own polling reactor stays."""
    global _installed
    if _installed:
        return True
    if not pynetdicom.__version__.startswith(_SUPPORTED):
        log.warning("pynetdicom %s: keeping its polling reactor", pynetdicom.__version__)
        return False
    original_init = Association.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._reactor_checkpoint = _Checkpoint(self.dimse.msg_queue.not_empty)
        self._paused = threading.Event()         # set while the reactor is held: a send may go

    Association.__init__ = __init__
    original_dul_init = DULServiceProvider.__init__

    def dul_init(self, *args, **kwargs):
        original_dul_init(self, *args, **kwargs)
        self._wake = socket.socketpair()
        for end in self._wake:
            end.setblocking(False)

    DULServiceProvider.__init__ = dul_init
    DULServiceProvider.run_reactor = _dul_reactor
    DULServiceProvider._read_pdu_data = dicom_limits.read_pdu_data
    DULServiceProvider.send_pdu = _with_wake(DULServiceProvider.send_pdu)
    DULServiceProvider.kill_dul = _with_wake(DULServiceProvider.kill_dul)
    DULServiceProvider.stop_dul = _stop_dul
    Association._run_reactor = _reactor
    Association.send_c_store = _send_stored(Association.send_c_store)
    DIMSEServiceProvider.send_msg = _send_msg
    DIMSEServiceProvider.receive_primitive = _receive_primitive(DIMSEServiceProvider.receive_primitive)
    P_DATA_TF.from_primitive = _from_primitive(P_DATA_TF.from_primitive)
    P_DATA_TF.encode = _encode(P_DATA_TF.encode)
    _config.STORE_SEND_CHUNKED_DATASET = True      # a file path given to send_c_store is streamed
    _installed = True
    return True
