"""Predicted refinement time: measured once per architecture, dtype and device, scaled by pixels.

A refinement is a sequence of two operations whose cost grows with the pixels they run at:

* ``infer``: one no-grad forward, front and rear (plain LaMa; the coarsest scale; the front and
  the last forward of every finer scale);
* ``step``: one optimisation step of a finer scale: the rear with autograd, the official loss,
  backward, Adam on the features (``step_checkpointed`` with the rear recomputed in backward).

Each is timed on the device that will run, with a model of the same architecture, weight dtype,
memory format and autocast (fresh weights: speed does not depend on their values), at two probe
sizes (the faster of two runs each), and fitted as ``seconds = fixed + per_pixel * pixels``. On a
2-core CPU, Big-LaMa's time per pixel is flat from ~224 to 640 px (measured: 10 us per pixel for a
forward, 21 for a step), so two probes in that range extrapolate. A profile costs about 10 s for
Big-LaMa on a 2-core CPU (much less on a GPU, or for small models) and is kept for the process
(one per key, like the memory profile).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import ffc
from .core import _masked_l1, _run_rear
from .pyramid import pyrdown

__all__ = ["Rate", "TimeProfile", "time_profile", "unit_seconds", "PROBE_SIDES"]

log = logging.getLogger(__name__)

# Probe sides (multiples of 8). The larger one leaves the CPU's caches, as real sizes do.
PROBE_SIDES = (160, 320)


@dataclass(frozen=True)
class Rate:
    """``seconds = fixed + per_pixel * pixels`` for one operation."""

    fixed: float
    per_pixel: float

    def seconds(self, pixels: float) -> float:
        return self.fixed + self.per_pixel * pixels

    @classmethod
    def fit(cls, samples: list[tuple[int, float]]) -> Rate:
        """Line through two (pixels, seconds) samples; never a negative fixed cost."""
        (p1, t1), (p2, t2) = sorted(samples)
        per_pixel = (t2 - t1) / (p2 - p1)
        fixed = t2 - per_pixel * p2
        if fixed < 0 or per_pixel <= 0:  # noise: fall back to proportional to the larger probe
            return cls(0.0, t2 / p2)
        return cls(fixed, per_pixel)


@dataclass(frozen=True)
class TimeProfile:
    """Measured rates of one model kind on one device."""

    infer: Rate
    step: Rate
    step_checkpointed: Rate | None = None  # measured only when a plan checkpoints
    source: str = ""

    def scale_seconds(self, pixels: int, iterations: int, checkpointed: bool) -> float:
        """One pyramid scale of ``pixels`` (padded) with ``iterations`` forwards (1 = coarsest)."""
        step = self.step_checkpointed if checkpointed and self.step_checkpointed is not None else self.step
        return self.infer.seconds(pixels) + (iterations - 1) * step.seconds(pixels)


def unit_seconds(profile: TimeProfile | None, padded_scales: list[tuple[int, int]], n_iters: int,
                 checkpointed: bool) -> float:
    """Seconds of one pyramid run over ``padded_scales`` (coarsest first); NaN without a profile."""
    if profile is None:
        return float("nan")
    return sum(profile.scale_seconds(h * w, 1 if index == 0 else n_iters, checkpointed)
               for index, (h, w) in enumerate(padded_scales))


# (work kind, config, dtype, device, channels_last, autocast dtype, operation) -> Rate; measured once.
_RATES: dict[tuple, Rate] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(device: torch.device, run: Callable[[], None]) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def _kind(fused: bool, freeze_weights: bool) -> str:
    return "fused" if fused else ("frozen" if freeze_weights else "trainable")


def _usable(model: nn.Module, kind: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``model`` itself is what the refinement runs and can be timed with autograd."""
    parameter = next(model.parameters())
    fused = isinstance(model, ffc.FastLamaGenerator)
    return ((kind == "fused") == fused and parameter.dtype == dtype and parameter.device == device
            and not any(p.is_inference() for p in model.parameters())
            and (kind != "trainable" or parameter.requires_grad))


