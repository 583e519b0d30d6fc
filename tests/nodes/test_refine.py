"""LamaFFC_Refine: outputs, batches, cancellation, progress, memory, precision, out-of-memory retries."""

from __future__ import annotations

import pytest
import torch

from ffc import fuse_for_inference
from ffc.checkpoint import generator_from_state_dict
from refine import RefineSettings, refine

H, W = 32, 40
FAST = {"n_iters": 2, "lr": 0.002, "min_side": 16, "max_scales": 2, "px_budget": 1_800_000, "crop_to_mask": False,
        "crop_margin": 128, "early_stop_tol": 0.0, "precision": "auto", "mask_threshold": 0.0}
FORWARDS_PER_IMAGE = 1 + 2  # coarsest scale: one forward; the finer scale: n_iters


def _run(call, lama, image, mask, **options):
    return call("LamaFFC_Refine", model=lama, image=image, mask=mask, **{**FAST, **options})


def _spy_refine(pack_module, monkeypatch, fail_times: int = 0, error: type | None = None) -> list:
    """Record (settings, model dtype) of every refine() call; raise ``error`` the first ``fail_times``."""
    module = pack_module("nodes.refinement")
    real, seen = module.refine, []

    def spy(model, image, mask, settings, **kwargs):
        seen.append((settings, next(model.parameters()).dtype))
        if len(seen) <= fail_times:
            raise error("CUDA out of memory")
        return real(model, image, mask, settings, **kwargs)

    monkeypatch.setattr(module, "refine", spy)
    return seen


def test_refines_the_hole_and_keeps_everything_else(call, comfy, lama, tiny_state, random_image, box_mask):
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, used = _run(call, lama, image, mask)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    keep = (mask == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep]) and not torch.equal(out, image)
    assert torch.equal(used, mask)
    model = fuse_for_inference(generator_from_state_dict(tiny_state)).eval()
    settings = RefineSettings(n_iters=2, min_side=16, max_scales=2)
    expected, _ = refine(model, image.movedim(-1, 1), mask[:, None], settings)
    torch.testing.assert_close(out, expected.movedim(1, -1), atol=1e-5, rtol=0)


def test_memory_estimate_and_progress_per_iteration(call, comfy, lama, random_image, box_mask):
    _run(call, lama, random_image(2, H, W), box_mask(1, H, W))
    (load,) = comfy.loads
    assert load["models"] == [lama.patcher] and load["force_full_load"]
    assert load["memory_required"] > lama.weight_bytes  # activations on top of the weight copy
    (bar,) = comfy.progress
    assert bar.total == 2 * FORWARDS_PER_IMAGE
    assert [value for value, _ in bar.updates] == list(range(1, 2 * FORWARDS_PER_IMAGE + 1)) + [bar.total]
    assert comfy.interrupt_checks == 2 * FORWARDS_PER_IMAGE


def test_cancel_stops_within_one_iteration(call, comfy, lama, random_image, box_mask):
    comfy.interrupt_after = 2
    with pytest.raises(Exception, match="Processing interrupted") as caught:
        _run(call, lama, random_image(2, H, W), box_mask(1, H, W))
    assert type(caught.value).__name__ == "StubInterrupt"  # not swallowed as an out-of-memory retry
    assert [value for value, _ in comfy.progress[0].updates] == [1, 2]  # no forward after the check
    assert len(comfy.progress) == 1


def test_alpha_and_batch_masks(call, lama, random_image, box_mask):
    image = random_image(2, H, W, channels=4)
    mask = torch.cat([box_mask(1, H, W), torch.zeros(1, H, W)])
    out, _ = _run(call, lama, image, mask)
    assert out.shape == (2, H, W, 4) and torch.equal(out[..., 3], image[..., 3])
    assert torch.equal(out[1], image[1])


def test_empty_mask_returns_the_image(call, comfy, lama, random_image):
    image = random_image(1, H, W)
    out, used = _run(call, lama, image, torch.zeros(64, 64))
    assert torch.equal(out, image) and not used.any() and comfy.loads == []


def test_full_mask(call, lama, random_image):
    out, used = _run(call, lama, random_image(1, H, W), torch.ones(1, H, W))
    assert out.shape == (1, H, W, 3) and bool(torch.isfinite(out).all()) and bool(used.all())


def test_crop_to_mask_keeps_size_and_known_pixels(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(1, 48, 64), box_mask(1, 48, 64, size=10)
    out, _ = _run(call, lama, image, mask, crop_to_mask=True, crop_margin=8, min_side=8)
    keep = (mask == 0)[..., None].expand_as(image)
    assert out.shape == image.shape and torch.equal(out[keep], image[keep])
    assert comfy.progress[0].updates[-1][0] == comfy.progress[0].total


def test_mask_mismatch_is_named(call, lama, random_image, box_mask):
    with pytest.raises(ValueError, match=r"batch of 3 masks .* batch of 2 images"):
        _run(call, lama, random_image(2, H, W), box_mask(3, H, W))


def test_bad_settings_are_named(call, lama, random_image, box_mask):
    with pytest.raises(ValueError, match="precision: expected one of"):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W), precision="fp16")


@pytest.mark.parametrize(("model_dtype", "precision", "expected", "weights"), [
    ("fp32", "auto", "fp32", torch.float32),
    ("bf16", "auto", "bf16", torch.bfloat16),
    ("fp32", "bf16", "bf16", torch.float32),
    ("bf16", "fp32", "fp32", torch.float32),  # a float32 copy, not the bf16 weights
])
def test_precision(call, comfy, pack_module, monkeypatch, random_image, box_mask, model_dtype, precision, expected,
                   weights):
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype=model_dtype)
    seen = _spy_refine(pack_module, monkeypatch)
    out, _ = _run(call, model, random_image(1, H, W), box_mask(1, H, W), precision=precision)
    ((settings, dtype),) = seen
    assert settings.precision == expected and dtype == weights and out.dtype == torch.float32
    if (model_dtype, precision) == ("bf16", "fp32"):
        assert comfy.freed and not comfy.loads  # room made for the copy; the bf16 model not loaded
    else:
        assert len(comfy.loads) == 1


def test_out_of_memory_retries_with_checkpointing_then_half_budget(call, comfy, lama, pack_module, monkeypatch,
                                                                    random_image, box_mask):
    seen = _spy_refine(pack_module, monkeypatch, fail_times=2, error=comfy.oom_exception)
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, _ = _run(call, lama, image, mask, px_budget=1_000_000)
    assert [(s.checkpointing, s.px_budget) for s, _ in seen] == [("auto", 1_000_000), ("on", 1_000_000), ("on", 500_000)]
    assert comfy.cache_flushes == 2 and out.shape == image.shape


def test_persistent_out_of_memory_propagates(call, comfy, lama, pack_module, monkeypatch, random_image, box_mask):
    seen = _spy_refine(pack_module, monkeypatch, fail_times=99, error=comfy.oom_exception)
    with pytest.raises(comfy.oom_exception):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W))
    assert len(seen) == 3
