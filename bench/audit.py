"""Audit Record Repository burst: 10,000 records/s for 10 s over UDP and over TLS, counted.

    python -m bench.audit [--rate 10000] [--seconds 10] [--phases udp,tls,recorder]

Starts ``xdsi serve audit`` with test certificates on a fresh database ($XDSI_DATABASE_URL's server, else an
embedded PostgreSQL) and sends distinct ITI-18 audit records, paced in 10 ms steps:
- udp: one datagram per record (RFC 5426);
- tls: octet-counted frames over one mutual-TLS connection (RFC 5425);
- recorder: through ``audit.record`` (the spool and its TLS sender), what an actor does.
Prints, per phase: sent, received (the ARR's counters), stored (rows), the kernel's UDP drops, and how long the
ARR took to store the last record after the burst ended.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import fcntl
import socket
import ssl
import struct
import termios
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import psycopg

from affinity_domain import config as config_mod
from affinity_domain.audit import Recorder, events, syslog
from affinity_domain.audit.message import AuditSource, to_xml
from tests.audit import certs
from tests.services import free_port, fresh_database, launch

MARK = b"BENCHPATIENT00000000"


def template() -> bytes:
    message = events.iti18_registry_stored_query(
        consumer=events.source("http://127.0.0.1:9999/consumer", host="127.0.0.1", alt="1"),
        registry=events.destination("http://127.0.0.1:8010/registry", host="127.0.0.1"),
        query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        request=b"<query:AdhocQueryRequest/>" * 8, patient=MARK.decode() + "^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    return to_xml(replace(message, source=AuditSource("bench@localhost")))


def frames(phase: str, count: int) -> list[bytes]:
    xml = template()
    head = syslog.format_message(b"", hostname="bench", app_name="bench", procid="1",
                                 time=dt.datetime.now(dt.timezone.utc))
    tag = phase[:3].upper().encode()
    return [head + xml.replace(MARK, tag + b"%017d" % i) for i in range(count)]


def paced(send, messages: list[bytes], rate: int) -> tuple[int, float]:
    """Send ``rate`` messages a second in 10 ms steps; (sent, seconds)."""
    step = max(1, rate // 100)
    start = time.monotonic()
    sent = 0
    for i in range(0, len(messages), step):
        send(messages[i:i + step])
        sent += len(messages[i:i + step])
        due = start + (i + step) / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return sent, time.monotonic() - start


def _udp(port: int, messages: list[bytes], rate: int, out) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        out.put(paced(lambda batch: [s.send(m) for m in batch], messages, rate))


def _tls(port: int, pki: certs.Pki, messages: list[bytes], rate: int, out) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.client_cert, pki.client_key)
    raw = socket.create_connection(("127.0.0.1", port))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        result = paced(lambda batch: s.sendall(b"".join(syslog.octet_frame(m) for m in batch)), messages, rate)
        # Closing with the server's unread session tickets would reset the connection and drop what is still
        # in flight: wait until the repository's TCP has it all.
        buf = bytearray(4)
        while fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, buf) == 0 and struct.unpack("i", buf)[0]:
            time.sleep(0.01)
        out.put(result)


def _recorder(port: int, pki: certs.Pki, folder: str, count: int, rate: int, out) -> None:
    env = {"XDSI_AUDIT_DESTINATIONS": f'["tls://127.0.0.1:{port}"]', "XDSI_TLS_CERT": str(pki.client_cert),
           "XDSI_TLS_KEY": str(pki.client_key), "XDSI_TLS_CA": str(pki.ca_cert)}
    recorder = Recorder(config_mod.load(None, folder, environ=env), "bench").start()
    base = events.iti18_registry_stored_query(
        consumer=events.source("http://127.0.0.1:9999/consumer", host="127.0.0.1"),
        registry=events.destination("http://127.0.0.1:8010/registry"), query_id="urn:uuid:1", request=b"<q/>",
        patient="REC^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    started = time.monotonic()
    records = [replace(base, objects=(events.patient(f"REC{i:017d}^^^&1.2&ISO"), *base.objects[1:]))
               for i in range(count)]
    made = time.monotonic() - started
    costs = []

    def send(batch):
        t = time.perf_counter()
        for r in batch:
            recorder.record(r)
        costs.append((time.perf_counter() - t) / len(batch))

    sent, seconds = paced(send, records, rate)
    recorder.stop(timeout=60)
    costs.sort()
    out.put((sent, seconds, {"record_us_p50": round(costs[len(costs) // 2] * 1e6, 1), "build_s": round(made, 1)}))


def udp_drops(port: int) -> int:
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return -1


def stored(url: str, prefix: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM audit.record WHERE patient_numbers[1] LIKE %s",
                            (prefix + "%",)).fetchone()[0]


def health(http: str) -> dict:
    with urllib.request.urlopen(f"{http}/health", timeout=10) as r:
        return json.load(r)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--phases", default="udp,tls,recorder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an [audit] key of the repository, e.g. --set writers=3")
    args = parser.parse_args()
    count = args.rate * args.seconds
    with tempfile.TemporaryDirectory(prefix="xab", dir="/tmp") as work, fresh_database(Path(work)) as database:
        work = Path(work)
        pki = certs.make(work)
        tls_port, udp_port, http_port = free_port(), free_port(), free_port()
        os.environ.update(XDSI_TLS_CERT=str(pki.server_cert), XDSI_TLS_KEY=str(pki.server_key),
                          XDSI_TLS_CA=str(pki.ca_cert))
        settings = {"tls_port": tls_port, "udp_port": udp_port, "http_port": http_port,
                    **dict(kv.split("=", 1) for kv in args.set)}
        proc, _ = launch("audit", work, database, settings, [tls_port, http_port])
        http = f"http://127.0.0.1:{http_port}"
        try:
            print(f"ARR up; {count} records per phase at {args.rate}/s", flush=True)
            for phase in args.phases.split(","):
                before = health(http)
                drops_before = udp_drops(udp_port)
                out = mp.Queue()
                if phase == "recorder":
                    p = mp.Process(target=_recorder, args=(tls_port, pki, str(work / "spool"), count, args.rate, out))
                    prefix = "REC"
                else:
                    messages = frames(phase, count)
                    target = _udp if phase == "udp" else _tls
                    extra = (pki,) if phase == "tls" else ()
                    p = mp.Process(target=target, args=(udp_port if phase == "udp" else tls_port, *extra,
                                                        messages, args.rate, out))
                    prefix = phase[:3].upper()
                p.start()
                result = out.get(timeout=600)
                p.join(timeout=60)
                sent, seconds, *more = result
                ended = time.monotonic()
                last, settled = -1, ended
                while time.monotonic() - ended < 120:
                    now = stored(database, prefix)
                    if now >= sent:
                        settled = time.monotonic()
                        break
                    if now != last:
                        last, settled = now, time.monotonic()
                    elif time.monotonic() - settled > 15:
                        break
                    time.sleep(0.2)
                after = health(http)
                transport = {"udp": "udp", "tls": "tls", "recorder": "tls"}[phase]
                received = after["received"][transport] - before["received"][transport]
                print(json.dumps({"phase": phase, "sent": sent, "send_seconds": round(seconds, 2),
                                  "sent_per_s": round(sent / seconds), "received": received,
                                  "stored": stored(database, prefix),
                                  "udp_kernel_drops": udp_drops(udp_port) - drops_before,
                                  "stored_after_burst_s": round(settled - ended, 2), **(more[0] if more else {})}),
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
