"""HL7 v2, the one reader every door uses: check a message's framing rules, split it into segments
and fields (time in proportion to its size), read CX identifiers, build original-mode ACKs with ERR."""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass

from .exceptions import XdsiError

_counter = itertools.count(1)


class Hl7Error(ValueError, XdsiError):
    """A message we must reject; ``code`` is an HL7 table 0357 error code."""

    permanent = True

    def __init__(self, text: str, code: str = "207", location: str = "", ack: str = "AE"):
        super().__init__(text)
        self.text, self.code, self.location, self.ack = text, code, location, ack


@dataclass(frozen=True)
class Cx:
    """A CX identifier ``id^^^namespace&oid&ISO``."""

    id: str
    authority: str          # the universal id (OID) of the assigning authority
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.id}^^^{self.namespace}&{self.authority}&ISO"

    @classmethod
    def parse(cls, value: str) -> "Cx":
        parts = value.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else [""]
        return cls(parts[0], authority[1] if len(authority) > 1 else "", authority[0])


def decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r") + "\r"


_SEGMENT = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def check_structure(raw: bytes) -> str:
    """The framing rules every message must keep (MSH first, standard encoding characters, segment
    names, a message type with its trigger event); the decoded text."""
    text = decode(raw)
    if not text.startswith("MSH"):
        raise Hl7Error("message does not start with MSH", code="100", location="MSH", ack="AR")
    if len(text) < 8 or text[3:8] != "|^~\\&":
        raise Hl7Error("MSH-1/MSH-2 must be '|' and '^~\\&'", code="207", location="MSH^1^2", ack="AR")
    for n, line in enumerate(text.split("\r")):
        if line and not _SEGMENT.match(line[:3]) or (line and len(line) > 3 and line[3] != "|"):
            raise Hl7Error(f"segment {n + 1} is not a segment", code="100", location=line[:3], ack="AR")
    kind = _msh_of_text(text)["type"]
    if len(kind.split("^")) < 2 and not kind.startswith("ACK"):
        raise Hl7Error("MSH-9 needs a message type and trigger event", code="100", location="MSH^1^9", ack="AR")
    return text


Segments = dict[str, list[list[str]]]


def read(raw: bytes) -> Segments:
    """A message that keeps the framing rules (``check_structure``), split (``read_segments``)."""
    return read_segments(check_structure(raw))


def read_segments(text: str) -> Segments:
    """ER7 text, split: segment name -> each occurrence's fields, split on ``|`` so that field n is
    at index n (MSH-n at n - 1, MSH-1 being the separator itself)."""
    out: Segments = {}
    for line in text.split("\r"):
        if line:
            fields = line.split("|")
            out.setdefault(fields[0], []).append(fields)
    return out


def first_segment(text: str, name: str) -> list[str] | None:
    """The fields of the first ``name`` segment (see ``read_segments``), or None."""
    found = read_segments(text).get(name)
    return found[0] if found else None


def accepted(reply: str) -> bool:
    """An ACK's MSA-1 accepts the message: AA, or CA (enhanced mode)."""
    msa = first_segment(reply, "MSA")
    return msa is not None and len(msa) > 1 and msa[1] in ("AA", "CA")


def field(segment: list[str] | None, n: int) -> str:
    """Field n's first repetition, without trailing empty components (``Doe^Jane^^`` is ``Doe^Jane``)."""
    if segment is None or n >= len(segment):
        return ""
    return segment[n].split("~", 1)[0].rstrip("^")


def identifiers(value: str) -> list[Cx]:
    """Each repetition of a CX field (PID-3, MRG-1, ...), empty ones left out."""
    return [Cx.parse(rep) for rep in value.split("~") if rep]


def msh_fields(raw: bytes) -> dict[str, str]:
    """MSH fields, read so that even a message that breaks the framing rules gets an ACK."""
    return _msh_of_text(decode(raw))


def _msh_of_text(text: str) -> dict[str, str]:
    msh = text.split("\r", 1)[0].split("|")
    get = lambda i: msh[i - 1] if len(msh) >= i else ""  # noqa: E731 -- MSH-n is list index n-1
    return {"sending_app": get(3), "sending_facility": get(4), "receiving_app": get(5),
            "receiving_facility": get(6), "type": get(9), "control_id": get(10),
            "processing": get(11) or "P", "version": get(12).split("^")[0] or "2.3.1"}


def ack(raw: bytes, code: str = "AA", error: Hl7Error | None = None,
        application: str = "XDSI", facility: str = "XDSI") -> bytes:
    """An original-mode ACK answering ``raw`` (written directly: it is on every message's path)."""
    msh = msh_fields(raw)
    version = msh["version"] if msh["version"] in ("2.3.1", "2.4", "2.5", "2.5.1") else "2.5"
    trigger = msh["type"].split("^")[1] if "^" in msh["type"] else ""
    # The sender's fields are echoed as they came: they are already encoded HL7.
    text = "|".join(["MSH", "^~\\&", application, facility, msh["sending_app"], msh["sending_facility"],
                     time.strftime("%Y%m%d%H%M%S"), "", f"ACK^{trigger}^ACK" if trigger else "ACK",
                     f"XDSI{time.time_ns()}{next(_counter)}", msh["processing"], version])
    text += f"\rMSA|{code}|{msh['control_id']}"
    if error is not None:
        text += "\r" + err_segment(error, version)
    return framable(text + "\r").encode("utf-8")


def framable(text: str) -> str:
    """A reply that echoes a peer's fields, with MLLP's framing bytes in them as HL7 hex escapes: an
    echoed 0x1C before a segment's end would end the reply's frame early."""
    return text.replace("\x0b", "\\X0B\\").replace("\x1c", "\\X1C\\")


def escape(text: str) -> str:
    """Text as an HL7 v2 field value: the standard encoding characters as escape sequences."""
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\"))


def err_segment(error: Hl7Error, version: str) -> str:
    """``error.location`` is an ERL: segment^sequence^field^repetition^component^subcomponent."""
    loc = error.location.split("^")
    text = escape(error.text)[:200]
    if version == "2.3.1":  # ERR-1 ELD: segment^sequence^field^code&text
        loc = (loc + ["", "", ""])[:3]
        return f"ERR|{loc[0]}^{loc[1] or 1}^{loc[2]}^{error.code}&{text}"
    if len(loc) > 1 and not loc[1]:
        loc[1] = "1"
    return f"ERR||{'^'.join(loc)}|{error.code}^{text}^HL70357|E"
