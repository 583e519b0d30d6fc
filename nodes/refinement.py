"""``LamaFFC_Refine``: multiscale feature refinement (Kulshreshtha et al. 2022) as a ComfyUI node.

The node plans nothing itself: :func:`refine.plan` decides regions, scales, sizes, memory and
time; the node shows that plan on the node, asks ComfyUI for the plan's memory, drives the
progress bar with the plan's forwards (each finished scale becomes the preview image) and
executes it with :func:`refine.refine`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ffc import fuse_for_inference
from ..refine import MODES
from ..refine import PRECISIONS as CORE_PRECISIONS
from ..refine import RefinePlan, RefineSettings, available_bytes, plan, refine
from ._common import (
    Attempt,
    InpaintInputs,
    Progress,
    blended_outputs,
    comfy,
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

__all__ = ["SPEC", "MODES", "PRECISIONS", "resolve_precision", "node_settings"]

PRECISIONS = ("auto", *CORE_PRECISIONS)
NODE_MODE = "auto"  # the node's default; the library's stays "paper" (the faithful settings)
DEFAULTS = RefineSettings()


def resolve_precision(precision: str, lama: LamaModel, device: torch.device) -> str:
    """``auto`` follows the model's dtype; bf16 autocast exists only on CUDA and CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if lama.dtype == "bf16" and device.type in ("cuda", "cpu"):
        return "bf16"
    return "fp32"


def node_settings(*, mode: str, max_seconds: float, precision: str, **settings) -> RefineSettings:
    """The widgets as :class:`RefineSettings`: ``max_seconds`` 0 means no limit."""
    made = RefineSettings(mode=mode, max_seconds=None if max_seconds == 0 else max_seconds, precision=precision,
                          **settings)
    made.validate()
    return made


def _work_model(lama: LamaModel, settings: RefineSettings, memory_required: int) -> nn.Module:
    """The model refine() runs: the patched one, or a float32 copy when a bf16 model must run fp32."""
    if not _needs_float32_copy(lama, settings):
        return load_for_inference(lama.patcher, memory_required)
    mm = comfy("model_management")
    device = torch.device(lama.patcher.load_device)
    mm.free_memory(memory_required, device)  # the request already counts one copy of the weights
    node_message("fp32 requested for a bf16 model: refining with a float32 copy of the weights")
    with torch.inference_mode(False):
        return fuse_for_inference(lama.float32_generator()).eval().to(device)


def _needs_float32_copy(lama: LamaModel, settings: RefineSettings) -> bool:
    return settings.precision == "fp32" and lama.dtype == "bf16"


def _make_plan(lama: LamaModel, inputs: InpaintInputs, settings: RefineSettings, free_bytes: int | None) -> RefinePlan:
    device = torch.device(lama.patcher.load_device)
    dtype = torch.float32 if _needs_float32_copy(lama, settings) else lama.torch_dtype
    made = plan(lama.patcher.model, inputs.rgb, inputs.hole, settings, device=device, dtype=dtype,
                free_bytes=free_bytes)
    node_message(f"plan: {made.summary()}")
    for note in made.notes:  # already logged by the planner
        node_message(note.text, level=note.level, log_it=False)
    return made


def _refine_batch(net: nn.Module, inputs: InpaintInputs, made: RefinePlan, progress: Progress) -> Tensor:
    device = next(net.parameters()).device
    progress.restart(made.forwards)

    def on_forward(info: dict) -> None:
        progress.step(preview=info.get("result"))  # each finished scale becomes the preview

    result, reports = refine(net, inputs.rgb.to(device), inputs.hole.to(device), plan=made, callback=on_forward,
                             cancel=interrupted)
    progress.finish()
    ran = sum(report.iterations for report in reports)
    if ran != made.forwards:  # only early stop runs fewer forwards than planned
        node_message(f"early stop: {ran} of the planned {made.forwards} forwards were needed")
    return result.to(inputs.rgb.device)


