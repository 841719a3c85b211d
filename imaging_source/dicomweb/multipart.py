"""multipart/related bodies (RFC 2387, PS3.18 8.6.1.2) written as they are sent: a part's bytes are
read from its source only when the part goes out, so a study is never in memory at once."""
from __future__ import annotations

import uuid
from itertools import chain
from typing import Callable, Iterable, Iterator

CHUNK = 256 * 1024


def boundary() -> str:
    return f"xdsi-{uuid.uuid4().hex}"


def content_type(boundary_: str, part_type: str, transfer_syntax: str = "") -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary_}'
    return value + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")


def file_chunks(path, chunk: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            yield block


# A part: its Content-Type, optional Content-Location, and a callable giving its bytes when it is sent.
Part = tuple[str, str, Callable[[], Iterable[bytes]]]


def body(boundary_: str, parts: Iterable[Part], flush_at: int = 2 * CHUNK) -> Iterator[bytes]:
    """The body, in blocks of about ``flush_at`` bytes (small instances are joined: one write each
    would cost the server more than their bytes; below waitress's 1 MB outbuf_overflow, past which
    it spills a block to a temporary file)."""
    pending, size = [], 0
    for media_type, location, chunks in parts:
        head = f"--{boundary_}\r\nContent-Type: {media_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        for piece in chain(((head + "\r\n").encode(),), chunks(), (b"\r\n",)):
            pending.append(piece)
            size += len(piece)
            if size >= flush_at:
                yield b"".join(pending)
                pending, size = [], 0
    pending.append(f"--{boundary_}--\r\n".encode())
    yield b"".join(pending)
