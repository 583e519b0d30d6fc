"""Public entry point: refine a batch, with our practical options around the official core.

Defaults differ from ``bin/predict.py refine=True`` only where the issue asks us to do better,
each an explicit setting:

* ``keep_budget_size=False``: the output always has the input size. When ``H * W > px_budget``
  the refinement runs at the official reduced size, the result is upsampled (bicubic) and only
  the hole pixels are pasted into the full-size original, so unmasked pixels stay bit-identical.
  ``True`` returns the reduced image, as the official code does.
* ``n_scales`` / ``min_side``: set ``min_side`` lower (or ``n_scales`` directly) to refine
  512-1024 px images, which the official default leaves at one scale (no refinement).
* ``fused=True``: the rear runs BatchNorm-folded with frozen weights, so no weight gradients
  are computed; ``fused=False, freeze_weights=False`` is the straightforward official cost.
* ``crop_to_mask``: refine only boxes around the holes plus ``crop_margin`` px of context,
  each separate hole on its own when ``separate_holes``; the pyramid depth is still decided by
  the full image's size.
* ``checkpointing="auto"``: recompute rear activations when the estimated peak would not fit in
  the device's free memory; if even that does not fit, lower the working size (logged).
* ``precision="bf16"``: autocast convolutions to bfloat16 (CUDA or CPU); FFTs stay float32.
* ``early_stop_tol``: stop a scale once the loss stops improving.

Progress and cancellation: ``callback(info)`` after every forward, ``cancel()`` polled there too.
ComfyUI runs nodes under ``torch.inference_mode()``: this function steps out of it and makes
its own autograd-usable copies of the inputs (and of the model if its tensors are inference
tensors).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._ffc import ffc
from .core import RefineCancelled, ScaleOptions, ScaleReport, refine_pyramid
from .memory import MemoryEstimate, available_bytes, estimate_refine_bytes
from .pyramid import MASK_EPS, budget_size, number_of_scales, resize_to_budget

__all__ = ["RefineSettings", "RegionReport", "ImageReport", "refine", "plan_scales", "RefineCancelled"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
CHECKPOINTING = ("auto", "on", "off")
# Smallest side of the coarsest pyramid level (the generator needs 16 px).
MIN_COARSEST = 16


@dataclass(frozen=True)
class RefineSettings:
    """All refinement settings; the defaults are the paper's, our output-size rule aside."""

    n_iters: int = 15
    lr: float = 0.002
    min_side: int = 512
    max_scales: int = 3
    px_budget: int = 1_800_000
    n_scales: int | None = None  # overrides min_side/max_scales when set
    keep_budget_size: bool = False
    crop_to_mask: bool = False
    crop_margin: int = 128
    separate_holes: bool = True
    early_stop_tol: float = 0.0
    early_stop_patience: int = 2
    precision: str = "fp32"
    checkpointing: str = "auto"
    fused: bool = True
    freeze_weights: bool = True
    memory_fraction: float = 0.9  # of the free memory the estimate may use

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(isinstance(self.n_iters, int) and self.n_iters >= 1, f"n_iters: expected an integer >= 1, got {self.n_iters!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr: expected a positive learning rate, got {self.lr!r}")
        need(isinstance(self.min_side, int) and self.min_side >= 1, f"min_side: expected an integer >= 1, got {self.min_side!r}")
        need(isinstance(self.max_scales, int) and self.max_scales >= 1, f"max_scales: expected an integer >= 1, got {self.max_scales!r}")
        need(self.px_budget >= MIN_COARSEST**2, f"px_budget: expected at least {MIN_COARSEST ** 2} pixels, got {self.px_budget!r}")
        need(self.n_scales is None or (isinstance(self.n_scales, int) and self.n_scales >= 1),
             f"n_scales: expected None or an integer >= 1, got {self.n_scales!r}")
        need(self.crop_margin >= 0, f"crop_margin: expected >= 0 pixels, got {self.crop_margin!r}")
        need(self.early_stop_tol >= 0, f"early_stop_tol: expected >= 0 (0 = off), got {self.early_stop_tol!r}")
        need(self.early_stop_patience >= 1, f"early_stop_patience: expected >= 1, got {self.early_stop_patience!r}")
        need(self.precision in PRECISIONS, f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        need(self.checkpointing in CHECKPOINTING, f"checkpointing: expected one of {CHECKPOINTING}, got {self.checkpointing!r}")
        need(0 < self.memory_fraction <= 1, f"memory_fraction: expected a value in (0, 1], got {self.memory_fraction!r}")
        need(not (self.keep_budget_size and self.crop_to_mask), "keep_budget_size cannot be combined with crop_to_mask")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype convolutions autocast to, or None for float32 throughout."""
        return torch.bfloat16 if self.precision == "bf16" else None


@dataclass
class RegionReport:
    """One refined region (the whole image, or one crop)."""

    box: tuple[int, int, int, int]  # top, left, bottom, right in the input image
    work_size: tuple[int, int]  # size the pyramid's finest level ran at
    n_scales: int
    checkpointed: bool
    estimate: MemoryEstimate | None
    scales: list[ScaleReport] = field(default_factory=list)


@dataclass
class ImageReport:
    """What happened to one image of the batch."""

    skipped: str | None = None  # reason, when the image was returned unchanged
    regions: list[RegionReport] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return sum(s.iterations for r in self.regions for s in r.scales)


def plan_scales(height: int, width: int, settings: RefineSettings) -> int:
    """Number of pyramid levels for an image of this size (after the pixel budget)."""
    h, w = budget_size(height, width, settings.px_budget)
    n = settings.n_scales if settings.n_scales is not None else number_of_scales(h, w, settings.min_side, settings.max_scales)
    return _cap_scales(n, min(h, w))


def _cap_scales(n: int, min_side: int) -> int:
    # Keep the coarsest level at least MIN_COARSEST px (never fewer than one level).
    while n > 1 and min_side // 2 ** (n - 1) < MIN_COARSEST:
        n -= 1
    return n


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


def refine(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    settings: RefineSettings = RefineSettings(),
    *,
    callback: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Tensor, list[ImageReport]]:
    """Refine every image of a batch, one after another, with the same settings.

    Args:
        model: :class:`ffc.LamaGenerator` (or a fused one) in eval mode, on the images' device.
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W); pixels >= 1e-8 are holes (the official rule; binarise beforehand for
            another threshold).
        settings: see :class:`RefineSettings`.
        callback: receives dicts with ``image``, ``region``, ``n_regions``, ``scale``,
            ``n_scales``, ``iteration``, ``n_iters``, ``loss`` ... after every forward.
        cancel: polled after every forward; True raises :class:`RefineCancelled`.

    Returns:
        (result, reports): result (B, 3, H, W) in ``image``'s dtype, the input bit for bit
        outside the holes (or the official reduced size with ``keep_budget_size``), and one
        :class:`ImageReport` per image.

    Raises:
        TypeError: for a model that does not split into front and rear (``model.refinable``).
    """
    settings.validate()
    if not getattr(model, "refinable", False):
        raise TypeError(
            f"model: {type(model).__name__} cannot be refined: refinement needs a LaMa generator whose network splits "
            "into front and rear (ffc.LamaGenerator or ffc.FastLamaGenerator; see ModelInfo.refinable)"
        )
    ffc.checks.check_inpaint_inputs(image, mask, model)
    device = next(model.parameters()).device
    if settings.precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision: bf16 autocast is supported on CUDA and CPU, not on {device.type}")

    with torch.inference_mode(False), torch.enable_grad():
        work_model = _autograd_model(model, settings.fused, settings.freeze_weights, device.type == "cpu")
        source = image.detach().clone().float()
        holes = (mask.detach().clone().float() >= MASK_EPS).float()
        outputs, reports = [], []
        for index in range(source.shape[0]):
            def tagged(info: dict, index: int = index) -> None:
                if callback is not None:
                    callback({"image": index, "n_images": source.shape[0], **info})

            result, report = _refine_image(work_model, source[index : index + 1], holes[index : index + 1],
                                           settings, tagged, cancel)
            outputs.append(result)
            reports.append(report)
        result = torch.cat(outputs)
    return result.to(image.dtype), reports


def _refine_image(model, image, hole, settings, callback, cancel) -> tuple[Tensor, ImageReport]:
    height, width = image.shape[-2:]
    if not bool(hole.any()):
        if settings.keep_budget_size:  # same size as its refined batch mates would get
            return resize_to_budget(image, hole, settings.px_budget)[0].clone(), ImageReport(skipped="empty mask")
        return image.clone(), ImageReport(skipped="empty mask")
    n_scales = plan_scales(height, width, settings)
    if settings.crop_to_mask:
        boxes = ffc.masks.hole_boxes(hole[0, 0], settings.crop_margin, separate=settings.separate_holes)
    else:
        boxes = [(0, 0, height, width)]

    report = ImageReport()
    out = image.clone()
    for region, box in enumerate(boxes):
        top, left, bottom, right = box
        crop_image, crop_hole = image[..., top:bottom, left:right], hole[..., top:bottom, left:right]

        def tagged(info: dict, region: int = region) -> None:
            callback({"region": region, "n_regions": len(boxes), **info})

        refined, region_report = _refine_region(model, crop_image, crop_hole, n_scales, settings, tagged, cancel)
        region_report.box = box
        report.regions.append(region_report)
        if settings.keep_budget_size and refined.shape[-2:] != crop_image.shape[-2:]:
            return refined, report  # the official reduced-size output
        out[..., top:bottom, left:right] = torch.where(crop_hole > 0, refined, crop_image)
    return out, report


def _refine_region(model, image, hole, n_scales, settings, callback, cancel) -> tuple[Tensor, RegionReport]:
    height, width = image.shape[-2:]
    budget = settings.px_budget
    while True:
        work_h, work_w = budget_size(height, width, budget)
        n = _cap_scales(n_scales, min(work_h, work_w))
        checkpointed, estimate = _choose_checkpointing(model, work_h, work_w, settings)
        if estimate is None or checkpointed is not None:
            break
        # Does not fit even with checkpointing: lower the working size (never below 256^2 px).
        smaller = max(int(budget * 0.7), 256 * 256)
        if smaller >= work_h * work_w:
            smaller = int(work_h * work_w * 0.7)
        if smaller < 256 * 256:
            raise MemoryError(
                f"refinement needs ~{estimate.gib():.1f} GiB for {work_h}x{work_w} and the device has less free; "
                "use crop_to_mask or a smaller px_budget"
            )
        log.warning("LaMa refine: %dx%d needs ~%.1f GiB even with checkpointing; lowering the pixel budget to %d",
                    work_h, work_w, estimate.gib(), smaller)
        budget = smaller

    work_image, work_hole = resize_to_budget(image, hole, budget)
    options = ScaleOptions(
        n_iters=settings.n_iters,
        lr=settings.lr,
        early_stop_tol=settings.early_stop_tol,
        early_stop_patience=settings.early_stop_patience,
        checkpoint_rear=bool(checkpointed),
        autocast_dtype=settings.autocast_dtype,
        no_grad_where_unused=settings.freeze_weights,
    )
    refined, scales = refine_pyramid(model, work_image, work_hole, n, options, callback=callback, cancel=cancel)
    report = RegionReport(box=(0, 0, height, width), work_size=(work_h, work_w), n_scales=n,
                          checkpointed=bool(checkpointed), estimate=estimate, scales=scales)
    if (work_h, work_w) != (height, width) and not settings.keep_budget_size:
        refined = F.interpolate(refined, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
    return refined, report


def _choose_checkpointing(model, height, width, settings) -> tuple[bool | None, MemoryEstimate | None]:
    """(checkpoint?, estimate): checkpoint is None when nothing fits; estimate None when not measured."""
    if settings.checkpointing != "auto":
        return settings.checkpointing == "on", None
    device = next(model.parameters()).device
    free = available_bytes(device)
    if free is None:
        return False, None
    padded_h, padded_w = ffc.padded_size(height, width, model.config.multiple)
    limit = free * settings.memory_fraction
    plain = estimate_refine_bytes(model, padded_h, padded_w, autocast_dtype=settings.autocast_dtype)
    if plain.total <= limit:
        return False, plain
    checkpointed = estimate_refine_bytes(model, padded_h, padded_w, checkpoint_rear=True,
                                         autocast_dtype=settings.autocast_dtype)
    if checkpointed.total <= limit:
        log.info("LaMa refine: %dx%d needs ~%.1f GiB, %.1f GiB free: checkpointing the rear (~%.1f GiB)",
                 height, width, plain.gib(), free / 2**30, checkpointed.gib())
        return True, checkpointed
    return None, checkpointed
