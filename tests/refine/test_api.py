"""Behaviour of refine(): our options, hooks, devices/modes and bad input (small random models)."""

from __future__ import annotations

import importlib
import logging
import math

import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference
from lama_testing import random_generator
from lama_multiscale_refine.refine import RefineCancelled, RefineSettings, budget_size, estimate_refine_bytes, plan_scales, refine
from lama_multiscale_refine.refine.memory import available_bytes

planner = importlib.import_module("lama_multiscale_refine.refine.plan")  # the module (refine.plan is also the function)
FAST = dict(n_iters=3, min_side=32, checkpointing="off")


def _image_and_hole(height=64, width=80, batch=1, box=(20, 44, 16, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=g)
    mask = torch.zeros(batch, 1, height, width)
    top, bottom, left, right = box
    mask[..., top:bottom, left:right] = 1
    return image, mask


def _known_exact(result, image, mask) -> bool:
    known = (mask == 0).expand_as(image)
    return torch.equal(result[known], image[known])


def test_output_keeps_input_size_under_pixel_budget(small_generator):
    image, mask = _image_and_hole()
    settings = RefineSettings(**FAST, px_budget=2000)
    result, reports = refine(small_generator, image, mask, settings)
    assert result.shape == image.shape and _known_exact(result, image, mask)
    region = reports[0].regions[0]
    assert region.work_size == budget_size(64, 80, 2000) == (40, 50)
    assert not torch.equal(result, image)

    reduced, _ = refine(small_generator, image, mask, RefineSettings(**FAST, px_budget=2000, keep_budget_size=True))
    assert reduced.shape[-2:] == (40, 50)  # the official behaviour, on request


def test_scale_planning():
    official = RefineSettings()
    assert plan_scales(724, 900, official) == 1  # the official default leaves < 725 px unrefined
    assert plan_scales(725, 900, official) == 2
    assert plan_scales(600, 800, RefineSettings(min_side=256)) == 2  # small images can be refined
    assert plan_scales(600, 800, RefineSettings(n_scales=3)) == 3
    assert plan_scales(2048, 2048, official) == 2  # px_budget caps the official default at 2 scales
    assert plan_scales(2048, 2048, RefineSettings(px_budget=10**7)) == 3
    assert plan_scales(40, 500, RefineSettings(n_scales=4)) == 2  # coarsest level kept >= 16 px


def test_frozen_weights_get_no_gradients_and_match_trainable_weights(small_generator):
    # fused=False is the official cost (frozen, as bin/predict.py's model.freeze()); trainable
    # weights only add weight gradients nobody reads: the same image.
    image, mask = _image_and_hole()
    frozen, _ = refine(small_generator, image, mask, RefineSettings(**FAST, fused=False))
    assert all(p.grad is None and not p.requires_grad for p in small_generator.parameters())
    trainable, _ = refine(small_generator, image, mask, RefineSettings(**FAST, fused=False, freeze_weights=False))
    assert all(p.grad is None and not p.requires_grad for p in small_generator.parameters())  # worked on a copy
    assert torch.allclose(frozen, trainable, atol=1e-5)


def test_crop_to_mask_refines_separate_holes_separately(small_generator):
    image, mask = _image_and_hole(96, 128, box=(8, 20, 8, 24))
    mask[..., 70:86, 100:120] = 1
    infos: list[dict] = []
    settings = RefineSettings(**FAST, max_scales=2, crop_to_mask=True, crop_margin=12)
    result, reports = refine(small_generator, image, mask, settings, callback=infos.append)
    assert result.shape == image.shape and _known_exact(result, image, mask)
    regions = reports[0].regions
    assert len(regions) == 2 and {i["region"] for i in infos} == {0, 1}
    assert all(r.n_scales == plan_scales(96, 128, settings) for r in regions)  # depth of the whole image
    for region in regions:
        top, left, bottom, right = region.box
        assert bottom - top < 96 and right - left < 128
    one, reports = refine(small_generator, image, mask, RefineSettings(**FAST, crop_to_mask=True, crop_margin=12, separate_holes=False))
    assert len(reports[0].regions) == 1 and _known_exact(one, image, mask)


def test_early_stop_reports_iterations(small_generator):
    image, mask = _image_and_hole()
    settings = RefineSettings(n_iters=12, min_side=32, checkpointing="off", early_stop_tol=0.5, early_stop_patience=2)
    result, reports = refine(small_generator, image, mask, settings)
    scale = reports[0].regions[0].scales[-1]
    assert scale.stopped_early and 3 <= scale.iterations < 12
    assert reports[0].iterations == 1 + scale.iterations
    assert _known_exact(result, image, mask)


def test_thin_holes_never_put_nan_into_the_result(small_generator):
    image = torch.rand(1, 3, 96, 96)
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., 40:42, 5:90] = 1  # 2 px stroke: the eroded coarse mask is empty
    infos: list[dict] = []
    result, _ = refine(small_generator, image, mask, RefineSettings(**FAST), callback=infos.append)
    losses = [i["loss"] for i in infos if i["scale"] == 1]
    assert all(math.isnan(v) for v in losses)  # reported like the official code
    assert all(math.isfinite(i["loss_known"]) for i in infos if i["scale"] == 1)
    assert torch.isfinite(result).all() and not torch.equal(result, image)


