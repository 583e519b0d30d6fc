"""Resolution strategies for plain inference, as IOPaint users know them.

* ``original``: one pass at full resolution (the official behaviour).
* ``resize_to_limit``: when the longer side exceeds ``resize_limit``, inpaint a downscaled copy,
  upscale the result (bicubic) and paste only the hole pixels into the full-size original.
* ``original`` above a memory limit (``original_tiled``, chosen by the plan's memory guard when
  not even crops around the holes fit): a global pass on a resized copy gives the structure;
  full-resolution tiles over the holes (:mod:`ffc.tiles`) give the detail: each tile's
  prediction minus its own low-pass (resized to the global pass's scale and back) is added to the
  upscaled global fill, and the tiles are cross-faded in their overlaps. Tiles agree with each
  other where it shows most (the large structures), and the memory is bounded by the tile size.
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
from .inference import binarize, inpaint, predict
from .plan import (
    DEFAULT_CROP_MARGIN,
    DEFAULT_RESIZE_LIMIT,
    DEFAULT_STRATEGY,
    STRATEGIES,
    TILED,
    InpaintPlan,
    InpaintUnit,
    plan_inpaint,
)
from .tiles import add_tile

__all__ = ["STRATEGIES", "inpaint_with_strategy", "run_unit", "run_tiled"]


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
    return torch.where(crop_hole > 0, up, crop, out=up)  # into the upscaled copy: no second full-size one


def run_tiled(model: nn.Module, image: Tensor, hole: Tensor, units: tuple[InpaintUnit, ...],
              cancel: Callable[[], bool] | None = None, callback: Callable[[int], None] | None = None,
              *, out: Tensor | None = None) -> Tensor:
    """``original_tiled`` on one image (1, 3, H, W): the global pass ``units[0]``, then the tiles.

    Returns the image (1, 3, H, W) with the holes filled: ``out`` (holding ``image``; its hole
    pixels are overwritten) when given, else a new tensor. Full-size buffers besides the output:
    the global fill upscaled and the hole (:data:`ffc.plan.TILED_FULL_SIZE_BYTES_PER_PIXEL`).
    """
    global_unit, tiles = units[0], units[1:]
    base = run_unit(model, image, hole, global_unit, cancel)  # the global fill, upscaled, in the hole
    if callback is not None:
        callback(0)
    scale_h = global_unit.work_size[0] / image.shape[-2]
    scale_w = global_unit.work_size[1] / image.shape[-1]
    holes = hole > 0
    out = image.clone() if out is None else out
    out.masked_fill_(holes, 0)  # hole pixels: the sum of the tiles' weighted fills
    for number, unit in enumerate(tiles, start=1):
        top, left, bottom, right = unit.box
        crop, crop_hole = image[..., top:bottom, left:right], hole[..., top:bottom, left:right]
        prediction = predict(model, crop, crop_hole, cancel=cancel)
        small = (max(1, round((bottom - top) * scale_h)), max(1, round((right - left) * scale_w)))
        low = F.interpolate(_resize_image(prediction, small), size=crop.shape[-2:], mode="bicubic", align_corners=False)
        add_tile(out, holes, unit.tile, (base[..., top:bottom, left:right] + prediction - low).clamp_(0, 1))
        if callback is not None:
            callback(number)
    return out


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
        if image_plan.strategy == TILED:
            def tiled_done(number: int, index: int = index, image_plan=image_plan) -> None:
                if callback is not None:
                    callback({"image": index, "unit": number, "n_units": len(image_plan.units),
                              "box": image_plan.units[number].box})

            run_tiled(model, single, single_hole, image_plan.units, cancel, tiled_done, out=out[index : index + 1])
            continue
        for number, unit in enumerate(image_plan.units):
            top, left, bottom, right = unit.box
            # Boxes never overlap, so reading the original image is the same as reading ``out``.
            out[index : index + 1, :, top:bottom, left:right] = run_unit(model, single, single_hole, unit, cancel)
            if callback is not None:
                callback({"image": index, "unit": number, "n_units": len(image_plan.units), "box": unit.box})
    return out
