"""Resolution strategies for plain inference, as IOPaint users know them.

* ``original``: one pass at full resolution (the official behaviour).
* ``resize_to_limit``: when the longer side exceeds ``resize_limit``, inpaint a downscaled copy,
  upscale the result (bicubic) and paste only the hole pixels into the full-size original.
* ``crop_around_mask``: inpaint each hole's bounding box plus ``crop_margin`` px of context (more
  context from the other side where an edge cuts it off) and paste the hole pixels back. Much
  faster than a full pass for small holes in large photos; separate holes get separate crops,
  snapped onto the generator's 8 px grid and merged where one crop is cheaper than several.

What runs is decided beforehand by :func:`ffc.plan.plan_inpaint` (boxes, sizes, memory);
:func:`inpaint_with_strategy` executes such a plan. Every strategy returns the input size, with
unmasked pixels bit-identical to the input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_inpaint_inputs
from .inference import binarize, inpaint
from .plan import (
    DEFAULT_CROP_MARGIN,
    DEFAULT_RESIZE_LIMIT,
    DEFAULT_STRATEGY,
    STRATEGIES,
    InpaintPlan,
    InpaintUnit,
    plan_inpaint,
)

__all__ = ["STRATEGIES", "inpaint_with_strategy", "run_unit"]


def _resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    # Antialiased bicubic has no MPS kernel in many torch releases: do that one resize on the CPU.
    source = image.cpu() if image.device.type == "mps" else image
    return F.interpolate(source, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1).to(image.device)


def _resize_hole(hole: Tensor, size: tuple[int, int]) -> Tensor:
    # Any hole pixel that touches a small pixel makes it a hole (never shrink the hole).
    return (F.interpolate(hole, size=size, mode="area") > 0).to(hole.dtype)


def run_unit(model: nn.Module, image: Tensor, hole: Tensor, unit: InpaintUnit,
             cancel: Callable[[], bool] | None = None) -> Tensor:
    """Inpaint ``unit.box`` of one image (1, 3, H, W) with its binary hole; returns that box, filled."""
    top, left, bottom, right = unit.box
    crop, crop_hole = image[..., top:bottom, left:right], hole[..., top:bottom, left:right]
    if not unit.resized:
        return inpaint(model, crop, crop_hole, cancel=cancel)
    filled = inpaint(model, _resize_image(crop, unit.work_size), _resize_hole(crop_hole, unit.work_size), cancel=cancel)
    up = F.interpolate(filled, size=crop.shape[-2:], mode="bicubic", align_corners=False).clamp_(0, 1)
    return torch.where(crop_hole > 0, up, crop)


def inpaint_with_strategy(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    *,
    strategy: str = DEFAULT_STRATEGY,
    threshold: float = 0.0,
    resize_limit: int = DEFAULT_RESIZE_LIMIT,
    crop_margin: int = DEFAULT_CROP_MARGIN,
    plan: InpaintPlan | None = None,
    cancel: Callable[[], bool] | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Plain LaMa inpainting with a resolution strategy; see the module docstring.

    Args:
        model: generator (or fused generator) on ``image``'s device.
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W); ``mask > threshold`` is filled.
        strategy: one of :data:`STRATEGIES`.
        resize_limit: longer side for ``resize_to_limit`` (>= 16).
        crop_margin: context in px around each hole for ``crop_around_mask``.
        plan: what to run, from :func:`ffc.plan.plan_inpaint` for this mask (then strategy,
            resize_limit and crop_margin are not used); None = plan here without a memory guard.
        cancel: polled between the generator's layers; True raises :class:`ffc.Cancelled`.
        callback: called after every forward with ``image``, ``unit``, ``n_units``, ``box``.

    Returns:
        (B, 3, H, W), the input outside the binarised holes.
    """
    check_inpaint_inputs(image, mask, model)
    if plan is None:
        plan = plan_inpaint(model, mask, strategy=strategy, threshold=threshold, resize_limit=resize_limit,
                            crop_margin=crop_margin)
    if len(plan.images) != image.shape[0] or plan.size != tuple(image.shape[-2:]):
        raise ValueError(f"plan: made for {len(plan.images)} images of {plan.size}, got {tuple(image.shape)}")

    hole = binarize(mask, threshold).to(image.dtype)
    out = image.clone()
    for index, image_plan in enumerate(plan.images):
        single, single_hole = image[index : index + 1], hole[index : index + 1]
        for number, unit in enumerate(image_plan.units):
            top, left, bottom, right = unit.box
            # Boxes never overlap, so reading the original image is the same as reading ``out``.
            out[index : index + 1, :, top:bottom, left:right] = run_unit(model, single, single_hole, unit, cancel)
            if callback is not None:
                callback({"image": index, "unit": number, "n_units": len(image_plan.units), "box": unit.box})
    return out
