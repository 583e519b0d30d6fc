"""One image through plain LaMa or the multiscale refinement, uint8 arrays in and out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

import ffc
from ffc.plan import DEFAULT_CROP_MARGIN, DEFAULT_RESIZE_LIMIT, DEFAULT_STRATEGY, InpaintPlan, plan_inpaint
from ffc.strategies import inpaint_with_strategy
from refine import RefinePlan, RefineSettings, available_bytes, plan, refine

__all__ = ["MODES", "MaskOptions", "PlainOptions", "Inpainter", "hole_from_mask"]

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
    """(1, 1, H, W) float 0/1 hole from an (H, W) uint8 mask."""
    mask = torch.from_numpy(mask_hw).to(device)[None, None].float() / 255
    hole = ffc.binarize(mask, options.threshold)
    # Erode first so that --erode removes specks before --dilate grows what is left.
    hole = ffc.masks.erode(hole, options.erode)
    return ffc.masks.dilate(hole, options.dilate)


class Inpainter:
    """A generator prepared once for one mode, device and precision; :meth:`run` per image."""

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
        """What :meth:`run` will do for this mask (the plan it executes), without running it."""
        return self._plan(hole_from_mask(mask_hw, self.mask_options, self.device))

    def _plan(self, hole: Tensor) -> RefinePlan | InpaintPlan:
        if self.mode == "plain":
            options = self.plain_options
            # The memory guard: a strategy that would not fit becomes crops or a resized copy.
            return plan_inpaint(self.model, hole, strategy=options.strategy, resize_limit=options.resize_limit,
                                crop_margin=options.crop_margin, free_bytes=available_bytes(self.device))
        shape_only = torch.zeros(1, 3, 1, 1, device=self.device).expand(1, 3, *hole.shape[-2:])
        return plan(self.model, shape_only, hole, self.refine_settings)

    def run(self, rgb: np.ndarray, mask_hw: np.ndarray,
            callback: Callable[[dict], None] | None = None) -> tuple[np.ndarray, str | None]:
        """Inpaint (H, W, 3) uint8 ``rgb`` where ``mask_hw`` says; returns (result, note or None).

        Pixels outside the final hole are copied from ``rgb``, so they are identical in the file.
        The note carries the plan's warnings (e.g. one scale only, a memory fallback).
        """
        hole = hole_from_mask(mask_hw, self.mask_options, self.device)
        if not bool(hole.any()):
            return rgb.copy(), "empty mask, image copied unchanged"
        image = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float() / 255
        made = self._plan(hole)
        warnings = [n.text.removeprefix("image 0: ") for n in made.notes if n.level == "warning"]
        note = "; ".join(warnings) or None
        if self.mode == "plain":
            with torch.inference_mode():
                result = inpaint_with_strategy(self.model, image, hole, plan=made)
        else:
            result, _ = refine(self.model, image, hole, plan=made, callback=callback)
        # Truncation, as the official predict script and ComfyUI's SaveImage write their files.
        filled = (result[0].permute(1, 2, 0) * 255).clamp_(0, 255).to(torch.uint8).cpu().numpy()
        return np.where(hole[0, 0, :, :, None].cpu().numpy() > 0, filled, rgb), note