def run(model: object, image: Tensor, mask: Tensor, n_iters: int = DEFAULTS.n_iters, lr: float = DEFAULTS.lr,
        min_side: int = DEFAULTS.min_side, max_scales: int = DEFAULTS.max_scales, px_budget: int = DEFAULTS.px_budget,
        crop_to_mask: bool = DEFAULTS.crop_to_mask, crop_margin: int = DEFAULTS.crop_margin,
        early_stop_tol: float = DEFAULTS.early_stop_tol, precision: str = "auto", mask_threshold: float = 0.0,
        mode: str = NODE_MODE, max_seconds: float = 0.0) -> tuple[Tensor, Tensor]:
    lama = require_model(model)
    inputs = inpaint_inputs(image, mask, mask_threshold)
    device = torch.device(lama.patcher.load_device)
    settings = node_settings(mode=mode, max_seconds=max_seconds, precision=resolve_precision(precision, lama, device),
                             n_iters=n_iters, lr=lr, min_side=min_side, max_scales=max_scales, px_budget=px_budget,
                             crop_to_mask=crop_to_mask, crop_margin=crop_margin, early_stop_tol=early_stop_tol)
    if not inputs.any_hole():
        return unchanged_outputs(inputs, SPEC.display_name)

    made = _make_plan(lama, inputs, settings, plannable_bytes(device, lama.weight_bytes))
    # refine() copies weights that ComfyUI moved under inference mode before it can use autograd.
    net = _work_model(lama, settings, made.predicted_peak_bytes + lama.weight_bytes)
    progress = Progress(made.forwards)

    def replanned(fraction: float) -> RefinePlan:
        free = available_bytes(device)  # what is really free now, after the failed attempt
        return _make_plan(lama, inputs, settings, None if free is None else int(free * fraction))

    refined = run_with_fallbacks([
        Attempt(lambda: _refine_batch(net, inputs, made, progress), "the plan"),
        Attempt(lambda: _refine_batch(net, inputs, replanned(1.0), progress), "a plan for the memory free now"),
        Attempt(lambda: _refine_batch(net, inputs, replanned(0.5), progress), "a plan for half the memory free now"),
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
        "Much slower than LaMa Inpaint (n_iters forwards and backwards per scale). mode auto (default) picks the "
        "scales, crops and working size for the image and this machine (and max_seconds); paper runs the settings "
        "as given. Before it runs, the node shows its plan (scales, forwards, predicted time and memory) and every "
        "decision; each finished scale is shown as the preview. The output always has the input's size; pixels "
        "where the mask is 0 are copied bit for bit, and soft mask edges blend as in LaMa Inpaint. Cancel stops it "
        "within about a second per megapixel; on out of memory it re-plans for the memory that is free."
    ),
    inputs=(
        Param.socket("model", MODEL_TYPE, tooltip="LaMa model from 'Load LaMa Model'."),
        Param.socket("image", "IMAGE", tooltip="Images to inpaint (B, H, W, 3 or 4), any size."),
        Param.socket("mask", "MASK", tooltip=(
            "Hole to fill, 1 = fill. Any size (resized to the image with nearest) and batch 1 or B.")),
        Param.int("n_iters", DEFAULTS.n_iters, lo=1, hi=200, tooltip=(
            "Optimiser steps per refined scale (paper: 15). In auto mode max_seconds may lower it.")),
        Param.float("lr", DEFAULTS.lr, lo=0.0001, hi=0.1, step=0.0001, round=0.0001, advanced=True,
                    tooltip="Adam learning rate for the features (paper: 0.002)."),
        Param.int("min_side", DEFAULTS.min_side, lo=16, hi=4096, step=8, advanced=True, tooltip=(
            "paper mode: shorter side of the coarsest scale; more scales are used the larger the image is relative "
            "to it. The paper's 512 leaves images under ~1000 px at one scale (no refinement). Not used by auto, "
            "which puts the coarsest scale near LaMa's 256 px training size.")),
        Param.int("max_scales", DEFAULTS.max_scales, lo=1, hi=8, advanced=True,
                  tooltip="paper mode: upper limit on the number of pyramid scales (paper: 3). Not used by auto."),
        Param.int("px_budget", DEFAULTS.px_budget, lo=10_000, hi=64_000_000, step=10_000, tooltip=(
            "Largest number of pixels refined at once (both modes); bigger images (or crops) are refined at a "
            "reduced size and the filled hole is upscaled back into the full-size image. Auto lowers it further "
            "when memory or max_seconds need that.")),
        Param.boolean("crop_to_mask", DEFAULTS.crop_to_mask, tooltip=(
            "paper mode: refine only boxes around the holes (plus crop_margin): much less memory and time for small "
            "holes in big images; the pixel budget then applies per box. Auto crops by itself when the boxes "
            "cover less than half of the image.")),
        Param.int("crop_margin", DEFAULTS.crop_margin, lo=0, hi=2048, step=8, advanced=True,
                  tooltip="Pixels of context around each hole when cropping."),
        Param.float("early_stop_tol", DEFAULTS.early_stop_tol, lo=0.0, hi=0.5, step=0.001, round=0.0001,
                    advanced=True, tooltip=(
                        "Stop a scale early when the loss improves by less than this fraction for 2 steps; 0 = always "
                        "run n_iters (the paper).")),
        Param.combo("precision", PRECISIONS, default="auto", advanced=True, tooltip=(
            "auto follows the model's dtype. bf16 autocasts convolutions (FFTs stay fp32): faster and lighter on "
            "recent NVIDIA GPUs, slightly different numbers. fp32 is the reference.")),
        Param.float("mask_threshold", 0.0, lo=0.0, hi=1.0, step=0.01, advanced=True, tooltip=(
            "Mask values above this are holes. 0 = any non-zero value (the official rule).")),
        Param.combo("mode", MODES, default=NODE_MODE, tooltip=(
            "auto: choose scales (coarsest near LaMa's 256 px training size, so images from ~600 px up are really "
            "refined), crop to the holes when they are small, fit memory (checkpointing, then a lower working size) "
            "and max_seconds, and say what was chosen. paper: exactly the settings above (their defaults are the "
            "paper's).")),
        Param.float("max_seconds", 0.0, lo=0.0, hi=86_400.0, step=10.0, round=1.0, tooltip=(
            "auto mode: time budget in seconds for the predicted run (0 = no limit). When the prediction is longer, "
            "auto lowers n_iters (down to 5), then the working size, then refines nothing (plain LaMa), and says "
            "so.")),
    ),
    outputs=(
        Out("IMAGE", "image", "Refined images, always the input's size and channels."),
        Out("MASK", "mask", "The binary hole that was refined (mask > mask_threshold), (B, H, W)."),
    ),
    run=run,
)
