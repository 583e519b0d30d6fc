"""LamaFFC_Refine: outputs, batches, plan, messages, previews, cancellation, memory, precision, retries."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference
from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict
from lama_multiscale_refine.refine import RefineSettings, refine

H, W = 32, 40
FAST = {"n_iters": 2, "lr": 0.002, "min_side": 16, "max_scales": 2, "px_budget": 1_800_000, "crop_to_mask": False,
        "crop_margin": 128, "early_stop_tol": 0.0, "precision": "auto", "mask_threshold": 0.0, "mode": "paper",
        "max_seconds": 0.0}
FORWARDS_PER_IMAGE = 1 + 2  # coarsest scale: one forward; the finer scale: n_iters


def _run(call, lama, image, mask, **options):
    return call("LamaFFC_Refine", model=lama, image=image, mask=mask, **{**FAST, **options})


def _spy_refine(pack_module, monkeypatch, fail_times: int = 0, error: type | None = None) -> list:
    """Record (plan, model dtype) of every refine() call; raise ``error`` the first ``fail_times``."""
    module = pack_module("nodes.refinement")
    real, seen = module.refine, []

    def spy(model, image, mask, settings=None, **kwargs):
        seen.append((kwargs["plan"], next(model.parameters()).dtype))
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


def test_memory_request_and_progress_follow_the_plan(call, comfy, lama, pack_module, monkeypatch, random_image,
                                                      box_mask):
    seen = _spy_refine(pack_module, monkeypatch)
    _run(call, lama, random_image(2, H, W), box_mask(1, H, W))
    ((made, _),) = seen
    assert made.forwards == 2 * FORWARDS_PER_IMAGE
    (load,) = comfy.loads
    assert load["models"] == [lama.patcher] and load["force_full_load"]
    # The plan's peak on top of the weight copy refine() makes of inference-mode weights.
    assert load["memory_required"] == made.predicted_peak_bytes + lama.weight_bytes
    (bar,) = comfy.progress
    assert bar.total == made.forwards
    assert [value for value, _ in bar.updates] == [0, *range(1, made.forwards + 1), made.forwards]
    assert comfy.interrupt_checks > 2 * FORWARDS_PER_IMAGE  # polled inside every forward and backward too


def test_the_plan_and_its_decisions_are_shown_on_the_node(call, comfy, lama, random_image, box_mask):
    _run(call, lama, random_image(1, H, W), box_mask(1, H, W), min_side=512)
    assert comfy.texts and all(node == comfy.node_id for node, _ in comfy.texts)
    text = comfy.node_text
    assert "plan: 1 scale at 40x32 (no refinement: plain LaMa), 1 forwards" in text
    assert "warning: 1 scale for 40x32 with min_side 512: no refinement" in text


def test_each_finished_scale_is_the_preview(call, comfy, lama, random_image, box_mask):
    _run(call, lama, random_image(1, H, W), box_mask(1, H, W))
    (bar,) = comfy.progress
    # Two scales: the coarsest after forward 1, the finest after its n_iters = 2 forwards.
    assert [value for value, _ in bar.previews] == [1, 3]
    kind, picture, max_size = bar.previews[-1][1]
    assert kind == "JPEG" and max_size == 512 and picture.size == (W, H) and picture.mode == "RGB"
    assert bar.previews[0][1][1].size == (W // 2, H // 2)


def test_without_a_server_messages_are_only_logged(call, comfy, lama, monkeypatch, random_image, box_mask, caplog):
    comfy.with_server = False
    for name, module in comfy.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    with caplog.at_level(logging.INFO):
        out, _ = _run(call, lama, random_image(1, H, W), box_mask(1, H, W))
    assert comfy.texts == [] and out.shape == (1, H, W, 3)
    assert any("plan: 2 scales 20->40" in r.getMessage() for r in caplog.records)


def test_auto_mode_is_the_default_and_says_what_it_chose(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(1, 400, 416), box_mask(1, 400, 416, top=100, left=100, size=220)
    options = {k: v for k, v in FAST.items() if k not in ("mode", "min_side", "max_scales")}
    out, _ = call("LamaFFC_Refine", model=lama, image=image, mask=mask, **options)
    keep = (mask == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert "plan: 2 scales 208->416" in comfy.node_text  # auto: coarsest near 256 px
    assert "auto refines the whole image" in comfy.node_text
    assert comfy.progress[0].total == 1 + 2


def test_auto_mode_fits_max_seconds(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(1, 400, 416), box_mask(1, 400, 416, top=100, left=100, size=220)
    options = {**FAST, "mode": "auto", "n_iters": 15}
    # The fixed test time rates (tests/lama_testing.py) predict ~0.5 s for 15 iterations.
    _run(call, lama, image, mask, **{**options, "max_seconds": 0.2})
    assert "warning: max_seconds 0.2: n_iters lowered from 15 to" in comfy.node_text


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_nonsense_time_budgets_are_named(call, lama, random_image, box_mask, value):
    with pytest.raises(ValueError, match="max_seconds: expected None"):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W), max_seconds=value)


def test_cancel_stops_inside_the_first_forward(call, comfy, lama, random_image, box_mask):
    comfy.interrupt_after = 2
    with pytest.raises(Exception, match="Processing interrupted") as caught:
        _run(call, lama, random_image(2, H, W), box_mask(1, H, W))
    assert type(caught.value).__name__ == "StubInterrupt"  # not swallowed as an out-of-memory retry
    assert [value for value, _ in comfy.progress[0].updates] == [0]  # stopped before the first forward ended
    assert len(comfy.progress) == 1


def test_alpha_and_batch_masks(call, lama, random_image, box_mask):
    image = random_image(2, H, W, channels=4)
    mask = torch.cat([box_mask(1, H, W), torch.zeros(1, H, W)])
    out, _ = _run(call, lama, image, mask)
    assert out.shape == (2, H, W, 4) and torch.equal(out[..., 3], image[..., 3])
    assert torch.equal(out[1], image[1])


def test_empty_mask_returns_the_image_and_says_so(call, comfy, lama, random_image):
    image = random_image(1, H, W)
    out, used = _run(call, lama, image, torch.zeros(64, 64))
    assert torch.equal(out, image) and not used.any() and comfy.loads == []
    assert "warning: LaMa Multiscale Refine: the mask is empty" in comfy.node_text


def test_a_resized_mask_is_said_on_the_node(call, comfy, lama, random_image):
    mask = torch.zeros(1, 16, 20)
    mask[:, 4:10, 5:12] = 1
    _run(call, lama, random_image(1, H, W), mask)
    assert "warning: mask is 20x16 but the image is 40x32; resizing the mask (nearest)" in comfy.node_text


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
    ((made, dtype),) = seen
    assert made.settings.precision == expected and dtype == weights and out.dtype == torch.float32
    if (model_dtype, precision) == ("bf16", "fp32"):
        assert comfy.freed and not comfy.loads  # room made for the copy; the bf16 model not loaded
    else:
        assert len(comfy.loads) == 1


def test_out_of_memory_replans_for_the_memory_free_then_half(call, comfy, lama, pack_module, monkeypatch,
                                                               random_image, box_mask):
    seen = _spy_refine(pack_module, monkeypatch, fail_times=2, error=comfy.oom_exception)
    frees = []
    monkeypatch.setattr(pack_module("nodes.refinement"), "available_bytes",
                        lambda device: frees.append(device) or 2**30)  # "free now", at each retry
    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, _ = _run(call, lama, image, mask, px_budget=1_000_000)
    assert len(seen) == 3 and comfy.cache_flushes == 2 and out.shape == image.shape
    assert len(frees) == 2 and len({id(made) for made, _ in seen}) == 3  # a new plan for each retry
    assert "retrying with a plan for the memory free now" in comfy.node_text
    assert "retrying with a plan for half the memory free now" in comfy.node_text


def test_persistent_out_of_memory_propagates(call, comfy, lama, pack_module, monkeypatch, random_image, box_mask):
    seen = _spy_refine(pack_module, monkeypatch, fail_times=99, error=comfy.oom_exception)
    with pytest.raises(comfy.oom_exception):
        _run(call, lama, random_image(1, H, W), box_mask(1, H, W))
    assert len(seen) == 3


def test_full_resolution_tiles_above_the_budget(call, comfy, lama, random_image, box_mask):
    image, mask = random_image(1, 96, 128), box_mask(1, 96, 128, top=20, left=30, size=60)
    out, _ = _run(call, lama, image, mask, px_budget=10_000, full_resolution=True)
    keep = (mask == 0)[..., None].expand_as(image)
    assert out.shape == image.shape and torch.equal(out[keep], image[keep])
    assert "full resolution to 128 in" in comfy.node_text  # the plan says it tiles
    assert "full resolution: the pyramid runs up to" in comfy.node_text


def test_a_large_result_is_previewed_from_a_subsampled_view(pack_module):
    preview_image = pack_module("nodes._ui").preview_image
    large = torch.rand(1, 3, 2100, 3000)
    kind, picture, max_size = preview_image(large)
    assert kind == "JPEG" and max_size == 512
    assert picture.size == (1000, 700)  # every 3rd pixel: at most twice the preview size, never below it
    assert picture.getpixel((1, 2)) == tuple(round(float(v) * 255) for v in large[0, :, 6, 3])
    assert preview_image(torch.rand(1, 3, 700, 900))[1].size == (900, 700)  # small results are shown whole
