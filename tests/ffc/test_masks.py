"""Mask morphology and hole boxes."""

from __future__ import annotations

import pytest
import torch

from ffc.masks import dilate, ellipse_kernel, erode, feather, hole_boxes


def test_ellipse_kernel_is_opencvs_15px_ellipse():
    kernel = ellipse_kernel(15)
    assert int(kernel.sum()) == 169
    assert kernel.sum(1).int().tolist() == [1, 9, 11, 13, 13, 15, 15, 15, 15, 15, 13, 13, 11, 9, 1]
    assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.flip(1))
    assert kernel[:, 0].sum() == 5  # not transpose-symmetric, exactly like OpenCV's (fixtures README §4)
    assert ellipse_kernel(1).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="size"):
        ellipse_kernel(0)


def _square(size=40, box=(10, 30, 10, 30)):
    mask = torch.zeros(1, 1, size, size)
    mask[..., box[0] : box[1], box[2] : box[3]] = 1
    return mask


def test_erode_and_dilate_with_a_disk():
    mask = _square()
    eroded, dilated = erode(mask, 5), dilate(mask, 5)
    assert eroded.sum() == 16 * 16  # a 20 px square loses 2 px per side
    assert eroded[0, 0, 12, 12] == 1 and eroded[0, 0, 11, 20] == 0
    assert dilated[0, 0, 8, 20] == 1 and dilated[0, 0, 7, 20] == 0
    assert dilated[0, 0, 8, 8] == 0  # a disk, not a square: corners stay round
    assert torch.equal(erode(mask, 1), mask) and torch.equal(dilate(mask, 0), mask)


def test_border_does_not_erode():
    mask = _square(box=(0, 20, 0, 20))  # touches the top and left borders
    eroded = erode(mask, 5)
    assert eroded[0, 0, 0, 0] == 1 and eroded[0, 0, 0, 17] == 1 and eroded[0, 0, 0, 18] == 0


def test_feather_softens_edges_only():
    mask = _square()
    soft = feather(mask, 4)
    assert 0 < soft[0, 0, 10, 20] < 1 and soft[0, 0, 20, 20] > 0.99 and soft[0, 0, 0, 0] < 0.01
    assert soft.min() >= 0 and soft.max() <= 1
    assert torch.equal(feather(mask, 0), mask)


def test_morphology_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"mask: expected a float \(B, 1, H, W\)"):
        erode(torch.zeros(1, 40, 40), 3)


def test_hole_boxes_separate_merge_and_shift_context_inward():
    hole = torch.zeros(100, 200)
    hole[10:20, 10:30] = 1
    hole[60:90, 150:190] = 1
    boxes = hole_boxes(hole, 5)
    assert boxes == [(5, 5, 25, 35), (55, 145, 95, 195)]
    assert hole_boxes(hole, 5, separate=False) == [(5, 5, 95, 195)]
    assert len(hole_boxes(hole, 60)) == 1  # grown boxes overlap: merged
    # A hole at the edge gets its missing context from the other side.
    edge = torch.zeros(100, 200)
    edge[0:10, 0:10] = 1
    assert hole_boxes(edge, 20) == [(0, 0, 50, 50)]
    assert hole_boxes(torch.zeros(10, 10), 5) == []
    with pytest.raises(ValueError, match="margin"):
        hole_boxes(hole, -1)


def test_banded_morphology_for_old_kornia_is_exact(monkeypatch):
    """Without kornia's "shift" engine, large masks go through in row bands: same result."""
    from ffc import masks

    mask = (torch.rand(2, 1, 90, 70, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    expected = erode(mask, 7), dilate(mask, 7)
    monkeypatch.setattr(masks, "_shift_engine_available", lambda: False)
    monkeypatch.setattr(masks, "_BAND_ELEMENTS", 2 * 70 * 11)  # 11-row bands
    assert torch.equal(erode(mask, 7), expected[0]) and torch.equal(dilate(mask, 7), expected[1])
