"""refine.timing: rates measured once per model kind and device, fitted and scaled by pixels.

The accuracy on Big-LaMa is a benchmark (benchmarks/bench_plan.py), never a timed test; these
tests check the mechanics with a tiny generator.
"""

from __future__ import annotations

import math

import pytest
import torch

import lama_multiscale_refine.refine.timing as timing
from lama_multiscale_refine.refine import RefineSettings, plan
from lama_multiscale_refine.refine.timing import Rate, TimeProfile, time_profile, unit_seconds

CPU = torch.device("cpu")


def _profile(model, **options):
    kwargs = {"device": CPU, "dtype": torch.float32, "fused": True, "freeze_weights": True, "autocast_dtype": None}
    return time_profile(model, **{**kwargs, **options})


@pytest.mark.measured_timing
def test_rates_are_measured_once_per_kind(small_generator, monkeypatch):
    calls: list[str] = []
    real = timing._measure_rate
    monkeypatch.setattr(timing, "_measure_rate", lambda m, a, op: calls.append(op) or real(m, a, op))
    first = _profile(small_generator)
    assert calls == ["infer", "step"]
    assert first.infer.per_pixel > 0 and first.step.per_pixel > 0 and first.step_checkpointed is None
    assert first.source == "measured on cpu (float32, fused)"
    assert _profile(small_generator) == first and calls == ["infer", "step"]  # cached
    with_checkpointing = _profile(small_generator, checkpointed=True)
    assert calls == ["infer", "step", "step_checkpointed"] and with_checkpointing.step_checkpointed.per_pixel > 0
    _profile(small_generator, fused=False)  # another kind: measured again
    assert calls[3:] == ["infer", "step"]


@pytest.mark.measured_timing
def test_a_measured_plan_predicts_a_finite_time(small_generator):
    image = torch.rand(1, 3, 96, 128)
    mask = torch.zeros(1, 1, 96, 128)
    mask[..., 30:60, 40:90] = 1
    made = plan(small_generator, image, mask, RefineSettings(min_side=48, n_iters=4))
    assert math.isfinite(made.predicted_seconds) and made.predicted_seconds > 0
    assert made.time_source.startswith("measured on cpu")


def test_fit_is_a_line_through_two_samples_and_never_a_negative_fixed_cost():
    rate = Rate.fit([(200, 3.0), (100, 2.0)])
    assert rate == Rate(1.0, 0.01) and rate.seconds(300) == pytest.approx(4.0)
    noisy = Rate.fit([(100, 2.0), (200, 1.5)])  # the larger probe was faster: proportional fallback
    assert noisy == Rate(0.0, 1.5 / 200)


def test_unit_seconds_sum_the_scales():
    profile = TimeProfile(Rate(1.0, 0.0), Rate(2.0, 0.0), Rate(3.0, 0.0))
    # Coarsest: one forward (1 s); finer: one forward plus (n_iters - 1) steps.
    assert unit_seconds(profile, [(16, 16), (32, 32)], 4, False) == 1 + (1 + 3 * 2)
    assert unit_seconds(profile, [(16, 16), (32, 32)], 4, True) == 1 + (1 + 3 * 3)
    assert math.isnan(unit_seconds(None, [(16, 16)], 4, False))
