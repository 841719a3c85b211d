"""A DICOM listener whose connections and associations are bounded (``dicom_limits.Limits``), and
fair to a peer that associates at once, whatever a flood of idle connections does.

pynetdicom's server starts an association, two threads, for every TCP connection as it is
accepted, and keeps it until its ARTIM timer runs out; starting threads while a hundred others
want the GIL took some 25 ms a connection here, so 150 idle connections kept a real one waiting
in the backlog for seconds. It counts the associations that have not even been asked for against
``maximum_associations``, so idle connections refused every real one; and it listens with
socketserver's backlog of 5. Here:

- A connection waits in a *waiting room* (one selector, no thread of its own) until it sends its
  first bytes; only then does pynetdicom get it. A connection silent for the ACSE (ARTIM) timeout
  is closed there.
- At most ``max_connections`` connections are held, waiting or handed over. When full, a new one
  takes the place of the oldest that has not asked for an association (waiting first, then
  handed over but still without an A-ASSOCIATE-RQ: a peer dribbling one). When every one is
  associated, the new connection is closed at once.
- At most ``max_associations`` associations: one more is rejected with A-ASSOCIATE-RJ (transient,
  service provider, local limit exceeded), as pynetdicom rejects it, counting associations only.
- The listen backlog is ``listen_backlog``.
- With an ``ssl_context`` (ITI-19, PS3.15 B.9) the listener is TLS only. pynetdicom does each
  handshake in its accept loop with no timeout (one silent peer stops the listener for everyone);
  here a connection is accepted plainly, waits in the room for its ClientHello, and its handshake
  runs in a small pool within ``handshake_timeout``. A refused one is logged with its reason and
  given to ``on_refused`` (the Security Alert).
"""
from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pynetdicom import evt
from pynetdicom.transport import AssociationServer, RequestHandler

from . import secure_node, tls
from .dicom_limits import DEFAULT, Limits, peer, set_limits

log = logging.getLogger("xdsi.dicom")


def _requested(assoc) -> bool:
    return getattr(assoc, "_xdsi_requested", False)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _end_idle(assoc) -> None:
    """Close a handed-over connection that has not asked for an association, and end its
    association thread's wait for the request."""
    transport = assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    assoc.dul.to_user_queue.put(None)


class _Handler(RequestHandler):
    def _create_association(self):
        assoc = super()._create_association()
        self.server.hold(assoc)
        return assoc


