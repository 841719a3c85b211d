"""Rendered previews (PS3.18 10.4.1.1.3, WADO-URI image/jpeg): one frame's pixels through the modality
LUT and the window (the request's, else the instance's, else its range) into an 8-bit JPEG or PNG,
fitted within a viewport."""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from .errors import bad, not_acceptable, not_found

TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL = (128, 128)


def _numbers(text: str, count: int, name: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts[:count]]
    except ValueError:
        raise bad(f"{name} {text!r} is not {count} numbers") from None
    if len(values) != count or not all(np.isfinite(values)):
        raise bad(f"{name} {text!r} is not {count} numbers")
    return values


def viewport(text: str) -> tuple[int, int] | None:
    """``viewport=width,height`` (PS3.18 8.3.5.1.3; the source region form is not supported)."""
    if not text:
        return None
    width, height = _numbers(text, 2, "viewport")
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise bad("viewport must be between 1 and 8192 pixels each way")
    return int(width), int(height)


def window(text: str) -> tuple[float, float] | None:
    """``window=center,width,function`` (linear only)."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) == 3 and parts[2].strip().lower() not in ("linear", ""):
        raise bad(f"window function {parts[2]!r} is not supported (linear is)")
    center, width = _numbers(",".join(parts[:2]), 2, "window")
    if width <= 0:
        raise bad("window width must be positive")
    return center, width


def quality(text: str) -> int:
    if not text:
        return 90
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise bad(f"quality {text!r} is not a number from 1 to 100")
    return int(text)


def render(path, frame: int, media_type: str, size: tuple[int, int] | None = None,
           voi: tuple[float, float] | None = None, jpeg_quality: int = 90) -> bytes:
    """One frame (1-based) as ``media_type`` bytes."""
    ds = dcmread(path, stop_before_pixels=True)
    count = int(ds.get("NumberOfFrames") or 1)
    if frame > count:
        raise not_found(f"the instance has {count} frame(s), not frame {frame}")
    pixels = pixel_array(path, index=frame - 1 if count > 1 else None)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 2:
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        if voi:
            center, width = voi
            low, high = center - width / 2, center + width / 2
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_voi_lut(values, ds).astype(np.float64)
            low, high = float(values.min()), float(values.max())
        else:
            low, high = float(values.min()), float(values.max())
        scaled = np.clip((values - low) / max(high - low, 1e-9), 0, 1) * 255
        if photometric == "MONOCHROME1":
            scaled = 255 - scaled
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    else:
        image = Image.fromarray(_to_8bit(pixels), "RGB")
    if size:
        image.thumbnail(size)
    out = io.BytesIO()
    image.save(out, TYPES[media_type], **({"quality": jpeg_quality} if media_type == "image/jpeg" else {}))
    return out.getvalue()


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    top = float(pixels.max()) or 1.0
    return (pixels.astype(np.float64) / top * 255).astype(np.uint8)


def media_type(accept_header: str, default: str = "image/jpeg") -> str:
    """The rendered type an Accept header asks for (image/jpeg by default)."""
    for item in re.split(r",\s*", accept_header or ""):
        kind = item.split(";")[0].strip().lower()
        if kind in TYPES:
            return kind
        if kind in ("*/*", "image/*", ""):
            return default
    raise not_acceptable("rendered images are image/jpeg or image/png")
