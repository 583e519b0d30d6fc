"""Mask preprocessing and precision of the per-image step, without files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lama_multiscale_refine.lama_cli.inpainter import Inpainter, MaskOptions, hole_from_mask
from lama_multiscale_refine.lama_cli.progress import DONE, Outcome, ProgressReporter

CPU = torch.device("cpu")


def _square_mask(value: float = 1.0) -> np.ndarray:
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = value
    return mask


def _random_rgb(seed: int) -> np.ndarray:
    """(32, 32, 3) float32 with 8-bit levels, as the command line gives an 8-bit file to the model."""
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3)).astype(np.float32) / 255


def test_threshold_then_erode_then_dilate():
    faint = _square_mask(value=100 / 255)  # 0.39

    assert int(hole_from_mask(faint, MaskOptions(), CPU).sum()) == 16 * 16  # official: any non-zero value
    assert int(hole_from_mask(faint, MaskOptions(threshold=0.5), CPU).sum()) == 0
    eroded = hole_from_mask(faint, MaskOptions(erode=5), CPU)
    dilated = hole_from_mask(faint, MaskOptions(dilate=5), CPU)
    assert int(eroded.sum()) < 16 * 16 < int(dilated.sum())
    assert set(torch.unique(dilated).tolist()) == {0.0, 1.0}


def test_empty_hole_returns_no_fill_without_running_the_model(tiny_generator):
    inpainter = Inpainter(tiny_generator, device=CPU, dtype="fp32", mode="plain")
    inpainter.model = None  # any use of the model would raise

    fill = inpainter.fill(_random_rgb(0), np.zeros((32, 32), np.float32))

    assert fill.rgb is None and not fill.hole.any()
    assert fill.note == "empty mask, image copied unchanged"


def test_bf16_plain_keeps_known_pixels_exact(tiny_generator):
    rgb = _random_rgb(1)
    mask = _square_mask()
    inpainter = Inpainter(tiny_generator, device=CPU, dtype="bf16", mode="plain")

    fill = inpainter.fill(rgb, mask)

    assert next(inpainter.model.parameters()).dtype == torch.bfloat16
    assert fill.rgb.dtype == np.float32 and np.array_equal(fill.hole, mask > 0)
    assert np.array_equal(fill.rgb[mask == 0], rgb[mask == 0])
    assert not np.array_equal(fill.rgb[mask > 0], rgb[mask > 0])


def test_fill_rejects_arrays_that_are_not_float_rgb(tiny_generator):
    inpainter = Inpainter(tiny_generator, device=CPU, dtype="fp32", mode="plain")

    with pytest.raises(TypeError, match=r"rgb: expected an \(H, W, 3\) float32 array"):
        inpainter.fill(np.zeros((32, 32, 3), np.uint8), _square_mask())
    with pytest.raises(ValueError, match=r"mask_hw: expected \(32, 32\) to match rgb"):
        inpainter.fill(_random_rgb(0), np.zeros((16, 32), np.float32))


def test_terminal_progress_rewrites_one_line():
    stream = io.StringIO()
    reporter = ProgressReporter(stream, live=True)

    reporter.start(0, 2, "a.png")
    reporter.refine_step({"scale": 1, "n_scales": 2, "iteration": 0, "n_iters": 3, "loss": 0.25})
    reporter.finish(Outcome("a.png", DONE, seconds=1.5), "out/a.png")

    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r\x1b[K[1/2] a.png: scale 2/2, iteration 1/3, loss 0.2500" in text
    assert text.endswith("\r\x1b[K[1/2] a.png: done in 1.50 s -> out/a.png\n")
