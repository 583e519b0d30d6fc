"""``LamaFFC_Refine``: multiscale feature refinement (Kulshreshtha et al. 2022) as a ComfyUI node."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..ffc import fuse_for_inference, padded_size
from ..ffc.masks import hole_boxes
from ..refine import RefineSettings, budget_size, estimate_refine_bytes, plan_scales, refine
from ._common import (
    Attempt,
    InpaintInputs,
    Progress,
    blended_outputs,
    check_interrupt,
    comfy,
    inpaint_inputs,
    load_for_inference,
    run_with_fallbacks,
    unchanged_outputs,
)
from ._spec import NodeSpec, Out, Param
from .loader import MODEL_TYPE, LamaModel, require_model

__all__ = ["SPEC", "resolve_precision", "planned_forwards"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, lama: LamaModel, device: torch.device) -> str:
    """``auto`` follows the model's dtype; bf16 autocast exists only on CUDA and CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if lama.dtype == "bf16" and device.type in ("cuda", "cpu"):
        return "bf16"
    return "fp32"


def _regions(hole_hw: Tensor, settings: RefineSettings) -> list[tuple[int, int]]:
    """(H, W) of every region refine() will optimise for this image."""
    if not settings.crop_to_mask:
        return [tuple(hole_hw.shape)] if bool(hole_hw.any()) else []
    return [(b[2] - b[0], b[3] - b[1]) for b in hole_boxes(hole_hw, settings.crop_margin, separate=settings.separate_holes)]


def planned_forwards(hole: Tensor, settings: RefineSettings) -> int:
    """Generator forwards the refinement will run: per region 1 (coarsest) + n_iters per finer scale."""
    total = 0
    for index in range(hole.shape[0]):
        height, width = hole.shape[-2:]
        scales = plan_scales(height, width, settings)
        total += len(_regions(hole[index, 0], settings)) * (1 + (scales - 1) * settings.n_iters)
    return total


def _activation_bytes(lama: LamaModel, hole: Tensor, settings: RefineSettings) -> int:
    """Peak bytes of the largest region's finest scale without checkpointing."""
    sizes = [size for index in range(hole.shape[0]) for size in _regions(hole[index, 0], settings)]
    height, width = max(sizes, key=lambda s: s[0] * s[1])
    work_h, work_w = budget_size(height, width, settings.px_budget)
    padded_h, padded_w = padded_size(work_h, work_w, lama.info.config.multiple)
    # The model refine() will run: the patched, BatchNorm-folded one, in float32 when an fp32
    # refinement of a bf16 model gets a float32 copy (see _work_model). The estimator measures
    # a CPU twin of it once, so this uses no VRAM.
    dtype = torch.float32 if settings.precision == "fp32" else lama.torch_dtype
    return estimate_refine_bytes(lama.patcher.model, padded_h, padded_w, autocast_dtype=settings.autocast_dtype,
                                 dtype=dtype).total


def _work_model(lama: LamaModel, settings: RefineSettings, memory_required: int) -> nn.Module:
    """The model refine() runs: the patched one, or a float32 copy when a bf16 model must run fp32."""
    if not (settings.precision == "fp32" and lama.dtype == "bf16"):
        return load_for_inference(lama.patcher, memory_required)
    mm = comfy("model_management")
    device = torch.device(lama.patcher.load_device)
    mm.free_memory(memory_required, device)  # the estimate already counts one copy of the weights
    log.info("LaMa refine: fp32 requested for a bf16 model; using a float32 copy of the weights")
    with torch.inference_mode(False):
        return fuse_for_inference(lama.float32_generator()).eval().to(device)


def _refine_batch(net: nn.Module, inputs: InpaintInputs, settings: RefineSettings) -> Tensor:
    device = next(net.parameters()).device
    progress = Progress(planned_forwards(inputs.hole, settings))

    def on_forward(info: dict) -> None:
        progress.step()
        check_interrupt()  # raising here stops refine() within one iteration

    result, reports = refine(net, inputs.rgb.to(device), inputs.hole.to(device), settings, callback=on_forward)
    progress.finish()
    for index, report in enumerate(reports):
        if report.skipped:
            continue
        for region in report.regions:
            log.info("LaMa refine: image %d region %s at %dx%d, %d scales, %d forwards%s", index, region.box,
                     region.work_size[1], region.work_size[0], region.n_scales,
                     sum(s.iterations for s in region.scales), ", checkpointed" if region.checkpointed else "")
    return result.to(inputs.rgb.device)


