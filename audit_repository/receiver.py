"""The repository's syslog doors: UDP (RFC 5426) and TLS (RFC 5425; plain TCP with RFC 6587 octet counting when
no ``[tls]`` is configured), feeding one bounded queue whose batches writer processes parse and store in PostgreSQL.

Nothing received is dropped here: when the database is slow the queue fills, TCP and TLS peers wait in their
sends, and UDP datagrams wait in the socket's buffer (``udp_buffer_bytes``) — past that the kernel drops them,
which UDP's senders accept by choosing UDP."""
from __future__ import annotations

import datetime as dt
import logging
import multiprocessing as mp
import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import replace

from affinity_domain import audit_codes
from affinity_domain.audit import events, syslog
from affinity_domain.audit.message import AuditSource, Participant, to_xml
from affinity_domain.audit.syslog import Deframer, SyslogError

from . import writer
from .settings import ArrSettings

log = logging.getLogger("xdsi.audit")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.received = {"udp": 0, "tcp": 0, "tls": 0, "local": 0}
        self.stored = 0
        self.duplicates = 0
        self.refused = 0

    def snapshot(self) -> dict:
        with self.lock:
            return {"received": dict(self.received), "stored": self.stored, "duplicates": self.duplicates,
                    "refused_connections": self.refused}


class Receiver:
    def __init__(self, s: ArrSettings, database_url: str, context: ssl.SSLContext | None,
                 tcp_sock: socket.socket, udp_sock: socket.socket, source_id: str):
        self.s, self.database_url, self.context = s, database_url, context
        self.tcp_sock, self.udp_sock = tcp_sock, udp_sock
        self.source_id = source_id
        self.queue: queue.Queue = queue.Queue(maxsize=s.queue_records)
        self.stopping = threading.Event()
        self.counters = Counters()
        self.connections = threading.BoundedSemaphore(s.max_connections)
        self.threads: list[threading.Thread] = []
        spawn = mp.get_context("spawn")     # a fresh interpreter: this one already runs threads
        self.batches = spawn.Queue(maxsize=2 * s.writers)
        self.results = spawn.Queue()
        self.writers = [spawn.Process(target=writer.run, args=(database_url, self.batches, self.results,
                                                               s.max_message_bytes), daemon=True,
                                      name=f"audit-writer-{i}") for i in range(s.writers)]
        self.receiving_done = threading.Event()

    @property
    def stream_transport(self) -> str:
        return "tls" if self.context is not None else "tcp"

    def start(self) -> None:
        for w in self.writers:
            w.start()
        for target, name in ((self._udp, "audit-udp"), (self._accept, "audit-accept")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        self.dispatcher = threading.Thread(target=self._dispatch, name="audit-dispatch", daemon=True)
        self.collector = threading.Thread(target=self._collect, name="audit-collect", daemon=True)
        self.dispatcher.start()
        self.collector.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, then store what was received (within ``timeout``)."""
        self.stopping.set()
        for sock in (self.tcp_sock, self.udp_sock):
            try:
                sock.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        self.receiving_done.set()
        self.dispatcher.join(timeout=max(0.1, deadline - time.monotonic()))
        for w in self.writers:
            w.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.is_alive():
                w.kill()
        self.collector.join(timeout=1)

    def _put(self, item) -> bool:
        """Queue a received message, waiting while the queue is full (the peer waits with us)."""
        while not self.receiving_done.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                with self.counters.lock:
                    self.counters.received[item[0]] += 1
                return True
            except queue.Full:
                continue
        return False

    # ---------------------------------------------------------------- UDP

    def _udp(self) -> None:
        size = self.s.max_message_bytes
        while not self.stopping.is_set():
            try:
                data, peer = self.udp_sock.recvfrom(size + 1)
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            if len(data) > size:
                log.warning("syslog datagram larger than max_message_bytes; dropped",
                            extra={"peer": peer[0], "bytes": len(data)})
                continue
            self._put(("udp", f"{peer[0]}:{peer[1]}", data, _now()))

    # ---------------------------------------------------------------- TCP / TLS

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = self.tcp_sock.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            if not self.connections.acquire(blocking=False):
                with self.counters.lock:
                    self.counters.refused += 1
                log.warning("syslog connection refused: max_connections reached", extra={"peer": peer[0]})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True, name="audit-conn").start()

    def _serve(self, conn: socket.socket, peer) -> None:
        where = f"{peer[0]}:{peer[1]}"
        try:
            conn.settimeout(self.s.idle_timeout)
            if self.context is not None:
                if not conn.recv(1, socket.MSG_PEEK):
                    return                  # connected and closed without a byte: a port probe, not a peer
                try:
                    conn = self.context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    log.warning("syslog TLS handshake refused", extra={"peer": where, "error": str(e)})
                    self._alert(where, f"TLS handshake refused: {e}")
                    return
                subject = dict(x[0] for x in conn.getpeercert().get("subject", ())) if conn.getpeercert() else {}
                if subject.get("commonName"):
                    where += f" CN={subject['commonName']}"
            deframer = Deframer(self.s.max_message_bytes)
            while not self.stopping.is_set():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    log.info("syslog connection idle; closed", extra={"peer": where})
                    return
                if not data:
                    return
                for frame in deframer.feed(data):
                    if not self._put((self.stream_transport, where, frame, _now())):
                        return
        except SyslogError as e:
            log.warning("syslog stream not readable; connection closed", extra={"peer": where, "error": str(e)})
        except (OSError, ssl.SSLError) as e:
            log.info("syslog connection ended", extra={"peer": where, "error": str(e)})
        finally:
            try:
                conn.close()
            finally:
                self.connections.release()

    def _alert(self, peer: str, description: str) -> None:
        """The repository audits a refused peer into its own store (Security Alert, Node Authentication)."""
        self.record_own(events.security_alert(
            kind=audit_codes.NODE_AUTHENTICATION, reporter=Participant(self.source_id, False),
            subject=peer, description=description, performers=[Participant(peer, True, host=peer.rpartition(":")[0])]))

    def record_own(self, message) -> None:
        """An audit record of the repository itself, stored as if it had come by syslog."""
        xml = to_xml(replace(message, source=AuditSource(self.source_id)))
        frame = syslog.format_message(xml, hostname=socket.gethostname(), app_name="xdsi-audit",
                                      procid=str(os.getpid()), time=message.time)
        self._put(("local", "self", frame, _now()))

    # ---------------------------------------------------------------- the database

    def _batch(self) -> list:
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.s.insert_batch:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _dispatch(self) -> None:
        """Hand batches to the writer processes; when stopping, the last of them, then one None each."""
        while True:
            batch = self._batch()
            if batch:
                self.batches.put(batch)
            elif self.receiving_done.is_set():
                break
        for _ in self.writers:
            self.batches.put(None)

    def _collect(self) -> None:
        while any(w.is_alive() for w in self.writers) or not self.results.empty():
            try:
                new, total = self.results.get(timeout=0.5)
            except queue.Empty:
                continue
            with self.counters.lock:
                self.counters.stored += new
                self.counters.duplicates += total - new
