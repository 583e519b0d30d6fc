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


@pytest.mark.parametrize(("height", "width"), [(8, 8), (7, 9), (6, 5), (1, 4)])
def test_shape_only_fft_has_autograds_gradient(height, width):
    """The real FFT that keeps no input for backward gives ATen's gradient (odd and even sizes)."""
    from lama_multiscale_refine.ffc.fast import _RealFFT2

    x = torch.randn(2, height, width, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_RealFFT2.apply, (x,))
    grad = torch.randn(2, height, width // 2 + 1, 3, dtype=torch.complex128)
    (expected,) = torch.autograd.grad(torch.fft.rfftn(x, dim=(1, 2), norm="ortho"), x, grad)
    (got,) = torch.autograd.grad(_RealFFT2.apply(x), x, grad)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("padding", [(1, 1, 1, 1), (3, 3, 3, 3), (0, 2, 1, 0)])
def test_channels_last_reflect_pad_backward_matches_aten(padding):
    from lama_multiscale_refine.ffc.fast import reflect_pad

    x = torch.randn(2, 5, 7, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        leaf = x.clone().contiguous(memory_format=layout).requires_grad_(True)
        out = reflect_pad(leaf, padding)
        (grad,) = torch.autograd.grad(out, leaf, torch.arange(out.numel(), dtype=x.dtype).reshape(out.shape)
                                      .contiguous(memory_format=layout))
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-9)
    assert grads[1].is_contiguous(memory_format=torch.channels_last)  # no layout round trip


def test_fused_rear_keeps_only_light_state_for_backward():
    """Frozen convolutions keep only weights, ReLUs 1-byte masks, padding and FFT only shapes."""
    fast = fuse_for_inference(random_generator(ngf=8, n_blocks=2))
    with torch.no_grad():
        local, global_ = fast.front(torch.rand(1, 4, 64, 64))
    local.requires_grad_(True)
    global_.requires_grad_(True)
    weights = {p.data_ptr() for p in fast.parameters()}
    kept = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:
            kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fast.rear((local, global_))
    assert kept and all(t.dtype == torch.bool for t in kept[:-1])
    assert kept[-1].shape == (1, 3, 64, 64)  # the sigmoid's output, its only float state
