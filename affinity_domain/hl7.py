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

    def __init__(self, text: str, code: str = "207", location: str = "", ack: str = "AE", severity: str = "E"):
        super().__init__(text)
        self.text, self.code, self.location, self.ack = text, code, location, ack
        self.severity = severity    # ERR-4 (table 0516): E refuses; W is a warning on an accepted message


NULL = '""'     # HL7's explicit null: "delete the value", never a value itself


def content(text: str) -> str:
    """A component as data: the explicit null ``""`` is no value."""
    return "" if text == NULL else text


@dataclass(frozen=True)
class Cx:
    """A CX identifier ``id^^^namespace&oid&ISO``."""

    id: str
    authority: str          # the universal id (OID) of the assigning authority
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.id}^^^{self.namespace}&{self.authority}&ISO"

    @property
    def key(self) -> tuple[str, str]:
        """What names the identifier: the id within its domain's universal id (the namespace only
        labels the domain, and may be left out or spelt differently by each peer)."""
        return self.authority, self.id

    @classmethod
    def parse(cls, text: str) -> "Cx":
        parts = text.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else [""]
        return cls(content(parts[0]), content(authority[1]) if len(authority) > 1 else "", content(authority[0]))


def authority_error(text: str, location: str) -> Hl7Error | None:
    """What is wrong with a CX's assigning authority (CX-4, an HD), if anything: HL7's HD has its
    universal id and universal id type both valued or both empty, and ITI TF-2x Appendix E wants
    the type ISO (the domains are OIDs). ``location`` is the CX's ERL (``PID^1^3^2``)."""
    parts = text.split("^")
    hd = [content(p) for p in (parts[3].split("&") if len(parts) > 3 else [])] + ["", "", ""]
    universal, kind = hd[1], hd[2]
    if bool(universal) != bool(kind):
        missing = "universal ID type" if universal else "universal ID"
        return Hl7Error(f"assigning authority {parts[3]!r} has no {missing}", code="102",
                        location=f"{location}^4")
    if kind and kind != "ISO":
        return Hl7Error(f"assigning authority universal ID type {kind!r} is not ISO", code="102",
                        location=f"{location}^4")
    return None


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


def check_version(raw: bytes, accepted: tuple[str, ...]) -> str:
    """MSH-12's version id, when it is one of ``accepted``; else an AR (HL7 v2.5 2.9.2: MSH-12 not
    acceptable to the receiver is a reject)."""
    given = _msh_of_text(decode(raw))["version_id"]
    if not given:
        raise Hl7Error("MSH-12 (version id) is required", code="101", location="MSH^1^12", ack="AR")
    if given not in accepted:
        raise Hl7Error(f"version {given} is not supported here (supported: {', '.join(accepted)})",
                       code="203", location="MSH^1^12", ack="AR")
    return given


def msh_fields(raw: bytes) -> dict[str, str]:
    """MSH fields, read so that even a message that breaks the framing rules gets an ACK."""
    return _msh_of_text(decode(raw))


def _msh_of_text(text: str) -> dict[str, str]:
    msh = text.split("\r", 1)[0].split("|")
    get = lambda i: msh[i - 1] if len(msh) >= i else ""  # noqa: E731 -- MSH-n is list index n-1
    return {"sending_app": get(3), "sending_facility": get(4), "receiving_app": get(5),
            "receiving_facility": get(6), "type": get(9), "control_id": get(10),
            "processing": get(11) or "P", "version": get(12).split("^")[0] or "2.3.1",
            "version_id": content(get(12).split("^")[0])}


def ack(raw: bytes, code: str = "AA", error: Hl7Error | None = None,
        application: str = "XDSI", facility: str = "XDSI", warnings: list[Hl7Error] = ()) -> bytes:
    """An original-mode ACK answering ``raw`` (written directly: it is on every message's path);
    one ERR for ``error`` and one for each of ``warnings``."""
    msh = msh_fields(raw)
    version = msh["version"] if msh["version"] in ("2.3.1", "2.4", "2.5", "2.5.1") else "2.5"
    trigger = msh["type"].split("^")[1] if "^" in msh["type"] else ""
    # The sender's fields are echoed as they came: they are already encoded HL7.
    text = "|".join(["MSH", "^~\\&", application, facility, msh["sending_app"], msh["sending_facility"],
                     time.strftime("%Y%m%d%H%M%S"), "", f"ACK^{trigger}^ACK" if trigger else "ACK",
                     f"XDSI{time.time_ns()}{next(_counter)}", msh["processing"], version])
    text += f"\rMSA|{code}|{msh['control_id']}"
    for e in ([error] if error is not None else []) + list(warnings):
        text += "\r" + err_segment(e, version)
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
    if len(loc) > 1 and not loc[1]:
        loc[1] = "1"
    erl = f"{'^'.join(loc)}|{error.code}^{text}^HL70357|{error.severity}"
    if version == "2.3.1":  # ERR-1 ELD (segment^sequence^field^code&text) for 2.3.1 readers, then
        eld = (loc + ["", "", ""])[:3]   # ERR-2..4, which they ignore: 2.3.1 has no severity
        return f"ERR|{eld[0]}^{eld[1] or 1}^{eld[2]}^{error.code}&{text}|{erl}"
    return f"ERR||{erl}"
