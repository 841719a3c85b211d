"""MTOM/XOP: multipart/related messages whose root part is SOAP with ``xop:Include`` references."""
from __future__ import annotations

import base64
import uuid
from email.message import Message
from urllib.parse import unquote

from lxml import etree

XOP = "http://www.w3.org/2004/08/xop/include"
XOP_MIME = "application/xop+xml"


class MtomError(ValueError):
    """The multipart body is not a usable MTOM message."""


def content_type_params(header: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = header or ""
    params = {k.lower(): v for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


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


def split(body: bytes, content_type: str) -> tuple[bytes, str, dict[str, tuple[str, bytes]]]:
    """Return (root part bytes, root part content type, {content-id: (content type, bytes)})."""
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
        parts.append((_headers(head), content))
        pos = nxt + 2 + len(delimiter)
    if not closed:
        raise MtomError("multipart body is truncated: the closing boundary never came")
    if not parts:
        raise MtomError("multipart body has no parts")
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
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@xdsi"
    out = [f"--{boundary}\r\nContent-Type: {XOP_MIME}; charset=UTF-8; type=\"application/soap+xml\"\r\n"
           f"Content-Transfer-Encoding: binary\r\nContent-ID: <{root_id}>\r\n\r\n".encode(), root_xml]
    for cid, ctype, data in attachments:
        out += [f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: <{cid}>\r\n\r\n".encode(), data]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    header = (f'multipart/related; boundary="{boundary}"; type="{XOP_MIME}"; '
              f'start="<{root_id}>"; start-info="application/soap+xml"'
              + (f'; action="{action}"' if action else ""))
    return header, b"".join(out)
