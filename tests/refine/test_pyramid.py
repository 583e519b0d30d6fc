"""Pyramid helpers: the official sizes, thresholds and kernels."""

from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from lama_multiscale_refine.refine import pyramid
from lama_multiscale_refine.refine.memory import peak_tensor_bytes
from lama_multiscale_refine.refine.pyramid import blur5, budget_size, build_pyramid, loss_mask_down, number_of_scales, pyrdown, pyrdown_mask, resize_to_budget


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


def _whole_tensor_pyrdown(x: torch.Tensor) -> torch.Tensor:
    """The official blur + resize in one call each (what the strip-wise path must reproduce)."""
    kernel = kornia.filters.get_gaussian_kernel2d((5, 5), (1.0, 1.0))
    blurred = kornia.filters.filter2d(x, kernel, border_type="reflect")
    return F.interpolate(blurred, size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("strip_pixels", [1, 3 * 53, 40 * 53, 1 << 20])
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 1, 6, 53), (1, 3, 129, 53)])
def test_the_strip_wise_pyramid_is_bit_identical_to_whole_tensor_calls(monkeypatch, shape, strip_pixels):
    monkeypatch.setattr(pyramid, "BLUR_STRIP_PIXELS", strip_pixels)  # 1 = one row per strip
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pyrdown(x), _whole_tensor_pyrdown(x))
    mask = (x[:, :1] > 0.7).float()
    assert torch.equal(pyrdown_mask(mask), (_whole_tensor_pyrdown(mask) >= pyramid.MASK_EPS).float())


def test_the_differentiated_blur_keeps_its_gradient():
    x = torch.rand(1, 3, 20, 24, requires_grad=True)
    pyrdown(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_pyramid_of_a_large_image_needs_no_full_size_transients():
    x = torch.rand(1, 3, 1024, 1024)  # 12 MiB; one whole-tensor mkldnn blur transiently needs ~10x
    peak = peak_tensor_bytes(lambda: pyrdown(x))
    plane = 1024 * 1024 * 4
    # one blurred plane, the output, and a strip's convolution (measured: ~140 B per strip pixel)
    assert peak < plane + 3 * plane / 4 + 200 * pyramid.BLUR_STRIP_PIXELS, peak / plane