@pytest.mark.parametrize("case", ["empty", "full", "border"])
def test_edge_masks(small_generator, case):
    image, mask = _image_and_hole()
    if case == "empty":
        mask.zero_()
    elif case == "full":
        mask.fill_(1)
    else:
        mask.zero_()
        mask[..., 50:, 60:] = 1  # touches the bottom and right borders
    result, reports = refine(small_generator, image, mask, RefineSettings(**FAST))
    assert torch.isfinite(result).all() and result.shape == image.shape
    if case == "empty":
        assert torch.equal(result, image) and reports[0].skipped == "empty mask"
    else:
        assert _known_exact(result, image, mask) and not torch.equal(result, image)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (15, 20), (17, 40)])
def test_tiny_images(small_generator, height, width):
    image, mask = _image_and_hole(height, width, box=(2, 6, 3, 7))
    result, reports = refine(small_generator, image, mask, RefineSettings(**{**FAST, "min_side": 4}, n_scales=3))
    assert result.shape == image.shape and torch.isfinite(result).all()
    assert _known_exact(result, image, mask)
    assert reports[0].regions[0].n_scales == plan_scales(height, width, RefineSettings(n_scales=3))


def test_batch_is_refined_image_by_image(small_generator):
    image, mask = _image_and_hole(batch=3)
    mask[1].zero_()
    result, reports = refine(small_generator, image, mask, RefineSettings(**FAST))
    assert reports[1].skipped == "empty mask" and torch.equal(result[1], image[1])
    for i in (0, 2):
        single, _ = refine(small_generator, image[i : i + 1], mask[i : i + 1], RefineSettings(**FAST))
        assert torch.equal(result[i : i + 1], single)


@pytest.mark.parametrize("variant", [
    dict(fused=True), dict(fused=False), dict(fused=False, freeze_weights=False), dict(checkpointing="on"),
    dict(precision="bf16"), dict(full_resolution=True, px_budget=1200, tile_size=32),
])
def test_runs_under_inference_mode_with_a_model_built_there(variant):
    settings = RefineSettings(**{**FAST, **variant})
    outside_generator = random_generator(seed=2)
    image, mask = _image_and_hole()
    expected, _ = refine(outside_generator, image, mask, settings)
    with torch.inference_mode():
        generator = random_generator(seed=2)
        image, mask = _image_and_hole()
        assert next(generator.parameters()).is_inference() and image.is_inference()
        result, reports = refine(generator, image, mask, settings)
    assert torch.equal(result, expected) and _known_exact(result, image, mask)
    assert (reports[0].regions[0].tiles > 0) == settings.full_resolution


