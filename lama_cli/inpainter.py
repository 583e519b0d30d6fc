"""One image through plain LaMa or the multiscale refinement: float32 RGB in [0, 1] in and out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from .. import ffc
from ..ffc.plan import DEFAULT_CROP_MARGIN, DEFAULT_RESIZE_LIMIT, DEFAULT_STRATEGY, InpaintPlan, plan_inpaint
from ..ffc.strategies import inpaint_with_strategy
from ..refine import RefinePlan, RefineSettings, available_bytes, plan, refine

__all__ = ["MODES", "MaskOptions", "PlainOptions", "Fill", "Inpainter", "hole_from_mask"]

MODES = ("plain", "refine")


@dataclass(frozen=True)
class MaskOptions:
    """How a grey-level mask becomes the hole: ``> threshold``, then erode, then dilate."""

    threshold: float = 0.0  # fraction of white; 0 = any non-black pixel (official)
    erode: int = 0  # disk diameter in px; 0 or 1 = off
    dilate: int = 0


@dataclass(frozen=True)
class PlainOptions:
    """Resolution strategy of plain inference (see :mod:`ffc.strategies`)."""

    strategy: str = DEFAULT_STRATEGY
    resize_limit: int = DEFAULT_RESIZE_LIMIT
    crop_margin: int = DEFAULT_CROP_MARGIN


def hole_from_mask(mask_hw: np.ndarray, options: MaskOptions, device: torch.device) -> Tensor:
    """(1, 1, H, W) float 0/1 hole from an (H, W) float32 mask in [0, 1] (1 = white)."""
    if mask_hw.dtype != np.float32 or mask_hw.ndim != 2:
        raise TypeError(f"mask_hw: expected an (H, W) float32 array in [0, 1], got {mask_hw.dtype} {mask_hw.shape}")
    mask = torch.from_numpy(mask_hw).to(device)[None, None]
    hole = ffc.binarize(mask, options.threshold)
    # Erode first so that --erode removes specks before --dilate grows what is left.
    hole = ffc.masks.erode(hole, options.erode)
    return ffc.masks.dilate(hole, options.dilate)


@dataclass(frozen=True)
class Fill:
    """The model's work on one image."""

    rgb: np.ndarray | None  # (H, W, 3) float32 in [0, 1], the input outside the hole; None: nothing to fill
    hole: np.ndarray  # (H, W) bool, the hole after --threshold, --erode and --dilate
    note: str | None = None  # e.g. why nothing was filled


class Inpainter:
    """A generator prepared once for one mode, device and precision; :meth:`fill` per image."""

    def __init__(self, generator: ffc.LamaGenerator, *, device: torch.device, dtype: str, mode: str,
                 mask_options: MaskOptions = MaskOptions(), plain_options: PlainOptions = PlainOptions(),
                 refine_settings: RefineSettings = RefineSettings()) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        # Plain inference runs in the weights' dtype; the refinement autocasts to bf16 itself and
        # optimises float32 features, so its weights stay float32.
        weights = torch.bfloat16 if (mode == "plain" and dtype == "bf16") else torch.float32
        # Fused once here rather than per image; eval() because refine() insists on eval mode.
        self.model = ffc.fuse_for_inference(generator.to(device, weights), channels_last=device.type == "cpu").eval()
        self.device = device
        self.mode = mode
        self.mask_options = mask_options
        self.plain_options = plain_options
        self.refine_settings = replace(refine_settings, precision=dtype)

    def plan(self, mask_hw: np.ndarray) -> RefinePlan | InpaintPlan:
        """What :meth:`fill` will do for this (H, W) float32 mask (the plan it executes), without running it."""
        return self._plan(hole_from_mask(mask_hw, self.mask_options, self.device))

    def _plan(self, hole: Tensor) -> RefinePlan | InpaintPlan:
        if self.mode == "plain":
            options = self.plain_options
            # The memory guard: a strategy that would not fit becomes crops or a resized copy.
            return plan_inpaint(self.model, hole, strategy=options.strategy, resize_limit=options.resize_limit,
                                crop_margin=options.crop_margin, free_bytes=available_bytes(self.device))
        shape_only = torch.zeros(1, 3, 1, 1, device=self.device).expand(1, 3, *hole.shape[-2:])
        return plan(self.model, shape_only, hole, self.refine_settings)

    def fill(self, rgb: np.ndarray, mask_hw: np.ndarray,
             callback: Callable[[dict], None] | None = None) -> Fill:
        """Inpaint (H, W, 3) float32 ``rgb`` in [0, 1] where the (H, W) float32 ``mask_hw`` says.

        The caller composites ``Fill.rgb`` into its own samples inside ``Fill.hole``, so that pixels
        outside the hole stay identical at the file's precision. ``Fill.note`` carries the plan's
        warnings (e.g. one scale only, a memory fallback).
        """
        if rgb.dtype != np.float32 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise TypeError(f"rgb: expected an (H, W, 3) float32 array in [0, 1], got {rgb.dtype} {rgb.shape}")
        if mask_hw.shape != rgb.shape[:2]:
            raise ValueError(f"mask_hw: expected {rgb.shape[:2]} to match rgb, got {mask_hw.shape}")
        hole = hole_from_mask(mask_hw, self.mask_options, self.device)
        hole_hw = hole[0, 0].cpu().numpy() > 0
        if not hole_hw.any():
            return Fill(None, hole_hw, "empty mask, image copied unchanged")
        image = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None]
        made = self._plan(hole)
        warnings = [n.text.removeprefix("image 0: ") for n in made.notes if n.level == "warning"]
        note = "; ".join(warnings) or None
        if self.mode == "plain":
            with torch.inference_mode():
                result = inpaint_with_strategy(self.model, image, hole, plan=made)
        else:
            result, _ = refine(self.model, image, hole, plan=made, callback=callback)
        return Fill(result[0].permute(1, 2, 0).float().cpu().numpy(), hole_hw, note)
