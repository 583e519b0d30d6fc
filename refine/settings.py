"""Every refinement setting, its default and its allowed values, declared once.

The library (:func:`refine.refine`, :func:`refine.plan`), the ComfyUI node and the command line
all read their defaults and choices from here; nothing else spells them out again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .speed import SpeedOptions, validate_speed

__all__ = ["RefineSettings", "MODES", "PRECISIONS", "CHECKPOINTING", "MIN_COARSEST", "AUTO_COARSEST_SIDE"]

# "paper": exactly the settings given (their defaults are the paper's); "auto": the planner picks
# scales, crop-to-mask, working size and checkpointing for this machine and image (refine/plan.py).
MODES = ("paper", "auto")
PRECISIONS = ("fp32", "bf16")
CHECKPOINTING = ("auto", "on", "off")
# Smallest side of the coarsest pyramid level (the generator needs 16 px).
MIN_COARSEST = 16
# Auto mode puts the coarsest level near LaMa's training resolution (256 px crops).
AUTO_COARSEST_SIDE = 256


@dataclass(frozen=True)
class RefineSettings:
    """All refinement settings; the defaults are the paper's, our output-size rule aside.

    ``mode="auto"`` lets the planner choose the number of scales (coarsest level near 256 px,
    per region), crop-to-mask (when the hole boxes cover less than half of the image), the
    working size (free memory, ``max_seconds``) and checkpointing; ``min_side``, ``max_scales``,
    ``n_scales`` and ``crop_to_mask`` are then not used. ``px_budget`` caps the working size in
    both modes.
    """

    n_iters: int = 15
    lr: float = 0.002
    min_side: int = 512
    max_scales: int = 3
    px_budget: int = 1_800_000
    n_scales: int | None = None  # overrides min_side/max_scales when set
    keep_budget_size: bool = False
    crop_to_mask: bool = False
    crop_margin: int = 128
    separate_holes: bool = True
    early_stop_tol: float = 0.0
    early_stop_patience: int = 2
    precision: str = "fp32"
    checkpointing: str = "auto"
    fused: bool = True  # BatchNorm folded, light backward (same numbers); False = the official eager model
    freeze_weights: bool = True  # False: weights require grad (weight gradients the official code never computes)
    memory_fraction: float = 0.9  # of the free memory the estimate may use
    mode: str = "paper"
    max_seconds: float | None = None  # auto mode: fit the predicted time into this (None = no limit)
    speed: SpeedOptions = SpeedOptions()  # cuDNN benchmark, TF32, channels_last, compile: see refine.speed

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(isinstance(self.n_iters, int) and self.n_iters >= 1, f"n_iters: expected an integer >= 1, got {self.n_iters!r}")
        need(_finite(self.lr) and self.lr > 0, f"lr: expected a positive learning rate, got {self.lr!r}")
        need(isinstance(self.min_side, int) and self.min_side >= 1, f"min_side: expected an integer >= 1, got {self.min_side!r}")
        need(isinstance(self.max_scales, int) and self.max_scales >= 1, f"max_scales: expected an integer >= 1, got {self.max_scales!r}")
        need(_finite(self.px_budget) and self.px_budget >= MIN_COARSEST**2,
             f"px_budget: expected at least {MIN_COARSEST ** 2} pixels, got {self.px_budget!r}")
        need(self.n_scales is None or (isinstance(self.n_scales, int) and self.n_scales >= 1),
             f"n_scales: expected None or an integer >= 1, got {self.n_scales!r}")
        need(isinstance(self.crop_margin, int) and self.crop_margin >= 0,
             f"crop_margin: expected an integer >= 0 pixels, got {self.crop_margin!r}")
        need(_finite(self.early_stop_tol) and self.early_stop_tol >= 0,
             f"early_stop_tol: expected >= 0 (0 = off), got {self.early_stop_tol!r}")
        need(self.early_stop_patience >= 1, f"early_stop_patience: expected >= 1, got {self.early_stop_patience!r}")
        need(self.precision in PRECISIONS, f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        need(self.checkpointing in CHECKPOINTING, f"checkpointing: expected one of {CHECKPOINTING}, got {self.checkpointing!r}")
        need(_finite(self.memory_fraction) and 0 < self.memory_fraction <= 1,
             f"memory_fraction: expected a value in (0, 1], got {self.memory_fraction!r}")
        need(self.mode in MODES, f"mode: expected one of {MODES}, got {self.mode!r}")
        need(self.max_seconds is None or (_finite(self.max_seconds) and self.max_seconds > 0),
             f"max_seconds: expected None (no limit) or a positive, finite number of seconds, got {self.max_seconds!r}")
        need(not (self.keep_budget_size and self.crop_to_mask), "keep_budget_size cannot be combined with crop_to_mask")
        need(not (self.keep_budget_size and self.mode == "auto"),
             "keep_budget_size needs mode='paper' (auto mode may crop to the holes)")
        validate_speed(self.speed)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype convolutions autocast to, or None for float32 throughout."""
        return torch.bfloat16 if self.precision == "bf16" else None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