def test_cancel_stops_within_one_iteration(small_generator):
    image, mask = _image_and_hole()
    seen: list[dict] = []
    with pytest.raises(RefineCancelled):
        refine(small_generator, image, mask, RefineSettings(n_iters=20, min_side=32), callback=seen.append,
               cancel=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_callback_sees_every_forward_and_may_abort(small_generator):
    image, mask = _image_and_hole()
    seen: list[dict] = []
    refine(small_generator, image, mask, RefineSettings(**FAST), callback=seen.append)
    assert [(i["scale"], i["iteration"]) for i in seen] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert {"image", "n_images", "region", "n_regions", "n_scales", "n_iters", "loss"} <= set(seen[-1])

    def boom(info: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine(small_generator, image, mask, RefineSettings(**FAST), callback=boom)


def test_checkpointing_gives_identical_numbers(small_generator):
    image, mask = _image_and_hole()
    for fused in (True, False):
        plain, _ = refine(small_generator, image, mask, RefineSettings(**{**FAST, "checkpointing": "off"}, fused=fused))
        saved, reports = refine(small_generator, image, mask, RefineSettings(**{**FAST, "checkpointing": "on"}, fused=fused))
        assert reports[0].regions[0].checkpointed
        assert torch.equal(plain, saved)


def test_bfloat16_autocast_on_cpu(small_generator):
    image, mask = _image_and_hole()
    reference, _ = refine(small_generator, image, mask, RefineSettings(**FAST))
    low, _ = refine(small_generator, image, mask, RefineSettings(**FAST, precision="bf16"))
    assert low.dtype == image.dtype and torch.isfinite(low).all()
    assert _known_exact(low, image, mask)
    assert (low - reference).abs().max() < 0.1


def test_fused_model_needs_less_memory(small_generator):
    """Frozen convolutions, shape-only padding and sign-mask ReLUs keep far less for backward."""
    plain = estimate_refine_bytes(small_generator, 256, 256)
    fused = estimate_refine_bytes(fuse_for_inference(small_generator), 256, 256)
    assert fused.tensor_bytes < 0.6 * plain.tensor_bytes  # Big-LaMa: ~0.15 (benchmarks/device_suite.py)


def test_memory_estimate_is_linear_and_checkpointing_saves(small_generator):
    small = estimate_refine_bytes(small_generator, 128, 128)
    large = estimate_refine_bytes(small_generator, 256, 256)
    assert 3.5 < large.tensor_bytes / small.tensor_bytes < 4.5
    assert estimate_refine_bytes(small_generator, 256, 256, checkpoint_rear=True).total < large.total
    assert available_bytes(torch.device("cpu")) > 0


def test_low_memory_turns_on_checkpointing_then_lowers_the_budget(monkeypatch, caplog):
    # Checkpointing pays for the plain generator, whose autograd keeps every activation (the fused
    # model keeps so little that recomputing saves nothing; see test_fused_model_needs_less_memory).
    small_generator = random_generator(ngf=8, n_blocks=6)
    image, mask = _image_and_hole(96, 96, box=(30, 60, 30, 60))
    need = estimate_refine_bytes(small_generator, 96, 96)
    need_ckpt = estimate_refine_bytes(small_generator, 96, 96, checkpoint_rear=True)
    assert need_ckpt.total < need.total
    free = (need.total + need_ckpt.total) / 2 / RefineSettings().memory_fraction
    monkeypatch.setattr(planner, "available_bytes", lambda device: int(free))
    settings = RefineSettings(n_iters=2, min_side=32, fused=False)
    result, reports = refine(small_generator, image, mask, settings)
    assert reports[0].regions[0].checkpointed and result.shape == image.shape

    # Not even checkpointed: the working size goes down (never below 256 x 256 px).
    image, mask = _image_and_hole(320, 320, box=(100, 200, 100, 200))
    fused = fuse_for_inference(small_generator)  # what refine() optimises by default
    # Room for a 272 x 272 checkpointed scale only (a CPU estimate has a fixed resident part too).
    room = estimate_refine_bytes(fused, 272, 272, checkpoint_rear=True)
    assert room.total < estimate_refine_bytes(fused, 320, 320, checkpoint_rear=True).total
    monkeypatch.setattr(planner, "available_bytes", lambda device: int(room.total / RefineSettings().memory_fraction))
    with caplog.at_level(logging.WARNING):
        result, reports = refine(small_generator, image, mask, RefineSettings(n_iters=2, min_side=64))
    assert "lowering the pixel budget" in caplog.text
    assert 256 <= reports[0].regions[0].work_size[0] < 320 and result.shape == image.shape
    assert _known_exact(result, image, mask)

    monkeypatch.setattr(planner, "available_bytes", lambda device: 1000)
    with pytest.raises(MemoryError, match="crop_to_mask"):
        refine(small_generator, image, mask, settings)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_iters", 0, "n_iters"), ("lr", -1.0, "lr"), ("min_side", 0, "min_side"), ("max_scales", 0, "max_scales"),
        ("px_budget", 10, "px_budget"), ("n_scales", 0, "n_scales"), ("crop_margin", -1, "crop_margin"),
        ("early_stop_tol", -0.1, "early_stop_tol"), ("precision", "fp16", "precision"),
        ("checkpointing", "maybe", "checkpointing"), ("memory_fraction", 0.0, "memory_fraction"),
    ],
)
def test_settings_are_validated(small_generator, field, value, message):
    image, mask = _image_and_hole()
    with pytest.raises(ValueError, match=message):
        refine(small_generator, image, mask, RefineSettings(**{field: value}))


def test_bad_input(small_generator):
    image, mask = _image_and_hole()
    bad = image.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image: contains 1 NaN"):
        refine(small_generator, bad, mask)
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 1, 64, 80\)"):
        refine(small_generator, image, mask[..., :60, :])
    with pytest.raises(ValueError, match="eval mode"):
        refine(random_generator().train(), image, mask)
    with pytest.raises(ValueError, match="crop_to_mask"):
        refine(small_generator, image, mask, RefineSettings(keep_budget_size=True, crop_to_mask=True))
