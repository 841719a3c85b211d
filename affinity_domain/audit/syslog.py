"""Syslog, sans-IO: RFC 5424 messages (write and read) and the octet-counting framing of RFC 5425 / RFC 6587.

A reader gets bytes from anyone: ``parse`` refuses what is not RFC 5424 with ``SyslogError`` (the caller keeps
or drops the frame, the connection goes on) and ``Deframer`` never holds more than ``max_bytes`` of one frame."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ..audit_codes import SYSLOG_FACILITY, SYSLOG_MSGID, SYSLOG_SEVERITY
from ..exceptions import XdsiError

BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
_LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")


class SyslogError(ValueError, XdsiError):
    """Not a syslog frame or message we can read."""

    permanent = True


@dataclass(frozen=True)
class SyslogMessage:
    facility: int
    severity: int
    timestamp: dt.datetime | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: str | None
    msg: bytes


def _field(value: str | None, name: str) -> str:
    """A header field as RFC 5424 allows it: printable US-ASCII, no spaces, bounded; empty is NILVALUE."""
    text = _UNPRINTABLE.sub("_", value or "")[:_LIMITS[name]]
    return text or NILVALUE


def format_message(msg: bytes, *, hostname: str, app_name: str, procid: str, time: dt.datetime,
                   msgid: str = SYSLOG_MSGID, facility: int = SYSLOG_FACILITY,
                   severity: int = SYSLOG_SEVERITY) -> bytes:
    """One RFC 5424 message; ``msg`` (UTF-8) goes after a BOM, as RFC 5424 6.4 asks of UTF-8 text."""
    stamp = time.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = (f"<{facility * 8 + severity}>1 {stamp} {_field(hostname, 'hostname')} "
              f"{_field(app_name, 'app_name')} {_field(procid, 'procid')} {_field(msgid, 'msgid')} -")
    return header.encode("ascii") + b" " + BOM + msg


def octet_frame(message: bytes) -> bytes:
    """RFC 5425 / RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(message) + message


def _timestamp(text: str) -> dt.datetime | None:
    if text == NILVALUE:
        return None
    m = _TIMESTAMP.match(text)
    if not m:
        raise SyslogError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    tz = dt.timezone.utc if zone == "Z" else dt.timezone(
        (1 if zone[0] == "+" else -1) * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                           int((fraction or ".0")[1:].ljust(6, "0")), tz)
    except ValueError as e:
        raise SyslogError(f"timestamp {text!r}: {e}") from None


def _structured_data_end(data: bytes, i: int) -> int:
    """The index after STRUCTURED-DATA starting at ``i`` (``-`` or one or more ``[...]`` elements)."""
    if data[i:i + 1] == b"-":
        return i + 1
    if data[i:i + 1] != b"[":
        raise SyslogError("STRUCTURED-DATA is neither '-' nor '[...]'")
    while data[i:i + 1] == b"[":
        i += 1
        quoted = False
        while True:
            if i >= len(data):
                raise SyslogError("unterminated SD-ELEMENT")
            ch = data[i]
            if quoted and ch == 0x5C:          # backslash: the next octet is escaped
                i += 2
                continue
            if ch == 0x22:
                quoted = not quoted
            elif ch == 0x5D and not quoted:
                i += 1
                break
            i += 1
    return i


def parse(data: bytes) -> SyslogMessage:
    """An RFC 5424 message (``SYSLOG-MSG``, without framing)."""
    if not data.startswith(b"<"):
        raise SyslogError("no PRI")
    close = data.find(b">", 1, 5)
    if close < 2 or not data[1:close].isdigit() or int(data[1:close]) > 191:
        raise SyslogError("bad PRI")
    pri = int(data[1:close])
    parts = data[close + 1:].split(b" ", 6)
    if len(parts) < 7 or parts[0] != b"1":
        raise SyslogError("not an RFC 5424 header (VERSION 1 and six fields)")
    try:
        stamp, host, app, proc, msgid = (p.decode("ascii") for p in parts[1:6])
    except UnicodeDecodeError:
        raise SyslogError("header fields must be US-ASCII") from None
    rest = parts[6]
    end = _structured_data_end(rest, 0)
    sd = rest[:end].decode("utf-8", "replace")
    if end < len(rest) and rest[end:end + 1] != b" ":
        raise SyslogError("no space after STRUCTURED-DATA")
    msg = rest[end + 1:]
    if msg.startswith(BOM):
        msg = msg[len(BOM):]

    def nil(v: str) -> str | None:
        return None if v == NILVALUE else v

    return SyslogMessage(pri // 8, pri % 8, _timestamp(stamp), nil(host), nil(app), nil(proc), nil(msgid),
                         None if sd == NILVALUE else sd, msg)


class Deframer:
    """Splits a TCP/TLS byte stream into syslog messages: octet counting (RFC 6587 3.4.1, what RFC 5425
    requires) and, for a peer that frames by line, LF-terminated messages (3.4.2). A frame longer than
    ``max_bytes`` is an error: the stream cannot be resynchronised, so the caller closes it."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames = []
        while self.buffer:
            if self.buffer[:1].isdigit():
                space = self.buffer.find(b" ", 0, 12)
                if space < 0:
                    if len(self.buffer) >= 12 or not self.buffer.isdigit():
                        raise SyslogError("bad octet count")
                    break
                digits = bytes(self.buffer[:space])
                if not digits.isdigit() or digits.startswith(b"0"):
                    raise SyslogError("bad octet count")
                size = int(digits)
                if size > self.max_bytes:
                    raise SyslogError(f"frame of {size} bytes, more than {self.max_bytes}")
                if len(self.buffer) < space + 1 + size:
                    break
                frames.append(bytes(self.buffer[space + 1:space + 1 + size]))
                del self.buffer[:space + 1 + size]
            elif self.buffer[:1] == b"<":
                end = self.buffer.find(b"\n")
                if end < 0:
                    if len(self.buffer) > self.max_bytes:
                        raise SyslogError(f"line longer than {self.max_bytes} bytes")
                    break
                frames.append(bytes(self.buffer[:end]).rstrip(b"\r"))
                del self.buffer[:end + 1]
            elif self.buffer[:1] in (b"\n", b"\r", b" "):
                del self.buffer[:1]
            else:
                raise SyslogError("neither an octet count nor a '<' starts the frame")
        return frames
