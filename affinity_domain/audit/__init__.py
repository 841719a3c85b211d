"""ITI-20 Record Audit Event: what an actor calls to leave an audit record.

    audit.start(config, "registry")          # once, in the actor's serve(), before it forks its workers
    audit.record(events.iti18_registry_stored_query(...))   # one line per transaction; cheap (queued)
    audit.stop()                             # at the end: senders get a few seconds to empty the queue

``start`` and ``stop`` record the actor's Application Start and Stop.

``record`` formats the message (DICOM audit XML in an RFC 5424 syslog message) and appends it to the durable
spool; background senders deliver it to every ``[audit] destinations`` URL, and keep it until they could.
Before ``start`` (unit tests, one-shot commands), ``record`` does nothing."""
from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import socket
import ssl
import threading
from pathlib import Path

from .. import audit_codes
from ..config import Config, build_settings
from .. import tls
from . import events, syslog
from .message import AuditMessage, AuditSource, fit, to_xml
from .sender import Sender, transport
from .settings import AuditSenderSettings
from .spool import Spool

__all__ = ["start", "record", "recording", "stop", "events", "Recorder"]
log = logging.getLogger("xdsi.audit")


class Recorder:
    def __init__(self, config: Config, actor: str, context: ssl.SSLContext | None = None):
        s = build_settings(AuditSenderSettings, config)
        self.settings, self.actor = s, actor
        self.hostname = socket.gethostname()
        self.app_name = f"xdsi-{actor}"
        self.source = AuditSource(s.source_id or f"{actor}@{self.hostname}", s.enterprise_site_id or None,
                                  (audit_codes.SOURCE_APPLICATION_SERVER,))
        tls_settings = tls.tls_settings(config, actor)
        self.context = context if context is not None else (
            tls.client_context(tls_settings) if tls_settings.enabled else None)
        self.allow_plaintext = tls_settings.allow_plaintext
        directory = Path(s.spool_dir) if s.spool_dir else config.data_dir / "audit-spool"
        self.spool = Spool(directory, list(s.destinations), s.segment_bytes)
        # Built now, so that a wrong destination is a configuration error at start, not in a thread.
        self._links = {url: transport(url, self.context, self.allow_plaintext, s.send_timeout)
                       for url in s.destinations}
        self.senders: list[Sender] = []
        self.started = False
        self.pid = os.getpid()

    def start(self) -> "Recorder":
        s = self.settings
        self.started, self.pid = True, os.getpid()
        self.senders = [Sender(self.spool, url, link, s.send_batch, s.retry_base_seconds, s.retry_max_seconds)
                        for url, link in self._links.items()]
        for sender in self.senders:
            sender.start()
        return self

    def record(self, message: AuditMessage) -> None:
        if not self.started or not self.settings.destinations:     # no destination: nothing to keep it for
            return
        if self.pid != os.getpid():         # a forked worker starts its own senders when it first records
            with _lock:
                if self.pid != os.getpid():
                    self._links = {url: transport(url, self.context, self.allow_plaintext,
                                                  self.settings.send_timeout) for url in self.settings.destinations}
                    self.start()
        if message.source is None:
            message = dataclasses.replace(message, source=self.source)
        xml = to_xml(message)
        if len(xml) > self.settings.max_record_bytes:
            xml = to_xml(fit(message, self.settings.max_record_bytes))
        self.spool.append(syslog.format_message(xml, hostname=self.hostname, app_name=self.app_name,
                                                procid=str(os.getpid()), time=message.time))

    def after_fork(self) -> None:
        """In the child, before any thread runs: the parent's spool file and lock are not the child's."""
        self.spool.after_fork()

    def stop(self, timeout: float = 5.0) -> None:
        for sender in self.senders:
            sender.drain(timeout / max(len(self.senders), 1))
        self.senders, self.started = [], False
        backlog = self.spool.backlog()
        if backlog:
            log.warning("audit records left queued; they are sent at the next start",
                        extra={"bytes": backlog, "spool": str(self.spool.directory)})
        self.spool.close()


_recorder: Recorder | None = None
_lock = threading.Lock()
_fork_hook = False


def start(config: Config, actor: str) -> Recorder:
    """Start this process's recorder (and, in every process forked from it, the child's own), and record the
    actor's Application Start."""
    global _recorder, _fork_hook
    with _lock:
        if _recorder is not None:
            return _recorder
        _recorder = Recorder(config, actor).start()
        if not _fork_hook:
            os.register_at_fork(after_in_child=_after_fork)
            _fork_hook = True
    record(_activity(_recorder, True))
    return _recorder


def _activity(recorder: Recorder, started: bool) -> AuditMessage:
    try:
        launcher = getpass.getuser()
    except (KeyError, OSError):     # a uid without a name (containers)
        launcher = str(os.getuid())
    return events.application_activity(started=started, application=recorder.app_name, host=recorder.hostname,
                                       launcher=launcher)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    if _recorder is not None:
        _recorder.after_fork()


def recording() -> bool:
    """Whether ``record`` keeps anything: callers skip building a record nobody keeps."""
    recorder = _recorder
    return recorder is not None and bool(recorder.settings.destinations)


def record(message: AuditMessage) -> None:
    """Queue one audit record; never raises for a destination that is down, never waits for one."""
    recorder = _recorder
    if recorder is None:
        return
    try:
        recorder.record(message)
    except (OSError, ValueError) as e:   # the spool's disk, a message without participants: the request goes on
        log.error("audit record could not be queued", extra={"error": str(e), "event": message.event_id.meaning})


def stop(timeout: float = 5.0, activity: bool = True) -> None:
    """Record the Application Stop (``activity``: a forked worker's stop is not the actor's), then give the
    senders ``timeout`` seconds to empty the queue."""
    global _recorder
    if activity and _recorder is not None and _recorder.pid == os.getpid():
        record(_activity(_recorder, False))
    with _lock:
        if _recorder is not None:
            _recorder.stop(timeout)
            _recorder = None
