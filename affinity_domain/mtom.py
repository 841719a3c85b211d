"""MTOM/XOP: multipart/related messages whose root part is SOAP with ``xop:Include`` references."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import unquote

from lxml import etree

from .exceptions import XdsiError
from .ns import XOP

XOP_MIME = "application/xop+xml"
# Defaults of the caps on what a peer sends (the doors take theirs from configuration).
MAX_PARTS = 100_000
MAX_PART_HEADER_BYTES = 16 * 1024


class MtomError(ValueError, XdsiError):
    """The multipart body is not a usable MTOM message."""

    permanent = True


def content_type_params(header: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = header or ""
    params = {k.lower(): _param(v) for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


def _param(value) -> str:
    """A parameter's text: an RFC 2231 one (``boundary*=``) comes as a tuple; one that is not
    latin-1 (what a header's bytes decode to) counts as absent."""
    text = collapse_rfc2231_value(value)
    return text if all(ord(c) < 256 for c in text) else ""


def is_multipart(header: str) -> bool:
    return content_type_params(header)[0] == "multipart/related"


def _headers(raw: bytes) -> dict[str, str]:
    out = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def _cid(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if value.lower().startswith("cid:"):
        value = value[4:]
    return unquote(value)


def split(body: bytes, content_type: str, max_parts: int = MAX_PARTS,
          max_header_bytes: int = MAX_PART_HEADER_BYTES) -> tuple[bytes, str, dict[str, tuple[str, bytes]]]:
    """Return (root part bytes, root part content type, {content-id: (content type, bytes)}).
    Raises ``MtomError`` for more than ``max_parts`` parts, a part's headers over ``max_header_bytes``,
    or two parts with one Content-ID."""
    mime, params = content_type_params(content_type)
    if mime != "multipart/related" or "boundary" not in params:
        raise MtomError("not multipart/related with a boundary")
    delimiter = b"--" + params["boundary"].encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MtomError("MIME boundary not found")
    parts: list[tuple[dict[str, str], bytes]] = []
    pos = start + len(delimiter)
    closed = False
    while True:
        if body[pos:pos + 2] == b"--":
            closed = True
            break
        nxt = body.find(b"\r\n" + delimiter, pos)
        if nxt < 0:
            break
        chunk = body[pos:nxt]
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MtomError("MIME part without a header block")
        if len(head) > max_header_bytes:
            raise MtomError(f"MIME part headers longer than {max_header_bytes} bytes")
        if len(parts) >= max_parts:
            raise MtomError(f"more than {max_parts} MIME parts")
        parts.append((_headers(head), content))
        pos = nxt + 2 + len(delimiter)
    if not closed:
        raise MtomError("multipart body is truncated: the closing boundary never came")
    if not parts:
        raise MtomError("multipart body has no parts")
    _unique([_cid(h["content-id"]) for h, _ in parts if h.get("content-id")])
    by_id = {_cid(h.get("content-id", "")): (h.get("content-type", "application/octet-stream"), c)
             for h, c in parts[1:] if h.get("content-id")}
    root_headers, root = parts[0][0], parts[0][1]
    if "start" in params:
        wanted = _cid(params["start"])
        if _cid(root_headers.get("content-id", "")) != wanted:
            match = [(h, c) for h, c in parts if _cid(h.get("content-id", "")) == wanted]
            if not match:
                raise MtomError(f"start part <{wanted}> not found")
            root_headers, root = match[0]
            by_id = {_cid(h.get("content-id", "")): (h.get("content-type", ""), c)
                     for h, c in parts if h.get("content-id") and _cid(h["content-id"]) != wanted}
    return root, root_headers.get("content-type", ""), by_id


def _unique(content_ids) -> None:
    seen = set()
    for cid in content_ids:
        if cid in seen:
            raise MtomError(f"two MIME parts have Content-ID <{cid}>")
        seen.add(cid)


def unreferenced(root: etree._Element, content_ids) -> list[str]:
    """The parts' Content-IDs that no ``xop:Include`` under ``root`` names, in their order."""
    named = {cid for _, cid in include_refs(root)}
    return [cid for cid in content_ids if cid not in named]


def inline_includes(root: etree._Element, parts: dict[str, tuple[str, bytes]]) -> None:
    """Replace every ``xop:Include`` by the base64 of the part it references."""
    for inc in list(root.iter(f"{{{XOP}}}Include")):
        cid = _cid(inc.get("href", ""))
        if cid not in parts:
            raise MtomError(f"xop:Include references unknown part cid:{cid}")
        parent = inc.getparent()
        parent.remove(inc)
        parent.text = base64.b64encode(parts[cid][1]).decode("ascii")


def build(root_xml: bytes, attachments: list[tuple[str, str, bytes]] = (),
          action: str = "") -> tuple[str, bytes]:
    """Return (Content-Type header, body) of an MTOM message with ``attachments`` (cid, type, bytes)."""
    body = StreamedBody(root_xml, [OutPart(cid, ctype, data=data) for cid, ctype, data in attachments], action)
    return body.content_type, b"".join(body)


# ---------------------------------------------------------------- streaming (large documents)
#
# The functions above hold whole messages in memory, which suits SOAP envelopes and manifests.
# What follows reads and writes multipart/related bodies chunk by chunk: the root part (the SOAP
# envelope) is kept in memory up to a limit, every other part goes to a file in a spool directory,
# hashed (SHA-1, as XDS wants it) and counted while it is written.

CHUNK = 1024 * 1024


@dataclass
class Attachment:
    """One received MIME part, spooled to ``path``, or held in ``data`` (then ``path`` is None)."""

    content_id: str
    content_type: str
    path: Path | None
    size: int
    sha1: str
    error: str = ""      # why the part could not be spooled (a full disk): the handler reports it
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.path is None else self.path.read_bytes()


@dataclass
class SpooledMessage:
    root: bytes
    root_type: str
    attachments: dict[str, Attachment] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the spool files nobody took (a store takes one by renaming it away)."""
        for a in self.attachments.values():
            if a.path is not None:
                a.path.unlink(missing_ok=True)


class _FileSink:
    def __init__(self, spool_dir: Path):
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="part-", suffix=".spool")
        self.path, self.file = Path(name), os.fdopen(fd, "wb", buffering=CHUNK)
        self.hash, self.size, self.error = hashlib.sha1(), 0, ""

    def write(self, data) -> None:
        if data and not self.error:
            self.hash.update(data)
            self.size += len(data)
            try:
                self.file.write(data)
            except OSError as e:
                # Keep reading the message (its other parts and the answer still matter); this
                # part is lost, and the attachment says why.
                self.error = f"cannot spool the part: {e.strerror or e}"
                with contextlib.suppress(OSError):
                    self.file.close()
                self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.error:
            return
        try:
            self.file.close()
        except OSError as e:
            self.error = f"cannot spool the part: {e.strerror or e}"
            self.path.unlink(missing_ok=True)


class _HeldSink:
    """A part held in memory while the message's ``allowance`` (a one-item list, shared by its
    parts) lasts; past it, the part spills to a spool file."""

    def __init__(self, spool_dir: Path, allowance: list[int]):
        self.spool_dir, self.allowance = spool_dir, allowance
        self.data, self.file = bytearray(), None

    def write(self, data) -> None:
        if self.file is None and len(data) <= self.allowance[0]:
            self.allowance[0] -= len(data)
            self.data += data
            return
        if self.file is None:
            self.file = _FileSink(self.spool_dir)
            self.file.write(self.data)
            self.allowance[0] += len(self.data)
            self.data = bytearray()
        self.file.write(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def fill(self, a: Attachment) -> None:
        if self.file is not None:
            f = self.file
            a.path, a.size, a.sha1, a.error = f.path, f.size, f.hash.hexdigest(), f.error
        else:
            a.data, a.size, a.sha1 = bytes(self.data), len(self.data), hashlib.sha1(self.data).hexdigest()

    def drop(self) -> None:
        if self.file is not None:
            self.file.path.unlink(missing_ok=True)


class _MemorySink:
    def __init__(self, limit: int):
        self.data, self.limit = bytearray(), limit

    def write(self, data) -> None:
        if len(self.data) + len(data) > self.limit:
            raise MtomError(f"the SOAP part is larger than {self.limit} bytes")
        self.data += data

    def close(self) -> None:
        pass


class _Reader:
    """Reads at most ``length`` bytes (or to EOF when length is None) from a binary stream."""

    def __init__(self, stream: BinaryIO, length: int | None):
        self.stream, self.left = stream, length

    def read(self) -> bytes:
        want = CHUNK if self.left is None else min(CHUNK, self.left)
        if want <= 0:
            return b""
        data = self.stream.read(want)
        if self.left is not None:
            self.left -= len(data)
        return data


def read_multipart(stream: BinaryIO, content_type: str, spool_dir: str | os.PathLike,
                   length: int | None = None, max_root_bytes: int = 20 * 1024 * 1024,
                   memory_budget: int = 0, max_parts: int = MAX_PARTS,
                   max_header_bytes: int = MAX_PART_HEADER_BYTES) -> SpooledMessage:
    """Read a multipart/related body from ``stream``: its attachments are spooled to files, or,
    up to ``memory_budget`` bytes in all, held in memory (a file costs more than small parts do).

    Accepts CRLF line ends (RFC 2046) and, because several test kits' captured messages have
    them, bare LF. Raises ``MtomError`` for a missing boundary, a truncated body, a missing start
    part, more than ``max_parts`` parts, a part's headers over ``max_header_bytes``, two parts with
    one Content-ID; spool files already written are deleted then. A part without a Content-ID is
    kept under a key no Content-ID can be (``<part N>``): nothing can reference it.
    """
    mime, params = content_type_params(content_type)
    if mime != "multipart/related" or not params.get("boundary"):
        raise MtomError("not multipart/related with a boundary")
    dash_boundary = b"--" + params["boundary"].encode("latin-1")
    start = _cid(params["start"]) if params.get("start") else None
    spool_dir = Path(spool_dir)
    reader = _Reader(stream, length)
    message = SpooledMessage(b"", "")
    root_found, allowance, sink = False, [memory_budget], None
    try:
        buf = bytearray()
        # Preamble, then the first boundary line tells which line end this body uses.
        while True:
            at = buf.find(dash_boundary)
            if at >= 0 and (nl := buf.find(b"\n", at)) >= 0:
                break
            if at < 0 and len(buf) > max_header_bytes:
                raise MtomError("MIME boundary not found")
            chunk = reader.read()
            if not chunk:
                raise MtomError("MIME boundary not found")
            buf += chunk
        eol = b"\r\n" if buf[nl - 1:nl] == b"\r" else b"\n"
        delimiter = eol + dash_boundary
        del buf[:nl + 1]
        index, seen = 0, set()
        while True:
            if index >= max_parts:
                raise MtomError(f"more than {max_parts} MIME parts")
            headers, buf = _read_headers(reader, buf, eol, max_header_bytes)
            cid = _cid(headers.get("content-id", ""))
            key = cid or f"<part {index}>"
            if (cid and cid in seen) or key in message.attachments:
                raise MtomError(f"two MIME parts have Content-ID <{cid}>")
            seen.add(cid)
            ctype = headers.get("content-type", "application/octet-stream")
            encoding = headers.get("content-transfer-encoding", "binary").lower()
            if encoding not in ("binary", "8bit", "7bit"):
                raise MtomError(f"Content-Transfer-Encoding {encoding} is not allowed in MTOM")
            if (cid or f"part{index}") in message.attachments:     # its first part's file would leak
                raise MtomError(f"Content-ID <{cid}> is repeated" if cid else "a part's name is repeated")
            is_root = not root_found and (cid == start if start else index == 0)
            if is_root:
                sink = _MemorySink(max_root_bytes)
            elif memory_budget:
                sink = _HeldSink(spool_dir, allowance)
            else:
                sink = _FileSink(spool_dir)
                message.attachments[key] = Attachment(cid, ctype, sink.path, 0, "")
            buf, closed = _copy_body(reader, buf, delimiter, sink)
            sink.close()
            if is_root:
                message.root, message.root_type, root_found = bytes(sink.data), ctype, True
            elif isinstance(sink, _HeldSink):
                a = message.attachments[key] = Attachment(cid, ctype, None, 0, "")
                sink.fill(a)
            else:
                a = message.attachments[key]
                a.size, a.sha1, a.error = sink.size, sink.hash.hexdigest(), sink.error
            sink = None
            index += 1
            if closed:
                break
        if not root_found:
            raise MtomError(f"start part <{start}> not found" if start else "multipart body has no parts")
        while reader.read():       # the epilogue: read and ignore
            pass
        return message
    except BaseException:
        if isinstance(sink, _HeldSink):
            sink.drop()
        message.discard()
        raise


def _read_headers(reader: _Reader, buf: bytearray, eol: bytes,
                  max_bytes: int) -> tuple[dict[str, str], bytearray]:
    end = eol + eol
    while True:
        # The buffer is consumed from its front with del (cheap for a bytearray); slicing off the
        # rest would copy up to a read's worth of the body once per part.
        if buf.startswith(eol):          # a part with no headers at all
            del buf[:len(eol)]
            return {}, buf
        at = buf.find(end)
        if at > max_bytes:
            raise MtomError(f"MIME part headers longer than {max_bytes} bytes")
        if at >= 0:
            raw = bytes(buf[:at]).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            del buf[:at + len(end)]
            return _headers(raw), buf
        if len(buf) > max_bytes:
            raise MtomError(f"MIME part headers longer than {max_bytes} bytes, or never ended")
        chunk = reader.read()
        if not chunk:
            raise MtomError("multipart body is truncated inside a part's headers")
        buf += chunk


def _copy_body(reader: _Reader, buf: bytearray, delimiter: bytes, sink) -> tuple[bytearray, bool]:
    """Copy a part's content to ``sink`` up to the next delimiter; return (rest, closed)."""
    keep = len(delimiter) + 2
    while True:
        at = buf.find(delimiter)
        if at >= 0:
            after = at + len(delimiter)
            while len(buf) < after + 2:
                chunk = reader.read()
                if not chunk:
                    raise MtomError("multipart body is truncated: the closing boundary never came")
                buf += chunk
            sink.write(memoryview(buf)[:at])
            if buf[after:after + 2] == b"--":
                return bytearray(), True
            nl = buf.find(b"\n", after)       # skip transport padding after the delimiter
            while nl < 0:
                chunk = reader.read()
                if not chunk:
                    raise MtomError("multipart body is truncated after a boundary")
                buf += chunk
                nl = buf.find(b"\n", after)
            del buf[:nl + 1]
            return buf, False
        if len(buf) > keep:
            cut = len(buf) - keep
            sink.write(memoryview(buf)[:cut])
            del buf[:cut]
        chunk = reader.read()
        if not chunk:
            raise MtomError("multipart body is truncated: the closing boundary never came")
        buf += chunk


def spool(data: bytes, spool_dir: str | os.PathLike, content_id: str = "") -> Attachment:
    """Bytes already in memory (a decoded inline document) as a spooled, hashed attachment."""
    sink = _FileSink(Path(spool_dir))
    sink.write(data)
    sink.close()
    return Attachment(content_id, "application/octet-stream", sink.path, sink.size,
                      sink.hash.hexdigest(), sink.error)


def include_refs(root: etree._Element) -> list[tuple[etree._Element, str]]:
    """Every ``xop:Include`` under root with the content-id it references."""
    return [(inc, _cid(inc.get("href", ""))) for inc in root.iter(f"{{{XOP}}}Include")]


@dataclass
class OutPart:
    """A part to send: from ``path`` (streamed) or ``data``."""

    content_id: str
    content_type: str
    path: Path | None = None
    data: bytes = b""
    file: BinaryIO | None = None     # an open file (from a content store), read from where it is


class StreamedBody:
    """An MTOM body written chunk by chunk: iterate it (a WSGI app_iter or an HTTP request body)."""

    def __init__(self, root_xml: bytes, parts: list[OutPart] = (), action: str = ""):
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
        root_id = f"root.{uuid.uuid4().hex}@xdsi"
        self.content_type = (f'multipart/related; boundary="{boundary}"; type="{XOP_MIME}"; '
                             f'start="<{root_id}>"; start-info="application/soap+xml"'
                             + (f'; action="{action}"' if action else ""))
        self._pieces: list[bytes | OutPart] = [
            f"--{boundary}\r\nContent-Type: {XOP_MIME}; charset=UTF-8; type=\"application/soap+xml\"\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <{root_id}>\r\n\r\n".encode(), root_xml]
        for p in parts:
            self._pieces += [f"\r\n--{boundary}\r\nContent-Type: {p.content_type}\r\n"
                             f"Content-Transfer-Encoding: binary\r\nContent-ID: <{p.content_id}>\r\n\r\n".encode(), p]
        self._pieces.append(f"\r\n--{boundary}--\r\n".encode())
        # Open files now: the sizes announced are those of what will be sent.
        self._files = {id(p): p.file or open(p.path, "rb") for p in parts
                       if p.path is not None or p.file is not None}
        self.length = sum(len(p) if isinstance(p, bytes) else self._size(p) for p in self._pieces)

    def _size(self, part: OutPart) -> int:
        f = self._files.get(id(part))
        return os.fstat(f.fileno()).st_size if f else len(part.data)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for piece in self._pieces:
                if isinstance(piece, bytes):
                    yield piece
                elif id(piece) in self._files:
                    f = self._files[id(piece)]
                    while chunk := f.read(CHUNK):
                        yield chunk
                else:
                    yield piece.data
        finally:
            self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
