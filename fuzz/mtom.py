"""The MTOM reader (``affinity_domain.mtom``) as the SOAP door uses it: the streamed reader, with
attachments spooled to files or held in memory, and the in-memory split; then the XOP includes
inlined into the parsed root. The input is ``Content-Type`` value, a newline, then the body.

Documented errors: ``mtom.MtomError`` and ``xmlsafe.UnsafeXml``. Also a crash: a spool file left
behind, whatever the outcome (the reader deletes its files on error; the caller discards them)."""
from __future__ import annotations

import io
import os
import tempfile

from fuzz.harness import instrumented, main

with instrumented("affinity_domain.mtom"):
    from affinity_domain import mtom, xmlsafe

ALLOWED = (mtom.MtomError, xmlsafe.UnsafeXml)
# In memory where the system has it: the reader writes a spool file for every part it reads.
SPOOL = tempfile.mkdtemp(prefix="xdsi-fuzz-mtom-spool-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def _inline(root_xml: bytes, parts: dict[str, tuple[str, bytes]]) -> None:
    root = xmlsafe.parse(root_xml, 1 << 20)
    mtom.inline_includes(root, parts)


def test_one_input(data: bytes) -> None:
    head, _, body = data.partition(b"\n")
    content_type = head.decode("latin-1")
    for budget in (0, 1 << 16):
        try:
            message = mtom.read_multipart(io.BytesIO(body), content_type, SPOOL, len(body) if budget else None,
                                          max_root_bytes=1 << 20, memory_budget=budget)
        except ALLOWED:
            message = None
        if message is not None:
            try:
                parts = {cid: (a.content_type, a.read()) for cid, a in message.attachments.items()}
                _inline(message.root, parts)
            except ALLOWED:
                pass
            finally:
                message.discard()
        left = os.listdir(SPOOL)
        if left:
            raise AssertionError(f"spool files left behind: {left}")
    try:
        root, _, parts = mtom.split(body, content_type)
        _inline(root, parts)
    except ALLOWED:
        pass


def seeds() -> list[bytes]:
    """MTOM requests as the tests send them (tests/xds.py) and as ``mtom.build`` writes them, with
    and without attachments, CRLF and bare LF."""
    from tests.xds import Doc, envelope, mtom as test_mtom, submission
    from affinity_domain import ns
    soap = envelope(ns.REGISTER, submission("P1^^^&1.2.3&ISO", [Doc()]))
    out = []
    body, ctype = test_mtom(soap, ns.REGISTER)
    out.append(ctype.encode() + b"\n" + body)
    xop = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><Document>'
           b'<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:doc1@x"/>'
           b'</Document></s:Body></s:Envelope>')
    built_type, built = mtom.build(xop, [("doc1@x", "application/dicom", b"DICM" * 16),
                                         ("doc2@x", "text/plain", b"hi")])
    out.append(built_type.encode() + b"\n" + built)
    out.append(built_type.encode() + b"\n" + built.replace(b"\r\n", b"\n"))
    return out


if __name__ == "__main__":
    main("mtom", test_one_input, seeds)
