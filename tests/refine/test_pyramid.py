"""Pyramid helpers: the official sizes, thresholds and kernels."""

from __future__ import annotations

import torch

from lama_multiscale_refine.refine.pyramid import blur5, budget_size, build_pyramid, loss_mask_down, number_of_scales, pyrdown_mask, resize_to_budget


def test_number_of_scales_follows_the_official_formula():
    assert [number_of_scales(s, 2000, 512, 3) for s in (511, 724, 725, 1448, 1449, 5000)] == [1, 1, 2, 2, 3, 3]
    assert number_of_scales(389, 515, 256, 3) == 2 and number_of_scales(1024, 1024, 256, 3) == 3


def test_budget_size_floors_like_the_official_code():
    assert budget_size(800, 800, 400_000) == (632, 632)
    assert budget_size(100, 100, 10_000) == (100, 100)


def test_blur_uses_the_official_taps():
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1
    taps = blur5(impulse)[0, 0, 4, 2:7]
    expected = torch.tensor([0.054489, 0.244201, 0.402620, 0.244201, 0.054489]) * 0.402620
    assert torch.allclose(taps, expected, atol=1e-6)


def test_mask_rules_grow_the_pyramid_hole_and_shrink_the_loss_hole():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    coarse = pyrdown_mask(mask)
    loss = loss_mask_down(mask)
    assert coarse.shape[-2:] == (16, 16) and loss.shape[-2:] == (16, 16)
    assert coarse.sum() > loss.sum() == 16  # blur + any-positive vs all-hole
    levels = build_pyramid(torch.rand(1, 3, 389, 515), mask.new_zeros(1, 1, 389, 515), 2)
    assert [tuple(i.shape[-2:]) for i, _ in levels] == [(194, 257), (389, 515)]


def test_budget_resize_makes_any_touched_pixel_a_hole():
    image = torch.rand(1, 3, 40, 40)
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 10, 10] = 1
    small_image, small_mask = resize_to_budget(image, mask, 400)
    assert small_image.shape[-2:] == (20, 20)
    assert set(small_mask.unique().tolist()) <= {0.0, 1.0} and small_mask.sum() >= 1
