"""WADO-RS (PS3.18 10.4, RAD-107) and WADO-URI (PS3.18 9, RAD-55) decisions, pure: what an Accept
header allows, in which transfer syntax each instance goes out, and which frames are asked for.

An instance goes out as stored when its syntax (or ``transfer-syntax=*``) is accepted; an
uncompressed one may be re-encoded into another uncompressed syntax; anything else is not sent
(never decoded and re-encoded with a loss). The default for application/dicom is Explicit VR
Little Endian (PS3.18 Table 8.7.3-2)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from affinity_domain.transfer_syntax import UNCOMPRESSED
from affinity_domain.uids import is_uid

from .errors import DicomWebError, bad, not_acceptable

ANY = "*"
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
DICOM_JSON = "application/dicom+json"
# the media type of a compressed frame, by transfer syntax (PS3.18 Table 8.7.3-4)
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


@dataclass(frozen=True)
class MediaRange:
    type: str                   # e.g. multipart/related, application/dicom, */*
    part_type: str              # the multipart's type= parameter ("" when none)
    transfer_syntax: str        # "" when none, "*" for as stored
    q: float


_PARAM = re.compile(r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


def accept(header: str) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (an absent header accepts anything)."""
    ranges = []
    for order, item in enumerate(_split(header or "*/*")):
        head, _, rest = item.partition(";")
        params = {k.lower(): v.strip('"') for k, v in _PARAM.findall(";" + rest)} if rest else {}
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            raise bad(f"Accept has a q value that is no number: {item!r}") from None
        if q <= 0:
            continue
        ranges.append((-q, order, MediaRange(head.strip().lower(), params.get("type", "").lower(),
                                             params.get("transfer-syntax", ""), q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: t[:2])]


def _split(header: str) -> list[str]:
    """Comma-separated items, commas in quoted strings kept."""
    items, current, quoted = [], "", False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i.strip() for i in items if i.strip()]


def accepts(r: MediaRange, part_type: str) -> bool:
    if r.type in ("*/*", "multipart/*"):
        return True
    return r.type == "multipart/related" and r.part_type in ("", "*", "*/*", part_type,
                                                             part_type.split("/")[0] + "/*")


def syntaxes(ranges: list[MediaRange], part_type: str = DICOM) -> list[str]:
    """The transfer syntaxes a multipart/related of ``part_type`` parts may use, preferred first
    ("*": as stored); 406 when the Accept header allows no such response."""
    wanted = []
    for r in ranges:
        if not accepts(r, part_type):
            continue
        ts = r.transfer_syntax or (ExplicitVRLittleEndian if r.type == "multipart/related" else ANY)
        if ts != ANY and not is_uid(ts):
            raise bad(f"transfer-syntax {ts!r} is not a UID")
        if ts not in wanted:
            wanted.append(ts)
    if not wanted:
        raise not_acceptable(f'this resource is multipart/related; type="{part_type}"; '
                             f"the Accept header allows none of it")
    return wanted


# compressed syntaxes pydicom decodes by itself, without loss: such instances may go out uncompressed
DECODABLE = (RLELossless,)


def outgoing(stored: str, wanted: list[str]) -> str | None:
    """The transfer syntax an instance stored in ``stored`` is sent in; None when none wanted can be
    made from it without loss."""
    for ts in wanted:
        if ts == ANY or ts == stored:
            return stored
        if (stored in UNCOMPRESSED or stored in DECODABLE) and ts in UNCOMPRESSED:
            return ts
    return None


def frame_numbers(text: str, max_frames: int) -> list[int]:
    """A frame list (``1,3,5``) as 1-based numbers, each a positive whole number."""
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t.isascii() or not t.isdigit() or len(t) > 9 or int(t) < 1 for t in items):
        raise bad(f"frame list {text!r} is not a comma-separated list of frame numbers from 1")
    if len(items) > max_frames:
        raise DicomWebError("413 Payload Too Large", f"at most {max_frames} frames in one request")
    return [int(t) for t in items]


def frame_type(stored: str, ranges: list[MediaRange]) -> str | None:
    """The media type frames of an instance stored in ``stored`` go out as (native frames are
    application/octet-stream; compressed ones their image type, or octet-stream when
    ``transfer-syntax=*`` is accepted); None when the Accept header allows neither."""
    native = stored in UNCOMPRESSED or stored not in FRAME_TYPES
    for r in ranges:
        if native:
            if accepts(r, OCTETS):
                return OCTETS
            continue
        image = FRAME_TYPES[stored]
        if r.type in ("*/*", "multipart/*") or (r.type == "multipart/related" and r.part_type in
                                                 ("", "*", "*/*", image, "image/*")):
            return image
        if accepts(r, OCTETS) and r.transfer_syntax in (ANY, stored):
            return OCTETS
    return None
