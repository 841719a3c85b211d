"""``xdsi serve audit`` (the Audit Record Repository) and ``xdsi audit search``."""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
from dataclasses import replace

from affinity_domain import db, logs, serving, tls
from affinity_domain.audit import events, syslog
from affinity_domain.audit.message import AuditSource, Participant, to_xml
from affinity_domain.config import Config, ConfigError, build_settings

from . import fhir, http_door
from .receiver import Receiver
from .records import row_of
from .settings import ArrSettings
from .store import Criteria, Store

log = logging.getLogger("xdsi.audit")


def udp_socket(host: str, port: int, buffer_bytes: int) -> socket.socket:
    """The UDP door, with a receive buffer that holds a burst while the writer catches up (as root past the
    kernel's rmem_max, else as much as it grants)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, buffer_bytes)      # SO_RCVBUFFORCE (Linux, privileged)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"UDP port {port} on {host}: {e.strerror}") from None
    return sock


class AuditActor:
    name = "audit"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        s = build_settings(ArrSettings, config)
        return _endpoints(s, tls.tls_settings(config, self.name).enabled)

    def serve(self, config: Config) -> int:
        s = build_settings(ArrSettings, config)
        logs.setup("audit")
        tls_settings = tls.tls_settings(config, self.name)
        context = tls.server_context(tls_settings) if tls_settings.enabled else None
        if context is None:
            if not tls.is_loopback(s.host) and not tls_settings.allow_plaintext:
                raise ConfigError(f"[audit] host = {s.host!r} is not loopback: set [tls] cert, key and ca "
                                  "(or [tls] allow_plaintext = true)")
            log.warning("no [tls] configured: syslog on the TLS port is plain TCP with octet counting (RFC 6587)",
                        extra={"port": s.tls_port})
        url = db.database_url(config)
        db.migrate(url, "audit", "audit_repository")
        tcp = serving.listen(s.host, s.tls_port)
        udp = udp_socket(s.host, s.udp_port, s.udp_buffer_bytes)
        pool = db.open_pool(url, "audit", max_size=4)
        store = Store(pool)
        source_id = f"audit@{socket.gethostname()}"
        receiver = Receiver(s, url, context, tcp, udp, source_id)
        receiver.start()
        door = http_door.app(store, s.max_search_results, s.max_message_bytes, receiver.counters, receiver.record_own)
        http = serving.http_server(door, serving.listen(s.host, s.http_port), 4)
        receiver.record_own(events.application_activity(started=True, application=source_id))
        for label, where in _endpoints(s, context is not None) + [("ITI-20 syslog UDP (RFC 5426)",
                                                                   f"udp://{s.host}:{s.udp_port}")]:
            log.info("listening", extra={"endpoint": label, "at": where})
        log.info("receive buffer", extra={"udp_buffer_bytes": udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)})

        def stop_receiving():
            receiver.record_own(events.application_activity(started=False, application=source_id))
            receiver.stop()

        serving.run_until_stopped([http], [stop_receiving, pool.close])
        return 0

    def add_commands(self, sub) -> None:
        audit = sub.add_parser("audit", help="the Audit Record Repository's records")
        asub = audit.add_subparsers(dest="audit_command", required=True)
        search = asub.add_parser("search", help="audit records, newest first")
        search.add_argument("--patient", action="append", default=[], help="a patient id (CX, or without authority)")
        search.add_argument("--since", help="from this date or time (YYYY-MM-DD or ISO 8601)")
        search.add_argument("--until", help="before this date or time")
        search.add_argument("--type", action="append", default=[], help="EventID or EventTypeCode (ITI-18, 110112)")
        search.add_argument("--user", action="append", default=[], help="a participant's UserID or name")
        search.add_argument("--outcome", action="append", type=int, default=[], choices=[0, 4, 8, 12])
        search.add_argument("--limit", type=int, default=100)
        search.add_argument("--json", action="store_true", help="FHIR AuditEvent resources, one per line")
        search.set_defaults(run=_search)


def _endpoints(s: ArrSettings, tls: bool) -> list[tuple[str, str]]:
    return [(f"ITI-20 syslog {'TLS (RFC 5425)' if tls else 'TCP (RFC 6587, no [tls])'}", f"{s.host}:{s.tls_port}"),
            ("ITI-81 AuditEvent (FHIR)", f"http://{s.host}:{s.http_port}/AuditEvent")]


def _when(text: str, option: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected YYYY-MM-DD or an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _search(config: Config, args) -> int:
    s = build_settings(ArrSettings, config)
    criteria = Criteria(patients=args.patient, codes=args.type, users=args.user, outcomes=args.outcome,
                        limit=max(1, min(args.limit, s.max_search_results)))
    if args.since:
        criteria.after.append((">=", _when(args.since, "--since")))
    if args.until:
        criteria.before.append(("<", _when(args.until, "--until")))
    url = db.database_url(config)
    db.migrate(url, "audit", "audit_repository")
    with db.open_pool(url, "audit", max_size=1) as pool:
        store = Store(pool)
        rows = store.search(criteria)
        store.insert([_log_used(args, s.max_message_bytes)])
    for r in rows:
        if args.json:
            print(json.dumps(fhir.audit_event(r["id"], bytes(r["message"]), s.max_message_bytes)))
            continue
        when = r["event_time"].isoformat(timespec="seconds") if r["event_time"] else "-"
        kinds = ",".join([r["event_id"] or "?", *r["event_types"]])
        print(f"#{r['id']:<7} {when}  {kinds:<20} outcome {r['outcome'] if r['outcome'] is not None else '?'}  "
              f"patients {' '.join(r['patient_ids']) or '-'}  users {' '.join(r['user_ids']) or '-'}  "
              f"source {r['source_id'] or '-'}" + (f"  PROBLEM {r['problem']}" if r["problem"] else ""))
    print(f"{len(rows)} record(s)")
    return 0


def _log_used(args, max_bytes: int):
    """This search, as the Audit Log Used record the repository keeps of every read of its trail."""
    user = getpass.getuser()
    asked = " ".join(f"--{k} {v}" for k, v in vars(args).items() if k in ("patient", "type", "user", "outcome",
                                                                       "since", "until") and v)
    message = events.audit_log_used(user=Participant(user, True, host=socket.gethostname()),
                                    log=f"xdsi audit search {asked}".strip())
    xml = to_xml(replace(message, source=AuditSource(f"audit@{socket.gethostname()}")))
    frame = syslog.format_message(xml, hostname=socket.gethostname(), app_name="xdsi-audit", procid=str(os.getpid()),
                                  time=message.time)
    return row_of(frame, "local", "xdsi audit search", message.time, max_bytes)


actor = AuditActor()
