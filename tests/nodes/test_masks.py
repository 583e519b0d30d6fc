"""LamaFFC_PrepareMask: threshold, disk erode/dilate, feather, every MASK layout."""

from __future__ import annotations

import pytest
import torch

from lama_multiscale_refine.ffc.masks import dilate, ellipse_kernel, erode


def _soft_square(batch: int = 1, size: int = 40) -> torch.Tensor:
    mask = torch.zeros(batch, size, size)
    mask[:, 10:30, 10:30] = 0.8
    mask[:, 10:30, 10:12] = 0.3  # below the 0.5 threshold
    return mask


@pytest.mark.parametrize("operation", ["none", "erode", "dilate"])
def test_threshold_then_disk_morphology(call, operation):
    mask = _soft_square()
    (out,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation=operation, kernel_size=7, feather=0.0)
    hole = (mask > 0.5).float()[:, None]
    expected = {"none": hole, "erode": erode(hole, 7), "dilate": dilate(hole, 7)}[operation][:, 0]
    assert out.shape == (1, 40, 40) and out.dtype == torch.float32
    assert torch.equal(out, expected)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_dilation_is_a_true_disk(call):
    mask = torch.zeros(31, 31)
    mask[15, 15] = 1
    (out,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="dilate", kernel_size=15, feather=0.0)
    assert torch.equal(out[0, 8:23, 8:23], ellipse_kernel(15))
    assert int(out.sum()) == 169  # the paper's 15 px ellipse


def test_even_kernel_rounds_up_to_odd(call):
    mask = torch.zeros(21, 21)
    mask[10, 10] = 1
    even = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="dilate", kernel_size=4, feather=0.0)[0]
    odd = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="dilate", kernel_size=5, feather=0.0)[0]
    assert torch.equal(even, odd)


def test_feather_adds_a_soft_edge_outside_the_hole(call, caplog):
    (out,) = call("LamaFFC_PrepareMask", mask=_soft_square(), threshold=0.5, operation="none", kernel_size=1,
                  feather=4.0)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out[0, 10:30, 12:30], torch.ones(20, 18))  # the whole hole stays 1
    assert 0.1 < float(out[0, 20, 10]) < 0.9 and 0.1 < float(out[0, 32, 20]) < 0.9  # soft just outside
    assert float(out[0, 20, 0]) == 0 and float(out[0, 0, 0]) == 0  # nothing beyond the edge's width
    assert "feather" not in caplog.text  # the holes are much larger than the feather


def test_a_feather_as_large_as_the_hole_keeps_it_and_warns(call, caplog):
    """Issue 9: feathering at or above half the hole's size used to leave the object visible."""
    mask = torch.zeros(2, 64, 64)
    mask[:, 30:36, 30:36] = 1  # a 6 px hole
    mask[0, 2:40, 2:14] = 1  # image 0 also has a large one (two cells away on the 8 px grid)
    (out,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="none", kernel_size=1, feather=12.0)
    assert torch.equal(out[:, 30:36, 30:36], torch.ones(2, 6, 6))
    message = ("LaMa Mask Preprocess: feather 12 px is at least half the size of the smallest hole in image 1 "
               "(6x6 px): the hole stays fully masked, but the soft edge spreads the fill up to 12 px around it")
    assert message in caplog.text and "image 0" in caplog.text


def test_prepare_mask_returns_its_warnings_for_the_ui(pack_module):
    prepare_mask = pack_module("nodes.masks").prepare_mask
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 18:22, 18:22] = 1
    prepared, warnings = prepare_mask(mask, 0.5, "none", 1, 2.0)
    assert warnings == ["feather 2 px is at least half the size of the smallest hole (4x4 px): the hole stays fully "
                        "masked, but the soft edge spreads the fill up to 2 px around it, more than the hole itself; "
                        "lower feather to keep the change local"]
    assert prepare_mask(mask, 0.5, "none", 1, 1.5)[1] == [] and prepare_mask(mask, 0.5, "dilate", 9, 0.0)[1] == []


def test_cancel_interrupts_a_large_kernel(call, comfy):
    comfy.interrupt_after = 3
    with pytest.raises(Exception, match="Processing interrupted"):
        call("LamaFFC_PrepareMask", mask=_soft_square(size=300), threshold=0.5, operation="dilate", kernel_size=255,
             feather=0.0)
    assert comfy.interrupt_checks == 3


@pytest.mark.parametrize(("shape", "batch"), [((40, 40), 1), ((2, 40, 40), 2), ((2, 1, 40, 40), 2)])
def test_every_mask_layout_gives_b_h_w(call, shape, batch):
    mask = torch.zeros(shape)
    mask[..., 10:30, 10:30] = 1
    (out,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="erode", kernel_size=3, feather=0.0)
    assert out.shape == (batch, 40, 40) and int(out[0].sum()) == 18 * 18


@pytest.mark.parametrize(("inputs", "text"), [
    ({"mask": torch.zeros(1, 3, 8, 8)}, r"mask: expected shape \(H, W\), \(B, H, W\) or \(B, 1, H, W\), got \(1, 3, 8, 8\)"),
    ({"operation": "open"}, "operation: expected one of"),
    ({"kernel_size": 0}, "kernel_size: expected >= 1"),
    ({"feather": -1.0}, "feather: expected >= 0"),
])
def test_bad_inputs_are_named(call, inputs, text):
    args = {"mask": torch.zeros(8, 8), "threshold": 0.5, "operation": "erode", "kernel_size": 3, "feather": 0.0}
    with pytest.raises(ValueError, match=text):
        call("LamaFFC_PrepareMask", **{**args, **inputs})
