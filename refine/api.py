"""Public entry point: refine a batch, with our practical options around the official core.

Defaults differ from ``bin/predict.py refine=True`` only where the issue asks us to do better,
each an explicit setting:

* ``keep_budget_size=False``: the output always has the input size. When ``H * W > px_budget``
  the refinement runs at the official reduced size, the result is upsampled (bicubic) and only
  the hole pixels are pasted into the full-size original, so unmasked pixels stay bit-identical.
  ``True`` returns the reduced image, as the official code does.
* ``n_scales`` / ``min_side``: set ``min_side`` lower (or ``n_scales`` directly) to refine
  512-1024 px images, which the official default leaves at one scale (no refinement).
* ``fused=True``: the model runs BatchNorm-folded with a light backward (its convolutions keep
  only their weights, ReLUs a 1-byte sign mask, reflect padding and FFTs only a shape), so one
  scale needs about a third of the memory; with ``freeze_weights`` no autograd graph is recorded
  where no gradient is used (the coarsest scale, each scale's last forward). ``fused=False`` is
  the official cost: the eager model with frozen weights, as ``bin/predict.py`` runs it after
  ``model.freeze()`` (the official code also records a graph at those unused forwards).
  ``freeze_weights=False`` (eager only) makes every weight require grad, so each backward also
  computes weight gradients nobody uses: a cost the official code never pays, kept for comparison.
* ``speed``: cuDNN benchmark, TF32, channels_last and ``torch.compile`` (:mod:`refine.speed`);
  the defaults keep fidelity; the process-wide backend flags are restored after the run.
* ``full_resolution=True``: above ``px_budget`` the region is refined at its own size instead:
  the pyramid up to the budget, then every finer level tile by tile against the coarser
  result, in memory bounded by the tile size (:mod:`refine.tiles`).
* ``crop_to_mask``: refine only boxes around the holes plus ``crop_margin`` px of context,
  each separate hole on its own when ``separate_holes``; the pyramid depth is still decided by
  the full image's size.
* ``checkpointing="auto"``: recompute rear activations when the estimated peak would not fit in
  the device's free memory and checkpointing is estimated to need less; if even that does not
  fit, lower the working size (logged).
* ``mode="auto"``: the planner chooses scales, crop-to-mask, working size and checkpointing for
  the image and the machine, and fits ``max_seconds`` (see :mod:`refine.plan`).

What runs is decided by :func:`refine.plan.plan` before anything runs; :func:`refine` executes
that plan (pass one in to share it with a progress bar or a memory request).
* ``precision="bf16"``: autocast convolutions to bfloat16 (CUDA or CPU); FFTs stay float32.
* ``early_stop_tol``: stop a scale once the loss stops improving.

Progress and cancellation: ``callback(info)`` after every forward; ``cancel()`` polled there and
between the generator's layers in forward and backward, so a cancel stops within about a second
per megapixel (not a whole iteration).
ComfyUI runs nodes under ``torch.inference_mode()``: this function steps out of it, makes its
hole mask there and copies the model if its tensors are inference tensors; the image, only ever
read, is not copied.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ffc
from .core import RefineCancelled, ScaleOptions, ScaleReport, refine_pyramid
from .memory import MemoryEstimate
from .plan import RefinePlan, RegionPlan, WorkUnit, check_refinable, check_weights, plan_scales
from .plan import plan as make_plan
from .pyramid import MASK_EPS, resize_to, resize_to_budget
from .settings import RefineSettings
from .speed import backend_flags, compile_rear
from .tiles import refine_tiled

__all__ = ["RefineSettings", "RegionReport", "ImageReport", "refine", "plan_scales", "RefineCancelled"]

log = logging.getLogger(__name__)


@dataclass
class RegionReport:
    """One refined region (the whole image, or one crop), as it ran."""

    box: tuple[int, int, int, int]  # top, left, bottom, right in the input image
    work_size: tuple[int, int]  # size the pyramid's finest level ran at
    n_scales: int
    checkpointed: bool
    estimate: MemoryEstimate | None
    scales: list[ScaleReport] = field(default_factory=list)  # the pyramid's, then one per tile
    tiles: int = 0  # full_resolution: tiles run at the finer levels (work_size is then the box's size)
    seams: ffc.tiles.SeamStats | None = None  # full_resolution: gradient along the seams vs elsewhere in the hole

    @property
    def forwards(self) -> int:
        return sum(s.iterations for s in self.scales)


@dataclass
class ImageReport:
    """What happened to one image of the batch."""

    skipped: str | None = None  # reason, when the image was returned unchanged
    regions: list[RegionReport] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return sum(r.forwards for r in self.regions)


def _autograd_model(model: nn.Module, fused: bool, freeze: bool, channels_last: bool) -> nn.Module:
    """A model autograd can differentiate: no inference tensors, eval mode, weights as requested."""
    if model.training:
        raise ValueError("model: expected eval mode (BatchNorm must use its running statistics)")
    if isinstance(model, ffc.FastLamaGenerator):
        if not freeze:
            raise ValueError("freeze_weights=False needs a LamaGenerator, not a fused model")
        source_is_inference = any(p.is_inference() for p in model.parameters())
        return copy.deepcopy(model) if source_is_inference else model
    if fused:
        return ffc.fuse_for_inference(model, channels_last=channels_last)
    needs_copy = any(t.is_inference() for t in list(model.parameters()) + list(model.buffers()))
    if needs_copy or not freeze:
        model = copy.deepcopy(model)
    return model.requires_grad_(not freeze)


def _check_plan(made: RefinePlan, settings: RefineSettings | None, holes: Tensor) -> RefineSettings:
    if settings is not None and settings != made.settings:
        raise ValueError("plan: it was made with other settings than the ones given; pass one of them")
    if len(made.images) != holes.shape[0] or made.size != tuple(holes.shape[-2:]):
        raise ValueError(f"plan: made for {len(made.images)} images of {made.size[1]}x{made.size[0]}, "
                         f"got {holes.shape[0]} of {holes.shape[-1]}x{holes.shape[-2]}")
    counts = [int(holes[i].sum()) for i in range(holes.shape[0])]
    if counts != [image.hole_pixels for image in made.images]:
        raise ValueError("plan: made for another mask (the hole pixel counts differ)")
    return made.settings


def refine(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    settings: RefineSettings | None = None,
    *,
    plan: RefinePlan | None = None,
    callback: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Tensor, list[ImageReport]]:
    """Refine every image of a batch, one after another, as :func:`refine.plan.plan` decides.

    Args:
        model: :class:`ffc.LamaGenerator` (or a fused one) in eval mode, on the images' device,
            with float32 weights (bfloat16 with ``precision="bf16"``).
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W); pixels >= 1e-8 are holes (the official rule; binarise beforehand for
            another threshold).
        settings: see :class:`RefineSettings` (default: the paper's); not needed with ``plan``.
        plan: the plan to execute, made for this mask; None = make it here.
        callback: receives dicts with ``image``, ``region``, ``n_regions``, ``scale``,
            ``n_scales``, ``iteration``, ``n_iters``, ``loss``, ``forward``, ``n_forwards``,
            ``last`` (the scale's last forward) and then ``result`` (the scale's composited
            image) ... after every forward.
        cancel: polled after every forward and between the generator's layers (forward and
            backward); True raises :class:`RefineCancelled`. It may also raise its own exception.

    Returns:
        (result, reports): result (B, 3, H, W) in ``image``'s dtype, the input bit for bit
        outside the holes (or the official reduced size with ``keep_budget_size``), and one
        :class:`ImageReport` per image.

    Raises:
        TypeError: for a model that does not split into front and rear (``model.refinable``).
    """
    check_refinable(model)
    ffc.checks.check_inpaint_inputs(image, mask, model)
    if plan is None:
        plan = make_plan(model, image, mask, settings or RefineSettings())
    device = next(model.parameters()).device

    with torch.inference_mode(False), torch.enable_grad(), backend_flags(plan.settings.speed, device):
        # Made here, outside inference mode, so autograd may use it. The image is only read (never
        # saved for backward), so an inference tensor needs no copy: at 8K one is 600 MB.
        holes = (mask.detach() >= MASK_EPS).float()
        settings = _check_plan(plan, settings, holes)
        check_weights(next(model.parameters()).dtype, settings.precision)
        work_model = _autograd_model(model, settings.fused, settings.freeze_weights,
                                     settings.speed.channels_last_for(device))
        source = image.detach().float()  # a copy only for another dtype
        outputs, reports, done = [], [], [0]
        for index, image_plan in enumerate(plan.images):
            def tagged(info: dict, index: int = index) -> None:
                done[0] += 1
                if callback is not None:
                    callback({"image": index, "n_images": source.shape[0], "forward": done[0],
                              "n_forwards": plan.forwards, **info})

            result, report = _refine_image(work_model, source[index : index + 1], holes[index : index + 1],
                                           image_plan, settings, tagged, cancel)
            outputs.append(result)
            reports.append(report)
        result = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # no second full-size copy for one image
    return result.to(image.dtype), reports


def _refine_image(model, image, hole, image_plan, settings, callback, cancel) -> tuple[Tensor, ImageReport]:
    if image_plan.skipped:
        if settings.keep_budget_size:  # same size as its refined batch mates would get
            return resize_to_budget(image, hole, settings.px_budget)[0].clone(), ImageReport(skipped=image_plan.skipped)
        return image.clone(), ImageReport(skipped=image_plan.skipped)
    report = ImageReport()
    out = image.clone()
    for number, region in enumerate(image_plan.regions):
        def tagged(info: dict, number: int = number) -> None:
            callback({"region": number, "n_regions": len(image_plan.regions), **info})

        if region.tiles:
            top, left, bottom, right = region.box
            crop_image, crop_hole = image[..., top:bottom, left:right], hole[..., top:bottom, left:right]
            # Written straight into the output (composited there), no full-size intermediate.
            region_report = _run_tiled(model, crop_image, crop_hole, out[..., top:bottom, left:right], region,
                                       settings, tagged, cancel)
            report.regions.append(region_report)
            continue
        for unit in region.units:
            top, left, bottom, right = unit.box
            crop_image, crop_hole = image[..., top:bottom, left:right], hole[..., top:bottom, left:right]
            refined, region_report = _run_unit(model, crop_image, crop_hole, unit, settings, tagged, cancel)
            report.regions.append(region_report)
            if settings.keep_budget_size and unit.resized:
                return refined, report  # the official reduced-size output
            region_out = out[..., top:bottom, left:right]
            torch.where(crop_hole > 0, refined, region_out, out=region_out)  # in place: no full-size temporary
    return out, report


def _options(unit: WorkUnit, settings: RefineSettings) -> ScaleOptions:
    return ScaleOptions(
        n_iters=unit.n_iters,
        lr=settings.lr,
        early_stop_tol=settings.early_stop_tol,
        early_stop_patience=settings.early_stop_patience,
        checkpoint_rear=unit.checkpoint_rear,
        autocast_dtype=settings.autocast_dtype,
        no_grad_where_unused=settings.freeze_weights,
    )


def _run_tiled(model, image, hole, out, region: RegionPlan, settings, callback, cancel) -> RegionReport:
    """A full_resolution region, refined into ``out`` (refine/tiles.py)."""
    pyramid = region.units[0]
    tiles = [(unit.tile, _options(unit, settings)) for unit in region.units[1:]]
    with ffc.cancel_points(model, ffc.cancel.cancel_check(cancel, RefineCancelled)):
        refined, scales = refine_tiled(compile_rear(model, settings.speed), image, hole, pyramid.level,
                                       pyramid.n_scales, _options(pyramid, settings), tiles, out=out,
                                       callback=callback, cancel=cancel)
    finest = [tile for tile, _ in tiles if tile.level == 0]
    seams = ffc.tiles.seam_statistic(refined, hole, finest)
    log.info("LaMa refine: full resolution %dx%d in %d tiles; seam statistic %.3f (gradient along seams / "
             "elsewhere in the hole)", refined.shape[-1], refined.shape[-2], len(tiles), seams.ratio)
    report = RegionReport(box=region.box, work_size=region.work_size, n_scales=pyramid.n_scales + pyramid.level,
                          checkpointed=any(u.checkpoint_rear for u in region.units), estimate=pyramid.estimate,
                          scales=scales, tiles=len(tiles), seams=seams)
    return report


def _run_unit(model, image, hole, unit: WorkUnit, settings, callback, cancel) -> tuple[Tensor, RegionReport]:
    height, width = image.shape[-2:]
    work_image, work_hole = resize_to(image, hole, unit.work_size)
    options = _options(unit, settings)
    # Cancel is polled before every forward (refine_pyramid) and between the layers (the hooks).
    with ffc.cancel_points(model, ffc.cancel.cancel_check(cancel, RefineCancelled)):
        refined, scales = refine_pyramid(compile_rear(model, settings.speed), work_image, work_hole, unit.n_scales,
                                         options, callback=callback, cancel=cancel)
    report = RegionReport(box=unit.box, work_size=unit.work_size, n_scales=unit.n_scales,
                          checkpointed=unit.checkpoint_rear, estimate=unit.estimate, scales=scales)
    if unit.resized and not settings.keep_budget_size:
        refined = F.interpolate(refined, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
    return refined, report
