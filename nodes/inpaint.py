"""``LamaFFC_Inpaint``: plain LaMa inpainting with a resolution strategy, per image of the batch.

What runs is planned by :func:`ffc.plan.plan_inpaint` (boxes, sizes, forwards, memory); when
the strategy's memory estimate does not fit, the plan switches to crops around the holes or a
resized copy and the node says so, instead of running the server out of memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ffc.plan import (
    DEFAULT_CROP_MARGIN,
    DEFAULT_RESIZE_LIMIT,
    DEFAULT_STRATEGY,
    STRATEGIES,
    InpaintPlan,
    plan_inpaint,
)
from ..ffc.strategies import inpaint_with_strategy
from ._common import (
    Attempt,
    InpaintInputs,
    Progress,
    blended_outputs,
    inpaint_inputs,
    interrupted,
    load_for_inference,
    plannable_bytes,
    run_with_fallbacks,
    unchanged_outputs,
)
from ._spec import NodeSpec, Out, Param
from ._ui import node_message
from .loader import MODEL_TYPE, LamaModel, require_model

__all__ = ["SPEC"]


def _make_plan(lama: LamaModel, inputs: InpaintInputs, strategy: str, resize_limit: int, crop_margin: int,
               free_bytes: int | None) -> InpaintPlan:
    made = plan_inpaint(lama.patcher.model, inputs.hole, strategy=strategy, threshold=0.5, resize_limit=resize_limit,
                        crop_margin=crop_margin, free_bytes=free_bytes, dtype=lama.torch_dtype)
    node_message(f"plan: {made.summary()}")
    for note in made.notes:
        node_message(note.text, level=note.level)
    return made


def _fill(net: nn.Module, inputs: InpaintInputs, made: InpaintPlan, progress: Progress) -> Tensor:
    device = next(net.parameters()).device
    progress.restart(made.forwards)
    filled = inpaint_with_strategy(net, inputs.rgb.to(device), inputs.hole.to(device), threshold=0.5, plan=made,
                                   cancel=interrupted, callback=lambda info: progress.step())
    progress.finish()
    return filled.to(inputs.rgb.device)


def run(model: object, image: Tensor, mask: Tensor, strategy: str = DEFAULT_STRATEGY,
        resize_limit: int = DEFAULT_RESIZE_LIMIT, crop_margin: int = DEFAULT_CROP_MARGIN,
        mask_threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    lama = require_model(model)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    inputs = inpaint_inputs(image, mask, mask_threshold)
    if not inputs.any_hole():
        return unchanged_outputs(inputs, SPEC.display_name)

    device = torch.device(lama.patcher.load_device)
    made = _make_plan(lama, inputs, strategy, resize_limit, crop_margin, plannable_bytes(device, lama.weight_bytes))
    net = load_for_inference(lama.patcher, made.predicted_peak_bytes)
    progress = Progress(made.forwards)
    # Cropping bounds the work to the holes; if we were cropping already, use less context.
    margin = crop_margin // 2 if strategy == "crop_around_mask" else crop_margin
    filled = run_with_fallbacks([
        Attempt(lambda: _fill(net, inputs, made, progress), f"strategy {strategy}"),
        Attempt(lambda: _fill(net, inputs, _make_plan(lama, inputs, "crop_around_mask", resize_limit, margin, None),
                              progress), f"crop_around_mask with a {margin} px margin"),
    ], "inpaint")
    return blended_outputs(inputs, filled)


SPEC = NodeSpec(
    node_id="LamaFFC_Inpaint",
    display_name="LaMa Inpaint",
    category="inpaint/lama",
    description=(
        "Fills the masked area with LaMa at the image's own resolution (or resized / cropped, see strategy). "
        "The output has the input's size; pixels where the mask is 0 are copied bit for bit. LaMa fills the "
        "binarised hole (mask > mask_threshold); the result is then blended in with the original soft mask, so "
        "feathered or anti-aliased mask edges blend smoothly. An alpha channel passes through untouched. When the "
        "strategy would not fit in memory, crops around the holes or a resized copy are used (said on the node)."
    ),
    inputs=(
        Param.socket("model", MODEL_TYPE, tooltip="LaMa model from 'Load LaMa Model'."),
        Param.socket("image", "IMAGE", tooltip="Images to inpaint (B, H, W, 3 or 4), any size."),
        Param.socket("mask", "MASK", tooltip=(
            "Hole to fill, 1 = fill. Any size (resized to the image with nearest) and batch 1 or B. "
            "Soft values blend the fill into the original at the edge.")),
        Param.combo("strategy", STRATEGIES, default=DEFAULT_STRATEGY, tooltip=(
            "original: one pass at full resolution (the official behaviour). resize_to_limit: inpaint a copy whose "
            "longer side is resize_limit, paste the upscaled hole back. crop_around_mask: inpaint a crop around "
            "each hole with crop_margin px of context: fast and light for small holes in big images.")),
        Param.int("resize_limit", DEFAULT_RESIZE_LIMIT, lo=64, hi=8192, step=8, tooltip=(
            "Longer side in pixels for resize_to_limit; smaller images are inpainted as they are.")),
        Param.int("crop_margin", DEFAULT_CROP_MARGIN, lo=0, hi=2048, step=8, advanced=True, tooltip=(
            "Pixels of context around each hole for crop_around_mask (also used by the out-of-memory fallback).")),
        Param.float("mask_threshold", 0.0, lo=0.0, hi=1.0, step=0.01, advanced=True, tooltip=(
            "Mask values above this are holes that LaMa fills. 0 = any non-zero value (the official rule).")),
    ),
    outputs=(
        Out("IMAGE", "image", "Inpainted images, same size and channels as the input."),
        Out("MASK", "mask", "The binary hole LaMa filled (mask > mask_threshold), (B, H, W)."),
    ),
    run=run,
)
