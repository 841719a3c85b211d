"""What a DICOM peer may cost us, bounded by our configuration (``Limits``), and the PDUs we read.

pynetdicom 3.0 reads a PDU's 6-byte header, then waits for as many bytes as the header claims: a
6-byte header claiming 1 GiB cost the imaging source 1 GiB before any association.
``read_pdu_data`` (installed by ``dicom_net.install``) answers a P-DATA-TF PDU longer than the
Maximum Length we announced (PS3.8 D.1), or any other PDU longer than ``associate_pdu_bytes``, with
an A-ABORT and closes the connection, before its body is read. Once a PDU has begun, it must be
whole within the network timeout: a peer sending a byte a minute cannot hold a thread. The
listener's bounds (connections, associations, backlog) are ``dicom_listener``'s.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import dataclass

from pynetdicom.pdu import A_ABORT_RQ

from .config import DEFAULTS

log = logging.getLogger("xdsi.dicom")

P_DATA_TF = 0x04
PDU_TYPES = range(0x01, 0x08)
INVALID_PDU_PARAMETER_VALUE = 0x06      # A-ABORT reason when the service provider aborts (PS3.8 9.3.8)
_HEADER = struct.Struct(">BBL")


@dataclass(frozen=True)
class Limits:
    """A DICOM listener's bounds (each actor's settings give them; ``dicom_listener`` says what
    each does)."""

    max_associations: int
    max_connections: int
    listen_backlog: int
    # An A-ASSOCIATE-RQ/AC is bounded by its own shape: 128 presentation contexts of 16 transfer
    # syntaxes, every UID 64 characters, is about 150 KB; a user identity token can add 64 KB.
    associate_pdu_bytes: int


def _declared(section: dict) -> Limits:
    return Limits(section["dicom_max_associations"], section["dicom_max_connections"],
                  section["dicom_listen_backlog"], section["dicom_max_associate_pdu_bytes"])


# For an AE no listener has set limits on (one that only requests associations): the declared defaults.
DEFAULT = _declared(DEFAULTS["consumer"])
_LIMITS = "_xdsi_limits"           # an AE's Limits, set by dicom_listener.start_server


def limits_of(ae) -> Limits:
    return getattr(ae, _LIMITS, DEFAULT)


def set_limits(ae, limits: Limits) -> None:
    setattr(ae, _LIMITS, limits)


def pdu_limit(assoc, pdu_type: int) -> int:
    """The longest PDU (its length field) read from the peer on this association."""
    associate = limits_of(assoc.ae).associate_pdu_bytes
    if pdu_type != P_DATA_TF:
        return associate
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    return local.maximum_length or associate     # 0 (unlimited) is never announced by our listeners


# ------------------------------------------------------------ reading a PDU

class _Late(Exception):
    """The PDU did not arrive whole within the network timeout."""


def _fill(sock: socket.socket, view: memoryview, deadline: float | None) -> int:
    """Read into ``view`` until it is full, the peer closes, or the deadline passes (each recv is
    bounded by the socket's timeout, the network timeout); how many bytes came."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            break
        got += n
        if deadline is not None and got < len(view) and time.monotonic() > deadline:
            raise _Late()
    return got


def _timeout(assoc) -> float | None:
    timeout = assoc.network_timeout
    return timeout if timeout and timeout > 0 else None


def read_pdu_data(self) -> None:
    """DULServiceProvider._read_pdu_data with the PDU's length checked against ours before its
    body is read, and read straight into one buffer of that length."""
    idle = awaiting_request(self)
    event = _read_pdu(self)
    if event is None:
        return
    self.event_queue.put(event)
    if event == "Evt6":
        self._xdsi_asked = True
    elif idle and event in ("Evt16", "Evt17"):  # aborted or closed before asking for an association:
        self.to_user_queue.put(None)            # its association thread need not wait for a request


def awaiting_request(dul) -> bool:
    """An acceptor's DUL that has had no A-ASSOCIATE-RQ yet (its state may still be Sta1: the
    transport connection's own event can come after the first bytes)."""
    return dul.assoc.is_acceptor and not getattr(dul, "_xdsi_asked", False)


def _read_pdu(self) -> str | None:
    """The state machine event of the next PDU (the PDU itself queued for the user), or None when
    the connection was refused here."""
    sock = self.socket.socket
    timeout = _timeout(self.assoc)
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)        # accepted sockets block without one; sends are bounded by it too
    deadline = time.monotonic() + timeout if timeout else None
    header = bytearray(6)
    try:
        if _fill(sock, memoryview(header), deadline) < 6:
            return "Evt17"                          # the connection closed
        pdu_type, _, length = _HEADER.unpack(header)
        if pdu_type not in PDU_TYPES:
            return "Evt19"                          # unrecognised PDU: pynetdicom aborts
        limit = pdu_limit(self.assoc, pdu_type)
        if length > limit:
            _refuse(self, f"PDU type 0x{pdu_type:02X} of {length} bytes, more than the {limit} we accept")
            return None
        pdu = bytearray(6 + length)
        pdu[:6] = header
        if _fill(sock, memoryview(pdu)[6:], deadline) < length:
            return "Evt17"
    except _Late:
        _refuse(self, f"a PDU still incomplete after the network timeout ({timeout:g} s)")
        return None
    except (OSError, TimeoutError):
        return "Evt17"
    try:
        decoded, event = self._decode_pdu(pdu)
    except Exception:
        log.warning("an undecodable PDU: aborted", extra={"peer": peer(self.assoc)})
        return "Evt19"
    self._recv_pdu.put(decoded)
    return event


def peer(assoc) -> str:
    info = assoc.requestor.address_info if assoc.is_acceptor else assoc.acceptor.address_info
    return f"{info.address}:{info.port}" if info is not None else "?"


def _refuse(dul, why: str) -> None:
    """A-ABORT (service provider, invalid PDU parameter value) and close the connection, at once:
    nothing more of the PDU is read."""
    log.warning("DICOM peer aborted", extra={"peer": peer(dul.assoc), "reason": why})
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, INVALID_PDU_PARAMETER_VALUE
    waiting = awaiting_request(dul)
    try:
        dul.socket.socket.sendall(abort.encode())
    except OSError:
        pass
    dul.socket.close()                  # Evt17: the state machine ends the association
    if waiting:
        dul.to_user_queue.put(None)     # the acceptor waiting for an A-ASSOCIATE-RQ stops waiting now
