"""Sample precision conversions: exact where they can be, Pillow's own formulas where 8-bit files meet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lama_multiscale_refine.lama_cli.pixels import convert_depth, luma, outside_unit_fraction, quantize, to_unit


def test_depth_conversions_are_exact_where_possible():
    every8 = np.arange(256, dtype=np.uint8)
    every16 = np.arange(65536, dtype=np.uint16)

    assert np.array_equal(convert_depth(convert_depth(every8, np.uint16), np.uint8), every8)
    assert np.array_equal(convert_depth(every8, np.uint16), every8.astype(np.uint16) * 257)
    assert np.array_equal(convert_depth(to_unit(every16), np.uint16), every16)  # float -> 16-bit rounds back
    assert np.abs(convert_depth(every16, np.uint8).astype(int) * 257 - every16).max() <= 128


def test_model_values_round_trip_every_integer_level():
    for dtype in (np.uint8, np.uint16):
        levels = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
        unit = to_unit(levels)
        assert unit.dtype == np.float32 and unit.min() == 0 and unit.max() == 1
        # The model's truncating quantisation gives every level back (no level is lost to rounding).
        assert np.array_equal(quantize(unit, dtype), levels)


def test_float_samples_outside_the_unit_range_are_clipped_for_the_model():
    samples = np.array([-0.5, 0.25, 1.5, np.nan, np.inf, -np.inf], np.float32)

    assert outside_unit_fraction(samples) == pytest.approx(5 / 6)
    assert to_unit(samples).tolist() == [0.0, 0.25, 1.0, 0.0, 1.0, 0.0]
    assert outside_unit_fraction(np.array([0, 255], np.uint8)) == 0


def test_luma_is_pillows_grey_conversion_for_8_bit():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)

    assert np.array_equal(luma(rgb)[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert luma(rgb.astype(np.uint16) * 257).dtype == np.uint16
    assert luma(to_unit(rgb))[..., 0] == pytest.approx(luma(rgb)[..., 0] / 255, abs=1 / 255)
