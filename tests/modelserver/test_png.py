"""The hand-written PNG encoder, read back by an independent decoder (Pillow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from modelserver.pictures import render_picture, render_png
from modelserver.png import encode_png


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (64, 17)])
def test_it_round_trips_any_pixels_exactly(height: int, width: int) -> None:
    pixels = np.random.default_rng(height * width).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png(pixels)))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (width, height))
    assert np.array_equal(np.asarray(image), pixels)


def test_it_refuses_what_is_not_rgb_bytes() -> None:
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), dtype=np.float32))


def test_it_encodes_the_rendered_picture_pixel_for_pixel() -> None:
    pixels = render_picture("a quiet harbour", 0, 96, 40)
    decoded = np.asarray(Image.open(io.BytesIO(render_png("a quiet harbour", 0, 96, 40))))
    assert np.array_equal(decoded, pixels)
