"""LamaFFC_Inpaint: outputs, layouts, batches, soft masks, device/progress glue, out-of-memory retry."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference, inpaint
from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict

H, W = 40, 48


def _run(call, lama, image, mask, **options):
    args = {"strategy": "original", "resize_limit": 1280, "crop_margin": 128, "mask_threshold": 0.0, **options}
    return call("LamaFFC_Inpaint", model=lama, image=image, mask=mask, **args)


def _reference(tiny_state, image, hole):
    model = fuse_for_inference(generator_from_state_dict(tiny_state)).eval()
    with torch.inference_mode():
        return inpaint(model, image.movedim(-1, 1), hole[:, None]).movedim(1, -1)


def test_fills_the_hole_and_keeps_everything_else(call, lama, tiny_state, random_image, box_mask):
    image, mask = random_image(2, H, W), box_mask(2, H, W)
    out, used = _run(call, lama, image, mask)
    assert out.shape == image.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    keep = (mask == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep])  # bit-identical outside the hole
    assert not torch.equal(out, image)
    assert torch.equal(used, mask)
    torch.testing.assert_close(out, _reference(tiny_state, image, mask), atol=1e-6, rtol=0)


def test_uses_model_management_and_a_progress_step_per_forward(call, comfy, lama, random_image, box_mask):
    _run(call, lama, random_image(3, H, W), box_mask(1, H, W))
    (load,) = comfy.loads
    assert load["models"] == [lama.patcher] and load["memory_required"] > 0 and load["force_full_load"]
    (bar,) = comfy.progress
    assert bar.total == 3 and [value for value, _ in bar.updates] == [0, 1, 2, 3, 3]
    assert comfy.interrupt_checks > 3  # polled between the generator's layers
    assert "plan: original: 48x40, 3 forwards" in comfy.node_text


def test_alpha_passes_through(call, lama, random_image, box_mask):
    image = random_image(1, H, W, channels=4)
    out, _ = _run(call, lama, image, box_mask(1, H, W))
    assert out.shape == (1, H, W, 4) and torch.equal(out[..., 3], image[..., 3])


def test_mask_batch_of_one_is_used_for_every_image(call, lama, random_image, box_mask):
    image = random_image(2, H, W)
    out, used = _run(call, lama, image, box_mask(1, H, W))
    assert used.shape == (2, H, W)
    single, _ = _run(call, lama, image[1:], box_mask(1, H, W))
    torch.testing.assert_close(out[1:], single, atol=1e-6, rtol=0)


def test_per_image_masks(call, lama, random_image, box_mask):
    mask = torch.cat([box_mask(1, H, W), torch.zeros(1, H, W)])
    image = random_image(2, H, W)
    out, _ = _run(call, lama, image, mask)
    assert torch.equal(out[1], image[1]) and not torch.equal(out[0], image[0])


def test_batch_mismatch_names_both_shapes(call, lama, random_image, box_mask):
    with pytest.raises(ValueError, match=r"batch of 2 masks \(2, 1, 40, 48\).*batch of 3 images \(3, 3, 40, 48\)"):
        _run(call, lama, random_image(3, H, W), box_mask(2, H, W))


def test_other_mask_size_is_resized_with_a_warning(call, lama, random_image, caplog):
    mask = torch.zeros(1, 20, 24)
    mask[:, 4:12, 5:12] = 1
    with caplog.at_level(logging.WARNING):
        out, used = _run(call, lama, random_image(1, H, W), mask)
    assert used.shape == (1, H, W)
    assert torch.equal(used, torch.nn.functional.interpolate(mask[:, None], size=(H, W), mode="nearest-exact")[:, 0])
    assert any("mask is 24x20 but the image is 48x40" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("layout", ["hw", "b1hw"])
def test_mask_layouts(call, lama, random_image, box_mask, layout):
    mask = box_mask(1, H, W)
    mask = mask[0] if layout == "hw" else mask[:, None]
    out, used = _run(call, lama, random_image(1, H, W), mask)
    assert used.shape == (1, H, W)


def test_load_image_empty_mask_returns_the_image(call, comfy, lama, random_image, caplog):
    image = random_image(1, H, W)
    with caplog.at_level(logging.WARNING):
        out, used = _run(call, lama, image, torch.zeros(1, 64, 64))  # LoadImage without alpha
    assert torch.equal(out, image) and used.shape == (1, H, W) and not used.any()
    assert comfy.loads == []  # the model was not even loaded
    assert any("nothing to inpaint" in r.getMessage() for r in caplog.records)


def test_full_mask(call, lama, random_image):
    out, used = _run(call, lama, random_image(1, H, W), torch.ones(1, H, W))
    assert out.shape == (1, H, W, 3) and bool(used.all()) and bool(torch.isfinite(out).all())


def test_soft_mask_blends_inside_the_hole(call, lama, random_image, box_mask):
    image = random_image(1, H, W)
    hard = box_mask(1, H, W)
    filled, _ = _run(call, lama, image, hard)
    soft = hard * 0.25
    blended, used = _run(call, lama, image, soft)
    assert torch.equal(used, hard)  # LaMa fills the binarised hole ...
    torch.testing.assert_close(blended, 0.25 * filled + 0.75 * image)  # ... the soft mask blends it in
    # A threshold above the soft values leaves nothing to fill.
    same, none = _run(call, lama, image, soft, mask_threshold=0.5)
    assert torch.equal(same, image) and not none.any()


@pytest.mark.parametrize("strategy", ["resize_to_limit", "crop_around_mask"])
def test_strategies_keep_size_and_known_pixels(call, lama, random_image, box_mask, strategy):
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, _ = _run(call, lama, image, mask, strategy=strategy, resize_limit=32, crop_margin=8)
    keep = (mask == 0)[..., None].expand_as(image)
    assert out.shape == image.shape and torch.equal(out[keep], image[keep])


def test_memory_estimate_follows_the_strategy(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    _run(call, lama, image, mask)
    _run(call, lama, image, mask, strategy="crop_around_mask", crop_margin=0)
    full, cropped = (load["memory_required"] for load in comfy.loads)
    assert 0 < cropped < full


def test_bf16_model_runs(call, comfy, random_image, box_mask):
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, _ = _run(call, model, image, mask)
    keep = (mask == 0)[..., None].expand_as(image)
    assert out.dtype == torch.float32 and torch.equal(out[keep], image[keep])


def test_out_of_memory_retries_once_on_crops(call, comfy, lama, pack_module, monkeypatch, random_image, box_mask):
    module = pack_module("nodes.inpaint")
    real, strategies = module.inpaint_with_strategy, []

    def flaky(model, image, mask, **options):
        strategies.append(options["plan"].images[0].strategy)
        if len(strategies) == 1:
            raise comfy.oom_exception("CUDA out of memory")
        return real(model, image, mask, **options)

    monkeypatch.setattr(module, "inpaint_with_strategy", flaky)
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, _ = _run(call, lama, image, mask)
    assert strategies == ["original", "crop_around_mask"] and comfy.cache_flushes == 1
    assert out.shape == image.shape


@pytest.mark.parametrize("with_raise_non_oom", [True, False])
def test_other_errors_are_not_retried(call, comfy, lama, pack_module, monkeypatch, random_image, box_mask,
                                      with_raise_non_oom):
    # On CPU-only ComfyUI OOM_EXCEPTION is plain Exception: that must not turn bugs into retries.
    comfy.with_raise_non_oom, comfy.oom_exception = with_raise_non_oom, Exception
    for name, module in comfy.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise ValueError("a bug")

    monkeypatch.setattr(pack_module("nodes.inpaint"), "inpaint_with_strategy", broken)
    with pytest.raises(ValueError, match="a bug"):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W))
    assert len(calls) == 1


def test_persistent_out_of_memory_propagates(call, comfy, lama, pack_module, monkeypatch, random_image, box_mask):
    def always(*args, **kwargs):
        raise comfy.oom_exception("CUDA out of memory")

    monkeypatch.setattr(pack_module("nodes.inpaint"), "inpaint_with_strategy", always)
    with pytest.raises(comfy.oom_exception):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W))


def test_cancel_inside_a_forward_then_run_again(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(3, H, W), box_mask(1, H, W)
    expected, _ = _run(call, lama, image, mask)
    checks = comfy.interrupt_checks
    comfy.interrupt_after = checks + checks // 3 + 2  # somewhere inside the second image's forward
    with pytest.raises(Exception, match="Processing interrupted"):
        _run(call, lama, image, mask)
    assert [value for value, _ in comfy.progress[-1].updates] == [0, 1]
    comfy.interrupt_after = None
    again, _ = _run(call, lama, image, mask)
    assert torch.equal(again, expected)  # the model is unchanged by the cancel


@pytest.mark.parametrize(("image", "text"), [
    (torch.rand(1, H, W, 2), r"image: expected shape \(B, H, W, 3\) or \(B, H, W, 4\), got \(1, 40, 48, 2\)"),
    (torch.rand(H, W, 3), r"image: expected shape .* got \(40, 48, 3\)"),
    (torch.zeros(1, H, W, 3, dtype=torch.uint8), "image: expected a float IMAGE"),
])
def test_bad_images_are_named(call, lama, box_mask, image, text):
    with pytest.raises((ValueError, TypeError), match=text):
        _run(call, lama, image, box_mask(1, H, W))


def test_memory_guard_switches_strategy_and_says_so(call, comfy, lama, pack_module, monkeypatch, random_image):
    image = random_image(1, 96, 128)
    mask = torch.zeros(1, 96, 128)
    mask[:, 10:20, 10:20] = 1
    ffc_plan = pack_module("ffc.plan")
    full = ffc_plan.inference_bytes(lama.info.config, 96, 128)
    monkeypatch.setattr(pack_module("nodes._common"), "available_bytes", lambda device: int(full * 0.8))
    out, _ = _run(call, lama, image, mask, crop_margin=8)
    keep = (mask == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert "warning: image 0: original needs ~" in comfy.node_text
    assert "inpainting 1 crop around the holes instead" in comfy.node_text
    (load,) = comfy.loads
    assert load["memory_required"] < full * 0.8
