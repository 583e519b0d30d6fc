"""ffc.plan: plain-inference plans (boxes, sizes, forwards, memory guard) and the shared box policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_multiscale_refine.ffc import BIG_LAMA, inpaint
from lama_multiscale_refine.ffc.plan import (
    InpaintUnit,
    format_bytes,
    inference_bytes,
    merge_boxes,
    plan_inpaint,
    resized_size,
    snap_box,
)
from lama_multiscale_refine.ffc.strategies import inpaint_with_strategy, run_unit
from lama_testing import image_from_case


def _mask(height, width, *boxes, batch=1):
    mask = torch.zeros(batch, 1, height, width)
    for top, left, bottom, right in boxes:
        mask[..., top:bottom, left:right] = 1
    return mask


def _area(h, w):
    return np.asarray(h) * np.asarray(w)


def test_snap_box_grows_outwards_onto_the_grid_and_stays_inside():
    assert snap_box((108, 362, 200, 401), 16, 500, 500) == (96, 352, 208, 416)
    assert snap_box((0, 0, 10, 10), 32, 20, 25) == (0, 0, 20, 25)  # clipped to the image
    assert snap_box((16, 32, 48, 64), 16, 100, 100) == (16, 32, 48, 64)  # already on the grid
    with pytest.raises(ValueError, match="grid"):
        snap_box((0, 0, 1, 1), 0, 10, 10)


def test_merge_boxes_merges_overlaps_and_keeps_far_apart_boxes():
    boxes = [(0, 0, 10, 10), (5, 5, 20, 20), (100, 100, 110, 110)]
    assert merge_boxes(boxes, _area, 200, 200) == [(0, 0, 20, 20), (100, 100, 110, 110)]
    assert merge_boxes([], _area, 10, 10) == []


def test_merge_boxes_follows_the_cost():
    boxes = [(0, 0, 10, 10), (0, 20, 10, 30), (0, 40, 10, 50)]
    assert len(merge_boxes(boxes, _area, 100, 100)) == 3  # area only: merging would add pixels
    expensive_calls = lambda h, w: _area(h, w) + 1000  # noqa: E731 - a fixed cost per run dominates
    assert merge_boxes(boxes, expensive_calls, 100, 100) == [(0, 0, 10, 50)]


def test_merge_boxes_copes_with_thousands():
    g = np.random.default_rng(0)
    tops, lefts = g.integers(0, 4000, 3000), g.integers(0, 4000, 3000)
    boxes = [(int(t), int(l), int(t) + 4, int(l) + 4) for t, l in zip(tops, lefts)]
    merged = merge_boxes(boxes, lambda h, w: _area(h, w) + 5000, 4004, 4004)
    assert 1 <= len(merged) <= 512
    for t, l, b, r in boxes:  # every box is covered
        assert any(mt <= t and ml <= l and b <= mb and r <= mr for mt, ml, mb, mr in merged)


def test_inference_bytes_matches_the_measured_peaks():
    # Measured on CPU at 1024 x 1024 (README): 0.64 GiB fused, 1.00 GiB eager.
    assert inference_bytes(BIG_LAMA, 1024, 1024) / 2**30 == pytest.approx(0.64, rel=0.15)
    assert inference_bytes(BIG_LAMA, 1024, 1024, fused=False) / 2**30 == pytest.approx(1.00, rel=0.15)
    assert format_bytes(2.1 * 2**30) == "2.1 GiB" and format_bytes(300 * 2**20) == "300 MiB"


def test_plans_of_each_strategy(small_generator):
    mask = _mask(100, 140, (10, 10, 20, 30), (70, 100, 90, 130))
    original = plan_inpaint(small_generator, mask)
    assert original.forwards == 1 and original.images[0].units[0].box == (0, 0, 100, 140)
    resized = plan_inpaint(small_generator, mask, strategy="resize_to_limit", resize_limit=70)
    assert resized.images[0].units[0].work_size == resized_size(100, 140, 70) == (50, 70)
    crops = plan_inpaint(small_generator, mask, strategy="crop_around_mask", crop_margin=8)
    assert crops.forwards == 2
    for unit in crops.images[0].units:
        assert unit.box[0] % 8 == 0 and unit.box[1] % 8 == 0 and not unit.resized
    assert str(crops).startswith("crop_around_mask: 2 boxes, 2 forwards, ~")
    empty = plan_inpaint(small_generator, torch.zeros(1, 1, 8, 8))
    assert empty.forwards == 0 and empty.images[0].skipped == "empty mask"


def test_executing_a_plan_calls_back_per_forward(small_generator):
    image = torch.rand(2, 3, 100, 140, generator=torch.Generator().manual_seed(0))
    mask = _mask(100, 140, (10, 10, 20, 30), (70, 100, 90, 130), batch=2)
    made = plan_inpaint(small_generator, mask, strategy="crop_around_mask", crop_margin=8)
    seen = []
    out = inpaint_with_strategy(small_generator, image, mask, plan=made, callback=seen.append)
    assert len(seen) == made.forwards == 4
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], image[known])
    with pytest.raises(ValueError, match="plan: made for 2 images"):
        inpaint_with_strategy(small_generator, image[:1], mask[:1], plan=made)


def test_memory_guard_uses_crops_then_a_resized_copy():
    # A 6000 x 4000 photo with Big-LaMa needs ~16 GiB for the full-size pass (measured: >14 GB and
    # growing); the same decisions, on a 1500 x 1000 photo with proportionally less memory free:
    assert inference_bytes(BIG_LAMA, 4000, 6000) / 2**30 == pytest.approx(15.7, rel=0.05)
    mask = _mask(1000, 1500, (250, 250, 300, 325))
    free = 2**29
    full = plan_inpaint(BIG_LAMA, mask)
    assert full.predicted_peak_bytes > free
    guarded = plan_inpaint(BIG_LAMA, mask, free_bytes=free)
    assert guarded.images[0].strategy == "crop_around_mask" and guarded.predicted_peak_bytes <= 0.9 * free
    assert "original needs ~" in guarded.notes[0].text and "1 crop around the holes instead" in guarded.notes[0].text
    large = _mask(1000, 1500, (50, 50, 950, 1450))
    resized = plan_inpaint(BIG_LAMA, large, free_bytes=free)
    unit = resized.images[0].units[0]
    assert resized.images[0].strategy == "resize_to_limit" and unit.resized and unit.predicted_bytes <= 0.9 * free
    assert "a copy resized to" in resized.notes[0].text
    with pytest.raises(MemoryError, match="not even for a 64 px copy"):
        plan_inpaint(BIG_LAMA, large, free_bytes=2**20)


def test_snapped_plain_crops_agree_with_the_whole_image(tiny_generator, load_case):
    image, _ = image_from_case(load_case("refine_2scales"))
    mask = _mask(512, 512, (120, 140, 170, 200))
    whole = inpaint(tiny_generator, image, mask)
    hole = mask.bool().expand(-1, 3, -1, -1)
    cropped = inpaint_with_strategy(tiny_generator, image, mask, strategy="crop_around_mask", crop_margin=24)
    diff = (cropped - whole).abs()[hole]
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 0.03  # measured: 5.0e-4 / 7.8e-3
    off = InpaintUnit((88, 124, 200, 230), (112, 106), 0)  # a box off the 8 px grid (measured: 0.015 / 0.25)
    shifted = whole.clone()
    shifted[..., 88:200, 124:230] = run_unit(tiny_generator, image, mask, off)
    assert float((shifted - whole).abs()[hole].mean()) > 5 * float(diff.mean())
