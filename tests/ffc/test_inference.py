"""Plain inference: fidelity to the official goldens, padding, batches and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_multiscale_refine.ffc import binarize, inpaint, pad_symmetric, padded_size, predict
from lama_testing import hwc, image_from_case

PLAIN_CASES = ["plain_256", "plain_odd", "plain_softmask"]


@pytest.mark.parametrize("name", PLAIN_CASES)
def test_plain_cases_match_official(name, load_case, tiny_generator, tolerances):
    case = load_case(name)
    tol = tolerances["plain"]
    image, mask = image_from_case(case)
    hp, wp = (int(v) for v in case["padded_hw"])
    assert padded_size(*image.shape[-2:]) == (hp, wp)

    hole_padded = pad_symmetric(binarize(mask), hp, wp)
    np.testing.assert_array_equal(hole_padded[0, 0].numpy().astype(np.uint8), case["mask_binary_padded"])
    if "image_padded" in case:
        padded = pad_symmetric(image, hp, wp)
        np.testing.assert_array_equal(np.round(hwc(padded) * 255).astype(np.uint8), case["image_padded"])

    raw = hwc(predict(tiny_generator, pad_symmetric(image, hp, wp), hole_padded))
    diff = np.abs(raw - case["pred_raw_padded"])
    assert diff.max() <= tol["pred_raw_padded"]["max_abs"] and diff.mean() <= tol["pred_raw_padded"]["mean_abs"]

    out = hwc(inpaint(tiny_generator, image, mask))
    hole = case["mask"] > 0
    diff = np.abs(out - case["output"])[hole]
    assert diff.max() <= tol["output_hole_pixels"]["max_abs"] and diff.mean() <= tol["output_hole_pixels"]["mean_abs"]
    np.testing.assert_array_equal(out[~hole], case["output"][~hole])  # exact
    np.testing.assert_array_equal(out[~hole], hwc(image)[~hole])


@pytest.mark.parametrize(("h", "w", "target_h", "target_w"), [(5, 7, 8, 16), (3, 2, 16, 16), (1, 1, 16, 8), (9, 4, 24, 13)])
def test_pad_symmetric_matches_numpy(h, w, target_h, target_w):
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    expected = np.pad(x[0, 0].numpy(), ((0, target_h - h), (0, target_w - w)), mode="symmetric")
    np.testing.assert_array_equal(pad_symmetric(x, target_h, target_w)[0, 0].numpy(), expected)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 5), (7, 8), (15, 16), (17, 9), (33, 40)])
def test_any_size_works_and_known_pixels_are_exact(small_generator, h, w):
    image = torch.rand(1, 3, h, w)
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 2, w // 2] = 1
    out = inpaint(small_generator, image, mask)
    assert out.shape == image.shape and torch.isfinite(out).all()
    known = mask.expand_as(image) == 0
    assert torch.equal(out[known], image[known])
    assert not torch.equal(out, image)


def _counting(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    return calls


def test_empty_mask_skips_the_model_and_returns_a_copy(small_generator):
    calls = _counting(small_generator)
    image = torch.rand(2, 3, 24, 24)
    out = inpaint(small_generator, image, torch.zeros(2, 1, 24, 24))
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()
    assert calls == []


def test_batch_matches_single_images_and_skips_empty_ones(small_generator):
    image = torch.rand(3, 3, 32, 40)
    mask = torch.zeros(3, 1, 32, 40)
    mask[0, :, 4:12, 5:20] = 1
    mask[2, :, 20:30, 0:8] = 1
    calls = _counting(small_generator)
    out = inpaint(small_generator, image, mask)
    assert calls == [torch.Size([2, 4, 32, 40])]  # image 1 has an empty mask
    assert torch.equal(out[1], image[1])
    for i in (0, 2):
        single = inpaint(small_generator, image[i : i + 1], mask[i : i + 1])
        assert torch.allclose(out[i : i + 1], single, atol=1e-6)


def test_full_mask_fills_everything(small_generator):
    image = torch.rand(1, 3, 24, 32)
    out = inpaint(small_generator, image, torch.ones(1, 1, 24, 32))
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    raw = predict(small_generator, image, torch.ones(1, 1, 24, 32))
    assert torch.equal(out, raw)


def test_inputs_are_never_modified(small_generator):
    image = torch.rand(1, 3, 20, 20)
    mask = (torch.rand(1, 1, 20, 20) > 0.7).float()
    image_before, mask_before = image.clone(), mask.clone()
    inpaint(small_generator, image, mask)
    assert torch.equal(image, image_before) and torch.equal(mask, mask_before)


def test_threshold_and_bool_masks(small_generator):
    image = torch.rand(1, 3, 32, 32)
    soft = torch.zeros(1, 1, 32, 32)
    soft[..., :16, :] = 0.3
    soft[..., 16:, :] = 0.8
    out = inpaint(small_generator, image, soft, threshold=0.5)
    assert torch.equal(out[..., :16, :], image[..., :16, :])
    assert not torch.equal(out[..., 16:, :], image[..., 16:, :])
    assert torch.equal(inpaint(small_generator, image, soft > 0.5), out)


def test_output_keeps_the_image_dtype(small_generator):
    image = torch.rand(1, 3, 16, 24, dtype=torch.float64)
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., 2:9, 3:10] = 1
    out = inpaint(small_generator, image, mask)
    assert out.dtype == torch.float64
    known = mask.expand_as(image) == 0
    assert torch.equal(out[known], image[known])


@pytest.mark.parametrize(
    ("image", "mask", "error", "message"),
    [
        (torch.rand(3, 16, 16), torch.zeros(1, 1, 16, 16), ValueError, r"image: expected shape \(B, 3, H, W\)"),
        (torch.rand(1, 4, 16, 16), torch.zeros(1, 1, 16, 16), ValueError, r"image: expected shape \(B, 3, H, W\)"),
        ((torch.rand(1, 3, 16, 16) * 255).to(torch.uint8), torch.zeros(1, 1, 16, 16), TypeError, "floating-point"),
        (np.zeros((1, 3, 16, 16)), torch.zeros(1, 1, 16, 16), TypeError, "torch.Tensor"),
        (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 12), ValueError, r"mask: expected shape \(1, 1, 16, 16\)"),
        (torch.rand(2, 3, 16, 16), torch.zeros(1, 1, 16, 16), ValueError, r"mask: expected shape \(2, 1, 16, 16\)"),
        (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16, dtype=torch.int64), TypeError, "mask: expected a float"),
    ],
)
def test_bad_input_gets_clear_errors(small_generator, image, mask, error, message):
    with pytest.raises(error, match=message):
        inpaint(small_generator, image, mask)


def test_non_finite_pixels_are_rejected(small_generator):
    image = torch.rand(1, 3, 16, 16)
    image[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="image: contains 1 NaN or infinite"):
        inpaint(small_generator, image, torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask: contains"):
        inpaint(small_generator, torch.rand(1, 3, 16, 16), torch.full((1, 1, 16, 16), float("inf")))
