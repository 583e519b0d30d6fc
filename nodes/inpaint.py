"""``LamaFFC_Inpaint``: plain LaMa inpainting with a resolution strategy, per image of the batch."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from ..ffc import LamaConfig, padded_size
from ..ffc.masks import hole_boxes
from ..ffc.strategies import STRATEGIES, inpaint_with_strategy
from ._common import (
    Attempt,
    Progress,
    blended_outputs,
    check_interrupt,
    inpaint_inputs,
    load_for_inference,
    run_with_fallbacks,
    unchanged_outputs,
)
from ._spec import NodeSpec, Out, Param
from .loader import MODEL_TYPE, require_model

__all__ = ["SPEC", "inference_bytes", "work_size"]

log = logging.getLogger(__name__)


def inference_bytes(config: LamaConfig, height: int, width: int, dtype: torch.dtype) -> int:
    """Rough peak bytes of one no-grad forward of one image (weights not included)."""
    padded_h, padded_w = padded_size(height, width, config.multiple)
    pixels = padded_h * padded_w
    element = torch.finfo(dtype).bits // 8
    # The widest stages run at full resolution with ngf channels; about four such tensors are
    # alive at once (a layer's input, its padded copy, its output, the next activation).
    activations = 4 * config.ngf * pixels * element
    # The bottleneck's FFTs stay float32: spectrum and its inverse, real and imaginary parts.
    spectral = 4 * 2 * config.bottleneck_channels * (pixels // config.multiple**2) * 4
    # Image, hole, padded copies, prediction and composite in float32.
    working = 16 * 4 * pixels
    return activations + spectral + working


def work_size(hole_hw: Tensor, strategy: str, resize_limit: int, crop_margin: int) -> tuple[int, int]:
    """The largest size one forward will see for this hole (H, W) under ``strategy``."""
    height, width = hole_hw.shape
    if strategy == "resize_to_limit" and max(height, width) > resize_limit:
        ratio = resize_limit / max(height, width)
        return max(1, round(height * ratio)), max(1, round(width * ratio))
    if strategy == "crop_around_mask":
        boxes = hole_boxes(hole_hw, crop_margin)
        if boxes:
            return max(b[2] - b[0] for b in boxes), max(b[3] - b[1] for b in boxes)
    return height, width


def _fill_one(net: nn.Module, image: Tensor, hole: Tensor, strategy: str, resize_limit: int, crop_margin: int) -> Tensor:
    """Inpaint one image on the model's device; on out-of-memory retry once on crops around the holes."""
    device = next(net.parameters()).device
    image_d, hole_d = image.to(device), hole.to(device)

    def fill(chosen: str, margin: int) -> Tensor:
        return inpaint_with_strategy(net, image_d, hole_d, strategy=chosen, threshold=0.5,
                                     resize_limit=resize_limit, crop_margin=margin).to(image.device)

    # Cropping bounds the work to the holes; if we were cropping already, use less context.
    margin = crop_margin // 2 if strategy == "crop_around_mask" else crop_margin
    return run_with_fallbacks([
        Attempt(lambda: fill(strategy, crop_margin), f"strategy {strategy}"),
        Attempt(lambda: fill("crop_around_mask", margin), f"crop_around_mask with a {margin} px margin"),
    ], "inpaint")


def run(model: object, image: Tensor, mask: Tensor, strategy: str = "original", resize_limit: int = 1280,
        crop_margin: int = 128, mask_threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    lama = require_model(model)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    inputs = inpaint_inputs(image, mask, mask_threshold)
    if not inputs.any_hole():
        return unchanged_outputs(inputs, SPEC.display_name)

    batch = inputs.rgb.shape[0]
    todo = [i for i in range(batch) if bool(inputs.hole[i].any())]
    sizes = [work_size(inputs.hole[i, 0], strategy, resize_limit, crop_margin) for i in todo]
    estimate = max(inference_bytes(lama.info.config, h, w, lama.torch_dtype) for h, w in sizes)
    net = load_for_inference(lama.patcher, estimate)

    filled = inputs.rgb.clone()
    progress = Progress(batch)
    for index in range(batch):
        check_interrupt()
        if index in todo:
            filled[index : index + 1] = _fill_one(net, inputs.rgb[index : index + 1], inputs.hole[index : index + 1],
                                                  strategy, resize_limit, crop_margin)
        progress.step()
    return blended_outputs(inputs, filled)


SPEC = NodeSpec(
    node_id="LamaFFC_Inpaint",
    display_name="LaMa Inpaint",
    category="inpaint/lama",
    description=(
        "Fills the masked area with LaMa at the image's own resolution (or resized / cropped, see strategy). "
        "The output has the input's size; pixels where the mask is 0 are copied bit for bit. LaMa fills the "
        "binarised hole (mask > mask_threshold); the result is then blended in with the original soft mask, so "
        "feathered or anti-aliased mask edges blend smoothly. An alpha channel passes through untouched."
    ),
    inputs=(
        Param.socket("model", MODEL_TYPE, tooltip="LaMa model from 'Load LaMa Model'."),
        Param.socket("image", "IMAGE", tooltip="Images to inpaint (B, H, W, 3 or 4), any size."),
        Param.socket("mask", "MASK", tooltip=(
            "Hole to fill, 1 = fill. Any size (resized to the image with nearest) and batch 1 or B. "
            "Soft values blend the fill into the original at the edge.")),
        Param.combo("strategy", STRATEGIES, default="original", tooltip=(
            "original: one pass at full resolution (the official behaviour). resize_to_limit: inpaint a copy whose "
            "longer side is resize_limit, paste the upscaled hole back. crop_around_mask: inpaint a crop around "
            "each hole with crop_margin px of context: fast and light for small holes in big images.")),
        Param.int("resize_limit", 1280, lo=64, hi=8192, step=8, tooltip=(
            "Longer side in pixels for resize_to_limit; smaller images are inpainted as they are.")),
        Param.int("crop_margin", 128, lo=0, hi=2048, step=8, tooltip=(
            "Pixels of context around each hole for crop_around_mask (also used by the out-of-memory fallback).")),
        Param.float("mask_threshold", 0.0, lo=0.0, hi=1.0, step=0.01, tooltip=(
            "Mask values above this are holes that LaMa fills. 0 = any non-zero value (the official rule).")),
    ),
    outputs=(
        Out("IMAGE", "image", "Inpainted images, same size and channels as the input."),
        Out("MASK", "mask", "The binary hole LaMa filled (mask > mask_threshold), (B, H, W)."),
    ),
    run=run,
)
