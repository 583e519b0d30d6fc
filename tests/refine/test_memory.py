"""refine.memory: the estimate against the measured peak, and checkpointing that really saves."""

from __future__ import annotations

import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference
from lama_testing import random_generator
from lama_multiscale_refine.refine import ScaleOptions, estimate_refine_bytes, refine_pyramid
from lama_multiscale_refine.refine.core import rear_segments
from lama_multiscale_refine.refine.memory import peak_tensor_bytes


def _measured_peak(model, size: int, checkpoint_rear: bool = False) -> int:
    """Peak live bytes of a real two-scale refinement whose finest scale is ``size`` x ``size``."""
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, size, size, generator=g)
    hole = torch.zeros(1, 1, size, size)
    hole[..., size // 5 : size // 2, size // 3 : 4 * size // 5] = 1  # not the probes' hole
    options = ScaleOptions(n_iters=3, checkpoint_rear=checkpoint_rear)
    with torch.enable_grad():
        return peak_tensor_bytes(lambda: refine_pyramid(model, image, hole, 2, options))


def _models():
    eager = random_generator(ngf=8, n_blocks=6)
    return {"eager": eager, "fused": fuse_for_inference(eager, channels_last=True)}


@pytest.mark.parametrize("kind", ["eager", "fused"])
@pytest.mark.parametrize("checkpoint_rear", [False, True])
def test_estimate_is_the_measured_peak(kind, checkpoint_rear):
    model = _models()[kind]
    size = 224  # not a probe size
    estimate = estimate_refine_bytes(model, size, size, checkpoint_rear=checkpoint_rear)
    measured = _measured_peak(model, size, checkpoint_rear)
    assert abs(estimate.tensor_bytes - measured) <= 0.1 * measured, (estimate.tensor_bytes, measured)


def test_estimate_grows_with_the_pixels():
    model = _models()["fused"]
    small = estimate_refine_bytes(model, 128, 128)
    large = estimate_refine_bytes(model, 256, 256)
    assert large.tensor_bytes == pytest.approx(small.fixed + 4 * (small.tensor_bytes - small.fixed), rel=1e-6)
    assert large.per_pixel > 0 and 3.5 < large.tensor_bytes / small.tensor_bytes <= 4.0


def test_cpu_estimates_add_the_resident_sets_overhead():
    """On the CPU the resident set must fit: measured +1.68 GiB over the tensors at 1024 px (fused)."""
    model = _models()["fused"]
    cpu = estimate_refine_bytes(model, 512, 512)  # the model's device
    gpu = estimate_refine_bytes(model, 512, 512, device="cuda")  # a device name only: nothing runs there
    assert gpu.resident_overhead == 0 and gpu.total == gpu.tensor_bytes == cpu.tensor_bytes
    assert cpu.total - cpu.tensor_bytes == cpu.resident_overhead
    assert cpu.resident_overhead / 2**30 == pytest.approx(0.58, abs=0.01)
    assert estimate_refine_bytes(model, 1024, 1024).resident_overhead / 2**30 == pytest.approx(1.68, abs=0.01)


def test_weight_gradients_are_counted():
    eager = random_generator(ngf=8, n_blocks=6)
    frozen = estimate_refine_bytes(eager, 128, 128)
    trainable = estimate_refine_bytes(eager.requires_grad_(True), 128, 128)
    weights = sum(p.numel() * p.element_size() for p in eager.parameters())
    assert trainable.fixed >= weights  # every weight gets a gradient, whatever the image size
    assert trainable.tensor_bytes > frozen.tensor_bytes


@pytest.mark.parametrize("kind", ["eager", "fused"])
def test_checkpointing_needs_less_memory(kind):
    """The fallback the node takes when memory is short must really need less, fused model included."""
    model = _models()[kind]
    plain = estimate_refine_bytes(model, 256, 256)
    checkpointed = estimate_refine_bytes(model, 256, 256, checkpoint_rear=True)
    assert checkpointed.total < plain.total
    assert _measured_peak(model, 256, True) < _measured_peak(model, 256, False)


def test_checkpoint_segments_cover_the_rear_in_order():
    for kind, model in _models().items():
        segments = rear_segments(model)
        body = model.body if kind == "fused" else model.model
        layers = [layer for segment, _ in segments for layer in segment]
        assert layers == list(body[model.config.first_block_index :])
        blocks = [len(segment) for segment, recompute in segments if recompute][: 6 if kind == "eager" else 3]
        if kind == "fused":  # 6 blocks in groups of round(sqrt(6)) = 2; the decoder runs normally
            assert blocks == [2, 2, 2] and segments[-1][1] is False and len(segments) == 4
        else:  # one block per segment, then one segment per decoder stage, all recomputed
            assert blocks == [1] * 6 and all(recompute for _, recompute in segments)
