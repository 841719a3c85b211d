"""pynetdicom tuned for latency: TCP_NODELAY on every association, and a reactor that wakes when a
DIMSE message arrives instead of polling.

pynetdicom 3.0 runs one reactor thread per association that sleeps 1 ms between looks at its
DIMSE queue, and every ``send_*`` call first waits for that thread to reach its pause point. A
C-STORE therefore waits up to a millisecond for its request to be noticed, and a C-STORE sent as
an SCU up to a millisecond more before it leaves. Measured with an SCP whose handler does nothing
(pynetdicom spooling each dataset to a file): about 275 instances/s polling, 350/s waiting; DCMTK's
storescp took about 650/s in the same runs.

``install()`` replaces the reactor loop with one that waits on the DIMSE queue's condition and is
woken at once by a pause request. What it does per turn is unchanged: serve a complete message,
answer a release, notice an abort, a dead DUL or an idle timeout.

It also lets a C-MOVE/C-GET handler yield a ``StoredInstance`` instead of a decoded dataset:
pynetdicom's sub-operations insist on a ``Dataset`` and would encode it again, so a stored file
would be parsed and re-encoded for nothing. A ``StoredInstance`` is sent as the file's bytes when
the peer accepted its transfer syntax, and decoded (for pynetdicom to convert) only when not.
``send_c_store`` takes an ``EncodedInstance`` (a dataset already encoded, in memory) the same way.

``install()`` checks the pynetdicom version it was written against and leaves any other alone.
"""
from __future__ import annotations

import logging
import socket
import threading
from io import BytesIO
from pathlib import Path

import pynetdicom
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom import association as association_module
from pynetdicom.association import Association

log = logging.getLogger("xdsi.dicom")

IDLE_TICK = 0.001          # how often an idle association looks at release, abort and timers
DUL_POLL = 0.0001          # the DUL thread's sleep when its socket has nothing (1 ms by default)


def nodelay(assoc) -> None:
    """Without TCP_NODELAY every small PDU waits for the peer's delayed ACK (~40 ms on Linux)."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assoc.dul._run_loop_delay = DUL_POLL


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
        self._reactor_checkpoint.wait()          # held while a send_* call owns the association
        self._is_paused = False

        _wait_for_message(self)
        if not self._reactor_checkpoint.is_set():
            continue                             # a send_* call wants the next message: leave it
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, context_id)

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


class StoredInstance(Dataset):
    """A stored Part-10 file, known by its index entry, to yield from a C-MOVE/C-GET handler."""

    def __init__(self, path: Path, sop_class: str, sop_instance: str, transfer_syntax: str):
        super().__init__()
        # pynetdicom names a failed sub-operation by these.
        self.SOPClassUID, self.SOPInstanceUID = sop_class, sop_instance
        self.stored_path, self.stored_syntax = path, transfer_syntax


class EncodedInstance(Dataset):
    """A dataset already encoded (no preamble or meta), to give ``send_c_store``."""

    def __init__(self, encoded: bytes, sop_class: str, sop_instance: str, transfer_syntax: str):
        super().__init__()
        self.SOPClassUID, self.SOPInstanceUID = sop_class, sop_instance
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = transfer_syntax
        self.encoded = encoded

    def decoded(self) -> Dataset:
        syntax = UID(self.file_meta.TransferSyntaxUID)
        ds = read_dataset(BytesIO(self.encoded), syntax.is_implicit_VR, syntax.is_little_endian)
        ds.file_meta = self.file_meta
        return ds


def _encode_unless_encoded(encode):
    """pynetdicom's encode, except for an EncodedInstance asked for in its own encoding."""
    def encode_or_pass(ds, is_implicit_vr, is_little_endian, deflated=False):
        if isinstance(ds, EncodedInstance):
            syntax = UID(ds.file_meta.TransferSyntaxUID)
            if (syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated) == \
                    (is_implicit_vr, is_little_endian, deflated):
                return ds.encoded
            ds = ds.decoded()
        return encode(ds, is_implicit_vr, is_little_endian, deflated)
    return encode_or_pass


def _send_stored(original):
    def send_c_store(self, dataset, *args, **kwargs):
        if isinstance(dataset, StoredInstance):
            try:
                self._get_valid_context(dataset.SOPClassUID, dataset.stored_syntax, "scu", allow_conversion=False)
                dataset = dataset.stored_path          # as stored, read in chunks, never decoded
            except ValueError:
                dataset = dcmread(dataset.stored_path)  # pynetdicom converts to an accepted syntax
        return original(self, dataset, *args, **kwargs)
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

    Association.__init__ = __init__
    Association._run_reactor = _reactor
    Association.send_c_store = _send_stored(Association.send_c_store)
    association_module.encode = _encode_unless_encoded(association_module.encode)
    _config.STORE_SEND_CHUNKED_DATASET = True      # a file path given to send_c_store is streamed
    _installed = True
    return True
