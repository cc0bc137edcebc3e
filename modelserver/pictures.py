"""Deterministic pictures from a prompt: a two-colour gradient and a few translucent discs and boxes.

Everything is derived from SHAKE-256 of (index, prompt), so the same prompt and index always give the same pixels
(whatever the numpy version: no random generator is involved) and different prompts give different pictures.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

from modelserver.png import encode_png

MAX_SHAPES = 7
_BYTES_PER_SHAPE = 9


class _Bytes:
    """Reads the digest one byte at a time, as fractions in [0, 1]."""

    def __init__(self, seed: bytes) -> None:
        self._data = seed
        self._at = 0

    def unit(self) -> float:
        value = self._data[self._at]
        self._at += 1
        return value / 255.0

    def colour(self) -> npt.NDArray[np.float32]:
        return np.array([self.unit() * 255.0 for _ in range(3)], dtype=np.float32)


def _seed(prompt: str, index: int) -> _Bytes:
    material = f"{index}\0{prompt}".encode()
    return _Bytes(hashlib.shake_256(material).digest(8 + MAX_SHAPES * _BYTES_PER_SHAPE))


def _blend(
    region: npt.NDArray[np.float32], colour: npt.NDArray[np.float32], alpha: float, mask: npt.NDArray[np.bool_] | None
) -> None:
    """Paint ``colour`` over ``region`` (height, width, 3) at ``alpha``, where ``mask`` holds (everywhere if None)."""
    weight = np.float32(alpha) if mask is None else mask * np.float32(alpha)
    for channel in range(3):
        plane = region[:, :, channel]
        plane += (colour[channel] - plane) * weight


def render_picture(prompt: str, index: int, width: int, height: int) -> npt.NDArray[np.uint8]:
    """An RGB picture of (height, width, 3) for the ``index``-th image of ``prompt``."""
    rand = _seed(prompt, index)
    start, end = rand.colour(), rand.colour()
    angle = rand.unit() * 2.0 * math.pi
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    along = xs * np.float32(math.cos(angle)) + ys * np.float32(math.sin(angle))
    along -= along.min()
    along /= float(along.max()) or 1.0  # 0 at one corner, 1 at the opposite one
    image = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):  # one channel at a time: broadcasting over a last axis of 3 is ten times slower
        np.multiply(along, end[channel] - start[channel], out=image[:, :, channel])
        image[:, :, channel] += start[channel]
    shapes = 3 + int(rand.unit() * (MAX_SHAPES - 3) + 0.5)
    side = min(width, height)
    for _ in range(shapes):
        disc = rand.unit() < 0.5
        cx, cy = rand.unit() * width, rand.unit() * height
        radius = max(1.0, (0.08 + rand.unit() * 0.27) * side)
        colour = rand.colour()
        alpha = 0.5 + rand.unit() * 0.4
        x0, x1 = max(0, int(cx - radius)), min(width, int(cx + radius) + 1)
        y0, y1 = max(0, int(cy - radius)), min(height, int(cy + radius) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        region = image[y0:y1, x0:x1]
        mask = None
        if disc:
            dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
            dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
            mask = dx * dx + dy * dy <= np.float32(radius * radius)
        _blend(region, colour, alpha, mask)
    np.clip(image, 0.0, 255.0, out=image)
    image += 0.5  # truncating a non-negative value plus a half rounds it
    return image.astype(np.uint8)


def render_png(prompt: str, index: int, width: int, height: int) -> bytes:
    """:func:`render_picture` encoded as PNG."""
    return encode_png(render_picture(prompt, index, width, height))