def _twin(config, kind: str, dtype: torch.dtype, device: torch.device) -> nn.Module:
    with torch.inference_mode(False):
        generator = ffc.LamaGenerator(config).eval().to(device, dtype)
        if kind == "fused":
            return ffc.fuse_for_inference(generator, channels_last=device.type == "cpu").eval()
        return generator.requires_grad_(kind == "trainable")


def _measure(model: nn.Module, side: int, autocast_dtype: torch.dtype | None, operation: str) -> float:
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    generator = torch.Generator().manual_seed(side)
    x = torch.rand(1, model.config.in_channels, side, side, generator=generator).to(device)
    image = x[:, :3].float()
    if operation == "infer":
        def run() -> None:
            with torch.no_grad(), autocast:
                model.rear(model.front(x))
        return _timed(device, run)

    with torch.no_grad(), autocast:
        local, global_ = model.front(x)
    local = local.detach().float().requires_grad_(True)
    global_ = global_.detach().float().requires_grad_(True)
    optimizer = torch.optim.Adam([local, global_], lr=1e-3)
    known = (torch.arange(side, device=device) < side // 2).expand(1, 3, side, side)
    reference = pyrdown(image)
    coarse = ~known[..., : side // 2, : side // 2]
    checkpointed = operation == "step_checkpointed"

    def run() -> None:  # as refine/core.py's iteration
        with autocast:
            pred = _run_rear(model, (local, global_), checkpointed).float()
        loss = _masked_l1(pred, image, known) + _masked_l1(pyrdown(pred), reference, coarse)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = _timed(device, run)
    for parameter in model.parameters():  # the official-cost mode accumulates weight gradients
        parameter.grad = None
    return seconds


def _measure_rate(model: nn.Module, autocast_dtype: torch.dtype | None, operation: str) -> Rate:
    small, large = PROBE_SIDES
    _measure(model, small, autocast_dtype, operation)  # warm-up: allocator, kernels, autotuning
    # Other work on the machine only ever adds time: the faster of two runs is the better sample.
    samples = [(side**2, min(_measure(model, side, autocast_dtype, operation) for _ in range(2)))
               for side in (small, large)]
    return Rate.fit(samples)


def time_profile(
    model: nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype,
    fused: bool,
    freeze_weights: bool,
    autocast_dtype: torch.dtype | None,
    checkpointed: bool = False,
) -> TimeProfile | None:
    """The rates of the model kind the refinement runs on ``device``, measured once per kind.

    Args:
        model: names the architecture; it is timed itself when it is exactly what runs (the
            fused, autograd-usable model on ``device``), otherwise a twin with fresh weights.
        fused, freeze_weights, dtype, autocast_dtype: what :func:`refine.refine` runs.
        checkpointed: also measure the checkpointed step.

    Returns:
        The profile, or None when it cannot be measured here (out of memory on the device).
    """
    kind = _kind(fused or isinstance(model, ffc.FastLamaGenerator), freeze_weights)
    channels_last = getattr(model, "channels_last", device.type == "cpu") if kind == "fused" else False
    key = (kind, model.config, dtype, str(device), channels_last, autocast_dtype)
    operations = ("infer", "step") + (("step_checkpointed",) if checkpointed else ())
    missing = [op for op in operations if key + (op,) not in _RATES]
    if missing:
        try:
            with torch.inference_mode(False):
                timed = model if _usable(model, kind, dtype, device) else _twin(model.config, kind, dtype, device)
                started = time.perf_counter()
                for op in missing:
                    _RATES[key + (op,)] = _measure_rate(timed, autocast_dtype, op)
            log.debug("LaMa refine: timed %s on %s in %.1f s", ", ".join(missing), device, time.perf_counter() - started)
        except (torch.OutOfMemoryError, MemoryError) as err:
            log.warning("LaMa refine: cannot time the model on %s (%s); no time prediction", device, err)
            return None
    rates = {op: _RATES[key + (op,)] for op in operations}
    source = f"measured on {device} ({str(dtype).removeprefix('torch.')}, {kind}" + (
        f", {str(autocast_dtype).removeprefix('torch.')} autocast)" if autocast_dtype else ")")
    return TimeProfile(rates["infer"], rates["step"], rates.get("step_checkpointed"), source)
