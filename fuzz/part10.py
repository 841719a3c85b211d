"""The Part-10 walker (``affinity_domain.part10``): meta, transfer syntax and the top-level element
spans of any bytes, in both VR forms. Documented error: ``part10.Unreadable``; the spans it yields
must lie inside the data, in order."""
from __future__ import annotations

import struct

from fuzz.harness import instrumented, main

with instrumented("affinity_domain.part10"):
    from affinity_domain import part10

ALLOWED = (part10.Unreadable,)


def test_one_input(data: bytes) -> None:
    try:
        part10.transfer_syntax(data)
        start = part10.dataset_offset(data[:256])
    except ALLOWED:
        start = None
    for implicit in (False, True):
        at = start if start is not None and start <= len(data) else 0
        try:
            for _, begin, value, end in part10.top_level(data, at, implicit=implicit):
                if not (at <= begin < value <= end <= len(data)):
                    raise AssertionError(f"span {begin}..{value}..{end} outside {at}..{len(data)}")
                at = end
        except ALLOWED:
            pass


def _nested(depth: int) -> bytes:
    """Sequences of undefined length in items of undefined length, ``depth`` deep (explicit VR)."""
    open_ = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                                                      0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return open_ * depth + close * depth


def seeds() -> list[bytes]:
    """pydicom's test files (the ones tests/affinity_domain/test_part10.py walks), cut before their
    pixel data's value; and deep nesting."""
    from pydicom.data import get_testdata_file

    from tests.affinity_domain.test_part10 import FILES
    out, meta = [], b""
    for name in FILES:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        data = open(path, "rb").read()
        found = part10.transfer_syntax(data)
        offset = found[1] if found else 0
        implicit = bool(found and part10.implicit_vr(found[0]))
        cut = len(data)
        try:
            for tag, begin, value, _ in part10.top_level(data, offset, implicit=implicit):
                if tag == 0x7FE00010:
                    cut = min(len(data), value + 64)
                    break
        except part10.Unreadable:
            pass
        out.append(data[:min(cut, 16384)])
        if found and not implicit and not meta:
            meta = data[:offset]
    out.append(meta + _nested(4))
    return out


if __name__ == "__main__":
    main("part10", test_one_input, seeds)
