"""Files the sandbox serves under /sandbox/assets/ so demos and tests have real image addresses on
loopback: ``cover.png``, a mini-program cover of WeCom's recommended 520x416. It is drawn here
(a PNG written with zlib), so the package ships no binary file."""

from __future__ import annotations

import functools
import struct
import zlib

COVER_SIZE = (520, 416)  # WeCom's recommended mini-program cover size


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``width`` × 3 bytes."""
    if len(rows) != height or any(len(row) != width * 3 for row in rows):
        raise ValueError("rows must be height rows of width RGB pixels")

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


@functools.cache
def cover_png() -> bytes:
    """A red-to-dark vertical gradient with a white band: a stand-in for a campaign's cover."""
    width, height = COVER_SIZE
    rows = []
    for y in range(height):
        shade = 1 - y / height
        pixel = bytes((int(60 + 160 * shade), int(20 + 20 * shade), int(30 + 20 * shade)))
        row = pixel * width
        if 300 <= y < 324:  # a white band across the middle 80 %
            margin = width // 10
            row = pixel * margin + b"\xff\xff\xff" * (width - 2 * margin) + pixel * margin
        rows.append(row)
    return png(width, height, rows)


ASSETS = {"cover.png": ("image/png", cover_png)}
