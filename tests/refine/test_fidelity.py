"""The refinement reproduces the official goldens (fixtures README §3.3 and §6 tolerances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lama_multiscale_refine.ffc import masks
from lama_testing import hwc, image_from_case
from lama_multiscale_refine.refine import RefineSettings, ScaleOptions, build_pyramid, plan_scales, refine, refine_pyramid
from lama_multiscale_refine.refine.core import EROSION_SIZE
from lama_multiscale_refine.refine.pyramid import loss_mask_down, pad_reflect_to_multiple, resize_to_budget

CASES = ["refine_2scales", "refine_3scales", "refine_odd", "refine_oddodd", "refine_thin", "refine_budget"]


def _settings(params: dict, **overrides) -> RefineSettings:
    return RefineSettings(
        n_iters=params["n_iters"], lr=params["lr"], min_side=params["min_side"], max_scales=params["max_scales"],
        px_budget=params["px_budget"], keep_budget_size=True, checkpointing="off", **overrides,
    )


@pytest.mark.parametrize("name", CASES)
def test_pyramid_structure_is_exact(name, load_case):
    case = load_case(name)
    image, mask = image_from_case(case)
    settings = _settings(case["params"])
    n = plan_scales(*image.shape[-2:], settings)
    assert n == int(case["n_scales"])
    image, mask = resize_to_budget(image, mask, settings.px_budget)
    levels = build_pyramid(image, mask, n)
    assert [list(i.shape[-2:]) for i, _ in levels] == case["pyramid_hw"].tolist()
    for scale, (level_image, level_mask) in enumerate(levels):
        np.testing.assert_array_equal(level_mask[0, 0].numpy(), case[f"scale{scale}_mask"])
        padded = pad_reflect_to_multiple(level_mask, 8)
        assert list(padded.shape[-2:]) == case["padded_hw"][scale].tolist()
        np.testing.assert_array_equal((padded >= 1e-8)[0, 0].numpy().astype(np.uint8), case[f"scale{scale}_mask_padded"])
        if scale > 0:
            eroded = masks.erode(loss_mask_down((padded >= 1e-8).float()[..., : level_mask.shape[-2], : level_mask.shape[-1]]), EROSION_SIZE)
            np.testing.assert_array_equal((eroded >= 1)[0, 0].numpy().astype(np.uint8), case[f"scale{scale}_eroded_mask"])


def _run(generator, case, fused: bool):
    image, mask = image_from_case(case)
    infos: list[dict] = []
    settings = _settings(case["params"], fused=fused)
    result, reports = refine(generator, image, mask, settings, callback=infos.append)
    return image, mask, result, reports, infos


def _check_against_golden(case, tolerances, image, result, infos, scale_results):
    tol = tolerances["refine"]
    n = int(case["n_scales"])
    assert list(result.shape[-2:]) == case["output_hw"].tolist()
    for scale in range(1, n):
        got = [i for i in infos if i["scale"] == scale]
        assert len(got) == case["params"]["n_iters"]
        for key, bound in [("loss", 1e-6), ("loss_known", 1e-6), ("loss_ref", 1e-6), ("pred_hole_mean", 2e-6)]:
            values = np.array([i[key] for i in got])
            golden = case[f"scale{scale}_{key}"]
            np.testing.assert_array_equal(np.isnan(values), np.isnan(golden))  # NaN exactly where official is
            finite = ~np.isnan(golden)
            if finite.any():
                assert np.abs(values[finite] - golden[finite]).max() <= bound, (scale, key)

    scale0 = hwc(scale_results[0])
    assert np.abs(scale0 - (case["scale0_output"] if n > 1 else case["output"])).max() <= 2e-5
    hole_bound = tol["hole pixels of optimised-scale outputs (scale{i}_output for i>=1, output)"]
    for scale in range(1, n):
        got = hwc(scale_results[scale])
        golden = case["output"] if scale == n - 1 else case[f"scale{scale}_output"]
        hole = case[f"scale{scale}_mask_padded"][: got.shape[0], : got.shape[1]] > 0
        diff = np.abs(got - golden)
        assert diff[hole].max() <= hole_bound["max_abs"] and diff[hole].mean() <= hole_bound["mean_abs"]
        assert diff[~hole].max() <= 1e-6  # known pixels: the pyramid image
    out = hwc(result)
    hole = case[f"scale{n - 1}_mask_padded"][: out.shape[0], : out.shape[1]] > 0
    if case["params"]["px_budget"] >= image.shape[-2] * image.shape[-1]:
        np.testing.assert_array_equal(out[~hole], hwc(image)[~hole])  # exact
        np.testing.assert_array_equal(out[~hole], case["output"][~hole])


@pytest.mark.parametrize("name", CASES)
def test_faithful_refinement_matches_official(name, load_case, tiny_generator, tolerances):
    case = load_case(name)
    image, mask = image_from_case(case)
    infos: list[dict] = []
    settings = _settings(case["params"], fused=False)
    n = plan_scales(*image.shape[-2:], settings)
    work_image, work_mask = resize_to_budget(image, mask, settings.px_budget)
    options = ScaleOptions(n_iters=settings.n_iters, lr=settings.lr, keep_results=True)
    result, reports = refine_pyramid(tiny_generator, work_image, work_mask, n, options, callback=infos.append)
    _check_against_golden(case, tolerances, image, result, infos, [r.result for r in reports])


@pytest.mark.parametrize("name", ["refine_2scales", "refine_thin", "refine_oddodd", "refine_budget"])
def test_public_api_matches_official(name, load_case, tiny_generator, tolerances):
    """refine() with its optimised defaults (fused rear, frozen weights, no-grad where unused) stays faithful."""
    case = load_case(name)
    image, _, result, reports, infos = _run(tiny_generator, case, fused=True)
    assert reports[0].regions[0].n_scales == int(case["n_scales"])
    final = [i for i in infos if i["scale"] == int(case["n_scales"]) - 1]
    assert len(final) == case["params"]["n_iters"]
    golden = case[f"scale{int(case['n_scales']) - 1}_loss"]
    values = np.array([i["loss"] for i in final])
    np.testing.assert_array_equal(np.isnan(values), np.isnan(golden))
    finite = ~np.isnan(golden)
    if finite.any():
        assert np.abs(values[finite] - golden[finite]).max() <= 1e-6
    out = hwc(result)
    n = int(case["n_scales"])
    hole = case[f"scale{n - 1}_mask_padded"][: out.shape[0], : out.shape[1]] > 0
    diff = np.abs(out - case["output"])
    assert diff[hole].max() <= 1e-2 and diff[hole].mean() <= 2e-4
    assert diff[~hole].max() <= 1e-6


def test_thin_case_loss_is_nan_but_result_is_finite(load_case, tiny_generator):
    case = load_case("refine_thin")
    _, _, result, _, infos = _run(tiny_generator, case, fused=True)
    assert all(math.isnan(i["loss"]) for i in infos if i["scale"] == 1)
    assert torch.isfinite(result).all()
