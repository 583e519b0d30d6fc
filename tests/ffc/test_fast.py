"""The inference-only fast path gives the same output as the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference, inpaint, pad_symmetric, predict, binarize
from lama_testing import hwc, image_from_case, random_generator


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_path_matches_official_plain_case(load_case, tiny_generator, tolerances, channels_last):
    case = load_case("plain_odd")
    image, mask = image_from_case(case)
    hp, wp = (int(v) for v in case["padded_hw"])
    fast = fuse_for_inference(tiny_generator, channels_last=channels_last)
    with torch.inference_mode():
        raw = hwc(predict(fast, pad_symmetric(image, hp, wp), pad_symmetric(binarize(mask), hp, wp)))
    tol = tolerances["plain"]["pred_raw_padded"]
    diff = np.abs(raw - case["pred_raw_padded"])
    assert diff.max() <= tol["max_abs"] and diff.mean() <= tol["mean_abs"]
    out = inpaint(fast, image, mask)
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], image[known])


def test_fast_path_matches_eager_on_random_weights():
    generator = random_generator(ngf=12, n_blocks=3, seed=5)
    x = torch.rand(2, 4, 48, 40)
    fast = fuse_for_inference(generator)
    with torch.no_grad():
        expected = generator(x)
        assert (fast(x) - expected).abs().max() < 1e-5


def test_fast_path_leaves_the_generator_untouched(tiny_generator, tiny_state):
    fast = fuse_for_inference(tiny_generator)
    assert all(torch.equal(tiny_generator.state_dict()[k], v) for k, v in tiny_state.items())
    assert fast.config == tiny_generator.config
    assert fast.num_parameters() < tiny_generator.num_parameters()  # BatchNorm folded away
    assert not any(p.requires_grad for p in fast.parameters())
    assert not fast.training


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_rear_gradients_match_the_generator(tiny_generator, channels_last):
    """The refinement differentiates the rear with respect to the features: same gradients."""
    fast = fuse_for_inference(tiny_generator, channels_last=channels_last)
    x = torch.rand(1, 4, 32, 40)
    grads = []
    for model in (tiny_generator, fast):
        with torch.no_grad():
            local, global_ = (f.detach().contiguous() for f in model.front(x))
        local.requires_grad_(True)
        global_.requires_grad_(True)
        model.rear((local, global_)).square().mean().backward()
        grads.append((local.grad, global_.grad))
    for reference, fused in zip(*grads):
        assert torch.allclose(fused, reference, rtol=1e-4, atol=1e-8)


def test_fast_path_requires_eval_mode(tiny_generator):
    with pytest.raises(ValueError, match="eval mode"):
        fuse_for_inference(tiny_generator.train())