class Listener(AssociationServer):
    """pynetdicom's association server with a waiting room, and the bounds of ``Limits``."""

    handshake_timeout: float = 10.0
    on_refused = None           # (peer address, why) -> None, for a refused TLS handshake

    def __init__(self, ae, address, ae_title, contexts, ssl_context=None, evt_handlers=None, limits=DEFAULT,
                 admit=None):
        self.limits = limits
        self.admit = admit                                  # admit(assoc) -> bool: access control
        self._handshakes = ThreadPoolExecutor(4, thread_name_prefix="dicom-tls") if ssl_context else None
        self.request_queue_size = limits.listen_backlog     # socketserver's listen() backlog
        self._lock = threading.Lock()
        self._held: list = []                               # associations handed over, oldest first
        self._waiting: dict = {}                            # socket -> (peer address, accepted at), oldest first
        self._starting = 0                                  # leaving the waiting room, not yet held
        self._inbox: collections.deque = collections.deque()    # ("add" | "drop", socket) for the room
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._closing = False
        handlers = [*(evt_handlers or []), (evt.EVT_REQUESTED, self._admit)]
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers=handlers,
                         request_handler=_Handler)
        self._room = threading.Thread(target=self._waiting_room, name=f"DicomWaitingRoom@{self.server_address[1]}",
                                      daemon=True)
        self._room.start()

    def hold(self, assoc) -> None:
        with self._lock:
            self._held.append(assoc)

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"\0")
        except OSError:
            pass                        # already signalled, or closing

    # ---------------------------------------------------------------- on the accepting thread

    def get_request(self):
        return self.socket.accept()     # the handshake is the pool's (``_secure``), not the acceptor's

    def verify_request(self, request, client_address) -> bool:
        """Admit a new connection when there is room, or when one not associated can make room."""
        idle = None
        with self._lock:
            self._held = [a for a in self._held if a.is_alive()]
            if len(self._held) + len(self._waiting) + self._starting < self.limits.max_connections:
                return True
            if self._waiting:
                oldest = next(iter(self._waiting))
                del self._waiting[oldest]
                self._inbox.append(("drop", oldest))
            else:
                idle = next((a for a in self._held if not _requested(a)), None)
                if idle is None:
                    log.warning("DICOM connection closed: every connection is associated",
                                extra={"peer": f"{client_address[0]}:{client_address[1]}",
                                       "max_connections": self.limits.max_connections})
                    return False                            # socketserver closes it
                self._held.remove(idle)
                idle._xdsi_evicted = True
        if idle is not None:
            _end_idle(idle)
        self._wake()
        return True

    def process_request(self, request, client_address) -> None:
        with self._lock:
            self._waiting[request] = (client_address, time.monotonic())
            self._inbox.append(("add", request))
        self._wake()

    # ---------------------------------------------------------------- the waiting room's thread

    def _waiting_room(self) -> None:
        while not self._closing:
            timeout = self._room_timeout()
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._wake_read:
                    try:
                        self._wake_read.recv(4096)
                    except BlockingIOError:
                        pass
                else:
                    self._spoke(key.fileobj)
            self._take_inbox()
            self._expire()
        self._take_inbox()
        with self._lock:
            left, self._waiting = list(self._waiting), {}
        for sock in left:
            self._forget(sock)

    def _room_timeout(self) -> float:
        with self._lock:
            oldest = next(iter(self._waiting.values()), None)
        if oldest is None:
            return 1.0
        return max(0.0, min(1.0, oldest[1] + self._patience() - time.monotonic()))

    def _patience(self) -> float:
        if self.ssl_context is not None:        # a TLS peer starts with its ClientHello
            return min(self.ae.acse_timeout or 30.0, self.handshake_timeout)
        return self.ae.acse_timeout or 30.0

    def _take_inbox(self) -> None:
        while True:
            with self._lock:
                if not self._inbox:
                    return
                what, sock = self._inbox.popleft()
            if what == "add":
                self._selector.register(sock, selectors.EVENT_READ)
            else:
                self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        _close(sock)

    def _expire(self) -> None:
        now, patience = time.monotonic(), self._patience()
        with self._lock:
            late = [s for s, (_, at) in self._waiting.items() if now - at > patience]
            for sock in late:
                del self._waiting[sock]
        for sock in late:
            self._forget(sock)

    def _spoke(self, sock: socket.socket) -> None:
        """The connection sent its first bytes (or closed): hand it to pynetdicom."""
        with self._lock:
            entry = self._waiting.pop(sock, None)
            if entry is not None:
                self._starting += 1
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        if entry is None:
            return                                          # dropped to make room: the inbox closes it
        handed = False
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                _close(sock)                                # it only closed: no association for that
                return
            if self._handshakes is not None:
                self._handshakes.submit(self._secure, sock, entry[0])
                handed = True
                return
            self.finish_request(sock, entry[0])
        except BlockingIOError:
            with self._lock:                                # not readable after all: back to waiting
                self._waiting[sock] = entry
            self._selector.register(sock, selectors.EVENT_READ)
        except Exception:
            log.exception("DICOM connection could not be started")
            _close(sock)
        finally:
            if not handed:
                with self._lock:
                    self._starting -= 1

    def _secure(self, sock: socket.socket, address) -> None:
        """In the handshake pool: TLS, then the association, as for a plain connection."""
        try:
            sock.setblocking(True)
            secured = tls.accept(sock, self.ssl_context, self.handshake_timeout, address, "DICOM TLS",
                                 self.on_refused)
            if secured is not None:
                secured.settimeout(None)    # as pynetdicom has its accepted sockets; the DUL keeps its own timeouts
                self.finish_request(secured, address)
        except Exception:
            log.exception("DICOM TLS connection could not be started")
            _close(sock)
        finally:
            with self._lock:
                self._starting -= 1

    # ---------------------------------------------------------------- associations

    def _admit(self, event) -> None:
        """EVT_REQUESTED: an A-ASSOCIATE-RQ came. Reject it past max_associations."""
        assoc = event.assoc
        with self._lock:
            evicted = getattr(assoc, "_xdsi_evicted", False)
            assoc._xdsi_requested = True
            associations = sum(1 for a in self._held if _requested(a) and a.is_alive()
                               and not (a.is_released or a.is_aborted or a.is_rejected))
        if evicted:                     # it gave way to a newer connection just as it asked
            assoc.abort()
            return
        if self.admit is not None and not self.admit(assoc):
            assoc.acse.send_reject(0x01, 0x01, 0x03)   # permanent, service user, calling AE title not recognized
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        if associations > self.limits.max_associations:
            log.warning("DICOM association rejected: local limit exceeded",
                        extra={"peer": peer(assoc), "max_associations": self.limits.max_associations})
            assoc.acse.send_reject(0x02, 0x03, 0x02)   # transient, service provider (presentation), local limit
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()

    def shutdown(self) -> None:
        """Stop listening; close the waiting room, and the connections that never asked for an
        association (their threads would keep the process up until their ARTIM timer ran out)."""
        super().shutdown()
        self._closing = True
        self._wake()
        self._room.join(5)
        with self._lock:
            idle = [a for a in self._held if not _requested(a)]
        for assoc in idle:
            _end_idle(assoc)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()
        if self._handshakes is not None:
            self._handshakes.shutdown(wait=False, cancel_futures=True)


def start_server(ae, address: tuple[str, int], evt_handlers: list, limits: Limits = DEFAULT,
                 ssl_context: ssl.SSLContext | None | bool = True, handshake_timeout: float | None = None,
                 on_refused=None, *, admit=None) -> Listener:
    """``ae.start_server(address, block=False, evt_handlers=...)`` with ``limits``; TLS only with
    ``ssl_context`` (True, the default: the node's, ``secure_node``; None: plain); ``admit(assoc)``
    False rejects an A-ASSOCIATE-RQ (calling AE title not recognized)."""
    set_limits(ae, limits)
    # pynetdicom's own count (every acceptor, whether asked for or not) must never be the one that refuses.
    ae.maximum_associations = 1 << 20
    if ssl_context is True:
        secure_node.check_listener(address[0], address[1], "DICOM")
    context = secure_node.server_context() if ssl_context is True else ssl_context
    server = ae.make_server(address, ssl_context=context, evt_handlers=evt_handlers, server_class=Listener,
                            limits=limits, admit=admit)
    server.handshake_timeout = handshake_timeout or secure_node.handshake_timeout()
    server.on_refused = on_refused or secure_node.on_refused("DICOM TLS")
    thread = threading.Thread(target=server.serve_forever, name=f"DicomListener@{server.server_address[1]}",
                              daemon=True)
    thread.start()
    ae._servers.append(server)
    return server
