"""The input checks every inpainting entry point shares: the model, the image's value range."""

from __future__ import annotations

import pytest
import torch

from lama_multiscale_refine.ffc import LamaConfig, LamaGenerator, fuse_for_inference, inpaint
from lama_multiscale_refine.ffc.checks import RANGE_TOLERANCE, check_model, check_unit_range
from lama_multiscale_refine.ffc.strategies import inpaint_with_strategy
from lama_multiscale_refine.refine import RefineSettings, refine


def _inputs(scale: float = 1.0, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * scale + offset
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 10:22] = 1
    return image, mask


ENTRY_POINTS = {
    "inpaint": lambda model, image, mask: inpaint(model, image, mask),
    "inpaint_with_strategy": lambda model, image, mask: inpaint_with_strategy(model, image, mask, strategy="crop_around_mask"),
    "refine": lambda model, image, mask: refine(model, image, mask, RefineSettings(n_iters=1, min_side=16)),
}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in model.state_dict().items()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_model_in_training_mode_is_refused_and_left_untouched(small_generator, entry):
    model = small_generator.train()
    before = _state(model)
    with pytest.raises(ValueError, match=r"model: expected eval mode, got a model in training mode; call model.eval\(\)"):
        ENTRY_POINTS[entry](model, *_inputs())
    assert model.training  # not switched behind the caller's back
    after = _state(model)
    assert all(torch.equal(before[name], after[name]) for name in before)  # BatchNorm statistics included


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("fused", [False, True])
def test_a_generator_that_does_not_take_four_channels_is_refused(entry, fused):
    model = LamaGenerator(LamaConfig(ngf=8, n_blocks=1, in_channels=5)).eval()
    if fused:
        model = fuse_for_inference(model)
    with pytest.raises(ValueError, match="model: its first convolution takes 5 input channels, expected 4"):
        ENTRY_POINTS[entry](model, *_inputs())


def test_a_generator_that_does_not_produce_rgb_is_refused():
    model = LamaGenerator(LamaConfig(ngf=8, n_blocks=1, out_channels=1)).eval()
    with pytest.raises(ValueError, match=r"model: produces 1 output channels, expected 3 \(RGB\)"):
        inpaint(model, *_inputs())


def test_something_that_is_not_a_generator_is_named():
    with pytest.raises(TypeError, match="model: expected a LamaGenerator or a fused one"):
        check_model(torch.nn.Conv2d(4, 3, 3))
    with pytest.raises(TypeError, match=r"model: expected a LamaGenerator or a fused one \(ffc.fuse_for_inference\), got str"):
        check_model("big-lama.pt")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_an_image_in_0_255_is_refused(small_generator, entry):
    image, mask = _inputs(scale=255)
    with pytest.raises(ValueError, match=r"image: expected values in \[0, 1\], got values from .* to 25\d.*divide by 255"):
        ENTRY_POINTS[entry](small_generator, image, mask)


@pytest.mark.parametrize(("low", "high", "ok"), [
    (0.0, 1.0, True),
    (-0.2, 1.2, True),  # resampling overshoot, e.g. a bicubic upscale in the graph: kept as it is
    (-RANGE_TOLERANCE, 1 + RANGE_TOLERANCE, True),
    (0.0, 1.3, False),
    (-0.3, 1.0, False),
    (0.0, 2.0, False),
])
def test_range_tolerance(low, high, ok):
    t = torch.tensor([low, 0.5, high])
    if ok:
        check_unit_range("image", t)
    else:
        with pytest.raises(ValueError, match=r"image: expected values in \[0, 1\]"):
            check_unit_range("image", t)


def test_overshoot_passes_and_comes_back_bit_identical(small_generator):
    image, mask = _inputs(scale=1.4, offset=-0.2)  # -0.2 .. 1.2
    out = inpaint(small_generator, image, mask)
    known = mask.expand_as(image) == 0
    assert torch.equal(out[known], image[known])
