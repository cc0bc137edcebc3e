"""A PNG encoder for 8-bit RGB pixels, with zlib and struct only (the server carries no imaging library).

Every row uses the Sub filter (each byte minus the same channel of the pixel to its left), which turns the smooth
gradients the server draws into long runs of small numbers that deflate compresses well.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB = 2  # PNG colour type: truecolour
_SUB = 1  # PNG filter type
COMPRESSION_LEVEL = 6


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """``pixels`` of shape (height, width, 3) as a PNG file (8 bits per channel, no interlacing)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError("encode_png takes a (height, width, 3) uint8 array")
    height, width, _ = pixels.shape
    if height < 1 or width < 1:
        raise ValueError("a PNG has at least one pixel")
    rows = pixels.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _SUB
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, _RGB, 0, 0, 0)
    return b"".join(
        (
            SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(filtered.tobytes(), COMPRESSION_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )
