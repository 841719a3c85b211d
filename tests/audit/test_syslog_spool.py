"""Pure units: RFC 5424 writing and reading, octet-counting framing, and the spool's durable records."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from affinity_domain.audit import syslog
from affinity_domain.audit.spool import Spool, destination_key, read_records
from affinity_domain.audit.syslog import Deframer, SyslogError

WHEN = dt.datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=dt.timezone.utc)


def test_rfc5424_header_of_iti20():
    m = syslog.format_message(b"<AuditMessage/>", hostname="node 1", app_name="xdsi-registry", procid="42",
                              time=WHEN)
    assert m == (b"<85>1 2025-03-01T12:30:05.123456Z node_1 xdsi-registry 42 IHE+RFC-3881 - "
                 b"\xef\xbb\xbf<AuditMessage/>")
    parsed = syslog.parse(m)
    assert (parsed.facility, parsed.severity, parsed.timestamp, parsed.hostname, parsed.app_name, parsed.procid,
            parsed.msgid, parsed.structured_data, parsed.msg) == (10, 5, WHEN, "node_1", "xdsi-registry", "42",
                                                                   "IHE+RFC-3881", None, b"<AuditMessage/>")


def test_header_fields_are_bounded_and_printable():
    m = syslog.format_message(b"x", hostname="h" * 300, app_name="é" * 60, procid="", time=WHEN)
    header = m.split(b" ")
    assert len(header[2]) == 255 and header[3] == b"_" * 48 and header[4] == b"-"


def test_parse_reads_structured_data_and_peers_forms():
    m = syslog.parse(b'<165>1 2003-10-11T22:14:15.003-07:00 mymachine evntslog - ID47 '
                     b'[exampleSDID@32473 iut="3" eventSource="Appl\\"ic]ation"][x@1 a="b"] \xef\xbb\xbfhello')
    assert m.structured_data == '[exampleSDID@32473 iut="3" eventSource="Appl\\"ic]ation"][x@1 a="b"]'
    assert m.msg == b"hello" and m.procid is None and m.facility == 20 and m.severity == 5
    assert m.timestamp == dt.datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    assert syslog.parse(b"<85>1 - - - - - -").msg == b""


@pytest.mark.parametrize("bad", [b"", b"hello", b"<999>1 - - - - - -", b"<85>2 - - - - - - x",
                                 b"<85>1 yesterday - - - - - x", b"<85>1 - - - - - [unterminated",
                                 b"<85>1 - - - - - -x", b"<85>1 2025-13-40T00:00:00Z - - - - - x",
                                 b"<85>1 - h\xff - - - - x", b"<85>1 - - - -"])
def test_parse_refuses(bad):
    with pytest.raises(SyslogError):
        syslog.parse(bad)


def test_deframer_octet_counting_in_pieces_and_lines():
    stream = syslog.octet_frame(b"<85>1 - - - - - - one") + syslog.octet_frame(b"<85>1 - - - - - - two\nx") \
        + b"<85>1 - - - - - - three\r\n"
    d = Deframer(1000)
    got = []
    for i in range(len(stream)):
        got += d.feed(stream[i:i + 1])
    assert got == [b"<85>1 - - - - - - one", b"<85>1 - - - - - - two\nx", b"<85>1 - - - - - - three"]
    assert d.buffer == b""


@pytest.mark.parametrize("bad", [b"100000 " + b"x" * 10, b"012 abc", b"abc", b"1234567890123", b"<85>" + b"x" * 2000])
def test_deframer_refuses_what_it_cannot_bound_or_read(bad):
    with pytest.raises(SyslogError):
        Deframer(1000).feed(bad)


def test_spool_records_survive_and_torn_tails_are_not_read(tmp_path):
    spool = Spool(tmp_path, ["udp://127.0.0.1:1"], 1 << 20)
    for i in range(5):
        spool.append(b"record %d" % i)
    spool.sync()
    [segment] = list(tmp_path.glob("seg-*.log"))
    key = destination_key("udp://127.0.0.1:1")
    seg, records, offset = spool.read(key, 3)
    assert records == [b"record 0", b"record 1", b"record 2"]
    spool.commit(seg, key, offset)
    # a writer killed half-way through a record leaves a torn tail
    with open(segment, "ab") as f:
        f.write(b"40 only part of it")
    _, records, offset = spool.read(key, 10)
    assert records == [b"record 3", b"record 4"]
    data = segment.read_bytes()
    assert read_records(data, offset, 10) == ([], offset)
    spool.close()


def test_spool_rolls_and_retires_what_every_destination_has(tmp_path):
    a, b = "tls://127.0.0.1:1", "udp://127.0.0.1:2"
    spool = Spool(tmp_path, [a, b], 64)
    for i in range(6):
        spool.append(b"x" * 30 + b"%d" % i)
    assert len(list(tmp_path.glob("seg-*.log"))) == 3
    spool.sync()
    for url in (a, b):
        key = destination_key(url)
        while True:
            seg, records, offset = spool.read(key, 1)
            if not records:
                break
            spool.commit(seg, key, offset)
    spool.read(destination_key(a), 1)
    assert len(list(tmp_path.glob("seg-*.log"))) == 1      # only the one still being written
    assert spool.backlog() == 0
    spool.close()


def test_a_dead_writers_segment_is_claimed_once(tmp_path):
    dead = os.fork()
    if dead == 0:
        s = Spool(tmp_path, ["udp://127.0.0.1:1"], 1 << 20)
        s.append(b"left behind")
        os._exit(0)
    os.waitpid(dead, 0)
    key = destination_key("udp://127.0.0.1:1")
    first, second = Spool(tmp_path, ["udp://127.0.0.1:1"], 1 << 20), Spool(tmp_path, ["udp://127.0.0.1:1"], 1 << 20)
    _, records, _ = first.read(key, 10)
    assert records == [b"left behind"]
    assert second.read(key, 10)[1] == []          # the first holds its claim
    first.close()
    assert second.read(key, 10)[1] == [b"left behind"]
    second.close()


def test_only_what_is_on_disk_is_sent(tmp_path):
    spool = Spool(tmp_path, ["udp://127.0.0.1:1"], 1 << 20)
    key = destination_key("udp://127.0.0.1:1")
    spool.append(b"one")
    assert spool.read(key, 10)[1] == []        # written, not yet fsynced: a power cut could take it back
    spool.sync()
    segment, records, offset = spool.read(key, 10)
    assert records == [b"one"]
    spool.commit(segment, key, offset)
    spool.append(b"two")
    assert spool.read(key, 10)[1] == []
    spool.sync()
    assert spool.read(key, 10)[1] == [b"two"]
    spool.close()