def run(model: object, image: Tensor, mask: Tensor, n_iters: int = 15, lr: float = 0.002, min_side: int = 512,
        max_scales: int = 3, px_budget: int = 1_800_000, crop_to_mask: bool = False, crop_margin: int = 128,
        early_stop_tol: float = 0.0, precision: str = "auto", mask_threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    lama = require_model(model)
    inputs = inpaint_inputs(image, mask, mask_threshold)
    device = torch.device(lama.patcher.load_device)
    settings = RefineSettings(n_iters=n_iters, lr=lr, min_side=min_side, max_scales=max_scales, px_budget=px_budget,
                              crop_to_mask=crop_to_mask, crop_margin=crop_margin, early_stop_tol=early_stop_tol,
                              precision=resolve_precision(precision, lama, device))
    settings.validate()
    if not inputs.any_hole():
        return unchanged_outputs(inputs, SPEC.display_name)

    activations = _activation_bytes(lama, inputs.hole, settings)
    # refine() copies weights that ComfyUI moved under inference mode before it can use autograd.
    net = _work_model(lama, settings, activations + lama.weight_bytes)
    checkpointed = replace(settings, checkpointing="on")
    smaller = replace(checkpointed, px_budget=max(settings.px_budget // 2, 256))
    refined = run_with_fallbacks([
        Attempt(lambda: _refine_batch(net, inputs, settings), "the requested settings"),
        Attempt(lambda: _refine_batch(net, inputs, checkpointed), "checkpointing on"),
        Attempt(lambda: _refine_batch(net, inputs, smaller), f"checkpointing on and px_budget {smaller.px_budget}"),
    ], "refine")
    if refined.shape != inputs.rgb.shape:  # refine() promises the input size; never hand on anything else
        raise RuntimeError(f"LaMa refine returned {tuple(refined.shape)} for an input of {tuple(inputs.rgb.shape)}")
    return blended_outputs(inputs, refined)


SPEC = NodeSpec(
    node_id="LamaFFC_Refine",
    display_name="LaMa Multiscale Refine",
    category="inpaint/lama",
    description=(
        "LaMa with multiscale feature refinement (Kulshreshtha et al. 2022): inpaints a small copy, then "
        "optimises the generator's features at each finer scale so large fills stay sharp at high resolution. "
        "Much slower than LaMa Inpaint (n_iters forwards and backwards per scale). The output always has the "
        "input's size; pixels where the mask is 0 are copied bit for bit, and soft mask edges blend as in LaMa "
        "Inpaint. Cancel stops it within one iteration; on out of memory it retries with checkpointing, then "
        "with half the pixel budget."
    ),
    inputs=(
        Param.socket("model", MODEL_TYPE, tooltip="LaMa model from 'Load LaMa Model'."),
        Param.socket("image", "IMAGE", tooltip="Images to inpaint (B, H, W, 3 or 4), any size."),
        Param.socket("mask", "MASK", tooltip=(
            "Hole to fill, 1 = fill. Any size (resized to the image with nearest) and batch 1 or B.")),
        Param.int("n_iters", 15, lo=1, hi=200, tooltip="Optimiser steps per refined scale (paper: 15)."),
        Param.float("lr", 0.002, lo=0.0001, hi=0.1, step=0.0001, round=0.0001,
                    tooltip="Adam learning rate for the features (paper: 0.002)."),
        Param.int("min_side", 512, lo=16, hi=4096, step=8, tooltip=(
            "Shorter side of the coarsest scale; more scales are used the larger the image is relative to it. "
            "The paper's 512 leaves images under ~1000 px at one scale (no refinement): lower it for those.")),
        Param.int("max_scales", 3, lo=1, hi=8, tooltip="Upper limit on the number of pyramid scales (paper: 3)."),
        Param.int("px_budget", 1_800_000, lo=10_000, hi=64_000_000, step=10_000, tooltip=(
            "Largest number of pixels refined at once; bigger images (or crops) are refined at a reduced size "
            "and the filled hole is upscaled back into the full-size image. Lower it if memory is short.")),
        Param.boolean("crop_to_mask", False, tooltip=(
            "Refine only boxes around the holes (plus crop_margin): much less memory and time for small holes in "
            "big images; the pixel budget then applies per box.")),
        Param.int("crop_margin", 128, lo=0, hi=2048, step=8, tooltip="Pixels of context around each hole for crop_to_mask."),
        Param.float("early_stop_tol", 0.0, lo=0.0, hi=0.5, step=0.001, round=0.0001, tooltip=(
            "Stop a scale early when the loss improves by less than this fraction for 2 steps; 0 = always run "
            "n_iters (the paper).")),
        Param.combo("precision", PRECISIONS, default="auto", tooltip=(
            "auto follows the model's dtype. bf16 autocasts convolutions (FFTs stay fp32): faster and lighter on "
            "recent NVIDIA GPUs, slightly different numbers. fp32 is the reference.")),
        Param.float("mask_threshold", 0.0, lo=0.0, hi=1.0, step=0.01, tooltip=(
            "Mask values above this are holes. 0 = any non-zero value (the official rule).")),
    ),
    outputs=(
        Out("IMAGE", "image", "Refined images, always the input's size and channels."),
        Out("MASK", "mask", "The binary hole that was refined (mask > mask_threshold), (B, H, W)."),
    ),
    run=run,
)
