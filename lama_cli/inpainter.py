"""One image through plain LaMa or the multiscale refinement: float32 RGB in [0, 1] in and out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

import ffc
from ffc.strategies import inpaint_with_strategy
from refine import RefineSettings, refine

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

    strategy: str = "original"
    resize_limit: int = 1280
    crop_margin: int = 128


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

    def fill(self, rgb: np.ndarray, mask_hw: np.ndarray,
             callback: Callable[[dict], None] | None = None) -> Fill:
        """Inpaint (H, W, 3) float32 ``rgb`` in [0, 1] where the (H, W) float32 ``mask_hw`` says.

        The caller composites ``Fill.rgb`` into its own samples inside ``Fill.hole``, so that pixels
        outside the hole stay identical at the file's precision.
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
        note = None
        if self.mode == "plain":
            options = self.plain_options
            with torch.inference_mode():
                result = inpaint_with_strategy(self.model, image, hole, strategy=options.strategy,
                                               resize_limit=options.resize_limit, crop_margin=options.crop_margin)
        else:
            result, reports = refine(self.model, image, hole, self.refine_settings, callback=callback)
            note = reports[0].skipped
        return Fill(result[0].permute(1, 2, 0).float().cpu().numpy(), hole_hw, note)
