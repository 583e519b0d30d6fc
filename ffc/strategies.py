"""Resolution strategies for plain inference, as IOPaint users know them.

* ``original``: one pass at full resolution (the official behaviour).
* ``resize_to_limit``: when the longer side exceeds ``resize_limit``, inpaint a downscaled copy,
  upscale the result (bicubic) and paste only the hole pixels into the full-size original.
* ``crop_around_mask``: inpaint each hole's bounding box plus ``crop_margin`` px of context (more
  context from the other side where an edge cuts it off) and paste the hole pixels back. Much
  faster than a full pass for small holes in large photos; separate holes get separate crops.

Every strategy returns the input size, with unmasked pixels bit-identical to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_inpaint_inputs
from .inference import binarize, inpaint
from .masks import hole_boxes

__all__ = ["STRATEGIES", "inpaint_with_strategy"]

STRATEGIES = ("original", "resize_to_limit", "crop_around_mask")


def _resized(image: Tensor, hole: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    height, width = image.shape[-2:]
    ratio = limit / max(height, width)
    size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    # Antialiased bicubic has no MPS kernel in many torch releases: do that one resize on the CPU.
    source = image.cpu() if image.device.type == "mps" else image
    small = F.interpolate(source, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1).to(image.device)
    # Any hole pixel that touches a small pixel makes it a hole (never shrink the hole).
    small_hole = (F.interpolate(hole, size=size, mode="area") > 0).to(hole.dtype)
    return small, small_hole


def inpaint_with_strategy(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    *,
    strategy: str = "original",
    threshold: float = 0.0,
    resize_limit: int = 1280,
    crop_margin: int = 128,
) -> Tensor:
    """Plain LaMa inpainting with a resolution strategy; see the module docstring.

    Args:
        model: generator (or fused generator) on ``image``'s device.
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W); ``mask > threshold`` is filled.
        strategy: one of :data:`STRATEGIES`.
        resize_limit: longer side for ``resize_to_limit`` (>= 16).
        crop_margin: context in px around each hole for ``crop_around_mask``.

    Returns:
        (B, 3, H, W), the input outside the binarised holes.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if resize_limit < 16:
        raise ValueError(f"resize_limit: expected >= 16 px, got {resize_limit}")
    if crop_margin < 0:
        raise ValueError(f"crop_margin: expected >= 0 px, got {crop_margin}")
    check_inpaint_inputs(image, mask, model)
    if strategy == "original":
        return inpaint(model, image, mask, threshold=threshold)

    hole = binarize(mask, threshold).to(image.dtype)
    out = image.clone()
    for i in range(image.shape[0]):
        single, single_hole = image[i : i + 1], hole[i : i + 1]
        if strategy == "resize_to_limit":
            if max(single.shape[-2:]) <= resize_limit:
                out[i : i + 1] = inpaint(model, single, single_hole)
                continue
            small, small_hole = _resized(single, single_hole, resize_limit)
            filled = inpaint(model, small, small_hole)
            up = F.interpolate(filled, size=single.shape[-2:], mode="bicubic", align_corners=False).clamp_(0, 1)
            out[i : i + 1] = torch.where(single_hole > 0, up, single)
        else:
            for top, left, bottom, right in hole_boxes(single_hole[0, 0], crop_margin):
                crop = out[i : i + 1, :, top:bottom, left:right]
                crop_hole = single_hole[..., top:bottom, left:right]
                out[i : i + 1, :, top:bottom, left:right] = inpaint(model, crop, crop_hole)
    return out
