"""Reading a Part-10 instance's layout without decoding it: where its dataset starts, its transfer
syntax, and the byte span of each top-level element.

pydicom builds an element object per element it walks (a few microseconds each, a few hundred per
CT header); the imaging source's intake and the consumer's reconciliation only need a handful of
them decoded. ``top_level`` finds every top-level element's bytes with ``struct`` alone (stepping
over sequences and encapsulated pixel data by their delimiters), so only the wanted ones are handed
to pydicom. Little endian only: big endian and deflated instances go to pydicom whole.
"""
from __future__ import annotations

import functools
import struct

from pydicom.uid import UID

from .exceptions import XdsiError

ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a reserved field and a 4-byte length (PS3.5 7.1.2)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

_TAG_LENGTH = struct.Struct("<HHI")          # group, element, 4-byte length (implicit VR, items)
_EXPLICIT = struct.Struct("<HH2sH")          # group, element, VR, 2-byte length
_LENGTH = struct.Struct("<I")                # the 4-byte length after a long VR
MAX_DEPTH = 64                               # sequences in items in sequences...: far past any real IOD


class Unreadable(ValueError, XdsiError):
    """The bytes are not a well-formed little endian dataset (or use a form this does not walk)."""

    permanent = True


class NotWalked(Unreadable):
    """The dataset uses a form this does not walk (UN of undefined length): pydicom's to read."""


def dataset_offset(head: bytes) -> int | None:
    """Where the dataset starts in a Part-10 file (after preamble and meta), from its first bytes;
    None when the meta does not open with its group length (PS3.10 requires it)."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + struct.unpack_from("<I", head, 140)[0]


@functools.lru_cache(maxsize=64)
def implicit_vr(syntax: str) -> bool | None:
    """Whether a transfer syntax encodes datasets in implicit VR, for the ones ``top_level`` walks
    (little endian, not deflated); None for any other, or a uid that is no known transfer syntax."""
    try:
        uid = UID(syntax)
        if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
            return None
        return uid.is_implicit_VR
    except ValueError:
        return None


def file_meta(data: bytes) -> tuple[dict[int, str], int] | None:
    """The text of each meta element of a Part-10 file's bytes by tag (UIDs, AE titles; binary
    values as latin-1), and where the dataset starts; None when the meta does not open with its
    group length."""
    end = dataset_offset(data[:256])
    if end is None:
        return None
    return {tag: bytes(data[value_start:stop]).rstrip(b"\0 ").decode("latin-1")
            for tag, _, value_start, stop in top_level(data, 144, end, implicit=False)}, end


def transfer_syntax(data: bytes) -> tuple[str, int] | None:
    """(Transfer Syntax UID, where the dataset starts) of a Part-10 file's bytes, read off its
    meta without decoding it; None when the meta does not open with its group length."""
    found = file_meta(data)
    if found is None or 0x00020010 not in found[0]:
        return None
    return found[0][0x00020010], found[1]


def _header(data, at: int, implicit: bool) -> tuple[int, int, int, bytes | None]:
    """(tag, value start, value length, VR) of the element at ``at``."""
    group, element, length = _TAG_LENGTH.unpack_from(data, at)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, at + 8, length, None
    _, _, vr, short = _EXPLICIT.unpack_from(data, at)
    if vr in LONG_VRS:
        return tag, at + 12, _LENGTH.unpack_from(data, at + 8)[0], vr
    return tag, at + 8, short, vr


def _skip_sequence(data, at: int, implicit: bool, depth: int = 0) -> int:
    """Past the delimiter of an undefined-length sequence (or encapsulated pixel data) whose
    items start at ``at``."""
    if depth > MAX_DEPTH:
        raise Unreadable(f"sequences nested deeper than {MAX_DEPTH}")
    while True:
        tag, value_at, length, _ = _header(data, at, True)
        if tag == SEQUENCE_END:
            return value_at
        if tag != ITEM:
            raise Unreadable(f"expected an item at {at}")
        at = value_at + length if length != UNDEFINED else _skip_item(data, value_at, implicit, depth)


def _skip_item(data, at: int, implicit: bool, depth: int) -> int:
    """Past the delimiter of an undefined-length item whose elements start at ``at``."""
    while True:
        tag, value_at, length, vr = _header(data, at, implicit)
        if tag == ITEM_END:
            return value_at
        at = _element_end(data, value_at, length, vr, implicit, depth + 1)


def _element_end(data, value_at: int, length: int, vr, implicit: bool, depth: int = 0) -> int:
    if length != UNDEFINED:
        end = value_at + length
        if end > len(data):
            raise Unreadable("an element runs past the end of the data")
        return end
    if vr == b"UN":
        raise NotWalked("UN with undefined length")       # its content is implicit VR: pydicom's job
    return _skip_sequence(data, value_at, implicit, depth)


def top_level(data: bytes, start: int, end: int | None = None, implicit: bool = False):
    """(tag, element start, value start, element end) of each top-level element from ``start`` to
    ``end`` (the end of ``data`` by default)."""
    # The helpers above, inlined for the common case: this loop runs once per element of every
    # instance the source receives and the consumer reconciles.
    end = len(data) if end is None else end
    size, at = len(data), start
    try:
        while at < end:
            if implicit:
                group, element, length = _TAG_LENGTH.unpack_from(data, at)
                value_at, vr = at + 8, None
            else:
                group, element, vr, length = _EXPLICIT.unpack_from(data, at)
                if group == 0xFFFE:
                    _, value_at, length, vr = _header(data, at, False)
                elif vr in LONG_VRS:
                    length, value_at = _LENGTH.unpack_from(data, at + 8)[0], at + 12
                else:
                    value_at = at + 8
            if length == UNDEFINED:
                stop = _element_end(data, value_at, length, vr, implicit)
            else:
                stop = value_at + length
                if stop > size:
                    raise Unreadable("an element runs past the end of the data")
            yield group << 16 | element, at, value_at, stop
            at = stop
    except struct.error:
        raise Unreadable(f"the data ends inside an element header at {at}") from None
