"""What WADO-RS reads out of one stored Part-10 instance: its metadata in the JSON model (long values
as BulkDataURIs), one top-level value's bytes, and its frames. Values longer than the threshold are
deferred by pydicom (left on disk until asked for), and a native frame is read at its offset alone,
so no more than one frame or one value of an instance is in memory for these."""
from __future__ import annotations

import io
import logging
from typing import Iterator

from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian

from affinity_domain.transfer_syntax import UNCOMPRESSED

from ..service import transcoded
from .errors import not_found

log = logging.getLogger("xdsi.imaging_source")
PIXEL_DATA = 0x7FE00010
_FRAME_TAGS = ["NumberOfFrames", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated"]


def metadata(path, instance_url: str, threshold: int) -> dict:
    ds = dcmread(path, defer_size=threshold)
    out = {}
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        key = f"{int(tag):08X}"
        if tag == PIXEL_DATA or getattr(raw, "value", "") is None:       # deferred: too long to inline
            out[key] = {"vr": raw.VR or "UN", "BulkDataURI": f"{instance_url}/bulkdata/{key}"}
            continue
        try:
            # inside sequences nothing is a bulk data value: it stays inline
            out[key] = ds[tag].to_json_dict(None, threshold if ds[tag].VR != "SQ" else 1 << 62)
        except Exception as e:           # one value pydicom cannot read stays out, the rest goes
            log.warning("DICOMweb metadata: element left out", extra={"tag": key, "error": str(e)})
    return out


def reencoded(path, stored: str, transfer_syntax: str) -> bytes:
    """The instance in another uncompressed transfer syntax (decoded first when compressed without
    loss: ``wado.DECODABLE``); one instance in memory."""
    if stored in UNCOMPRESSED:
        return transcoded(path, transfer_syntax)
    ds = dcmread(path)
    ds.decompress()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=transfer_syntax == ImplicitVRLittleEndian, little_endian=True,
               enforce_file_format=True)
    return out.getvalue()


def element_bytes(path, tag_text: str, threshold: int) -> bytes:
    """The raw value of one top-level element (as encoded in the stored instance)."""
    try:
        tag = Tag(int(tag_text, 16))
    except ValueError:
        raise not_found(f"no bulk data {tag_text!r}") from None
    ds = dcmread(path, defer_size=threshold)
    if tag not in ds:
        raise not_found(f"the instance has no element {tag_text}")
    raw = ds.get_item(tag)
    value = raw.value if hasattr(raw, "length") else ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()


class Frames:
    """The frames of one instance: ``count``, and each frame's bytes read when asked for."""

    def __init__(self, path, stored: str):
        self.path, self.stored = path, stored
        ds = dcmread(path, defer_size=1024, specific_tags=_FRAME_TAGS + ["PixelData"])
        if PIXEL_DATA not in ds:
            raise not_found("the instance has no pixel data")
        self.count = int(ds.get("NumberOfFrames") or 1)
        self.native = stored in UNCOMPRESSED
        raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
        if self.native:
            bits = int(ds.get("BitsAllocated") or 8)
            pixels = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("SamplesPerPixel") or 1)
            self.size = (pixels * bits + 7) // 8
            self.offset = raw.value_tell
        self._ds = ds

    def check(self, numbers: list[int]) -> None:
        missing = [n for n in numbers if n > self.count]
        if missing:
            raise not_found(f"the instance has {self.count} frame(s), not frame {missing[0]}")

    def read(self, numbers: list[int]) -> Iterator[bytes]:
        if self.native:
            with open(self.path, "rb") as f:
                for n in numbers:
                    f.seek(self.offset + (n - 1) * self.size)
                    yield f.read(self.size)
            return
        # compressed: the encapsulated value is read once, its frames cut out of it
        frames = list(generate_frames(self._ds.PixelData, number_of_frames=self.count))
        for n in numbers:
            yield frames[n - 1]
