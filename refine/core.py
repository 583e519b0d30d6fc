"""One pass of the official multiscale feature refinement over one image (``refine_predict``).

Kulshreshtha, Pugh, Jiddi, "Feature Refinement to Improve High Resolution Image Inpainting"
(arXiv 2206.13644); behaviour as ``docs/lama-reference.md`` §5 and the fixtures README §4 pin it:

* pyramid of the image/mask, coarsest first; each scale reflect-padded to a multiple of 8;
* coarsest scale: one forward (plain LaMa at that size);
* finer scales: the front's local and global features are optimised with Adam for ``n_iters``
  forwards and ``n_iters - 1`` updates, against L1 on the known pixels of this scale plus L1
  between the blurred, half-size prediction and the coarser result inside the coarse hole
  eroded by a 15 px ellipse;
* each scale's result is composited with its mask and becomes the next scale's reference.

Our deliberate differences are switches of :class:`ScaleOptions` (all documented there); with
their defaults the numbers are the official ones up to float round-off.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .. import ffc
from .pyramid import MASK_EPS, build_pyramid, loss_mask_down, pad_reflect_to_multiple, pyrdown

__all__ = ["ScaleOptions", "ScaleReport", "RefineCancelled", "refine_pyramid", "rear_segments", "EROSION_SIZE"]

# The paper's circular kernel for the loss mask (cv2 MORPH_ELLIPSE 15x15).
EROSION_SIZE = 15

Callback = Callable[[dict], None]


class RefineCancelled(ffc.Cancelled):
    """Raised when the host's cancel check returns True (checked between the generator's layers)."""


@dataclass(frozen=True)
class ScaleOptions:
    """How each scale is optimised. Defaults reproduce the official algorithm."""

    n_iters: int = 15
    lr: float = 0.002
    # Stop a scale when the loss has not improved by this relative amount for ``patience``
    # iterations (0 = off, the official behaviour).
    early_stop_tol: float = 0.0
    early_stop_patience: int = 2
    # Recompute the rear's activations during backward instead of storing them (less memory,
    # about one extra forward per iteration). Same numbers.
    checkpoint_rear: bool = False
    # bf16 autocast for convolutions (the FFT stays float32); None = float32 everywhere.
    autocast_dtype: torch.dtype | None = None
    # Skip autograd where no gradient is used (coarsest scale, each scale's last forward).
    # The official code records a graph there; the values are identical.
    no_grad_where_unused: bool = True
    # Keep each scale's composited result in its report (for inspection and tests).
    keep_results: bool = False


@dataclass
class ScaleReport:
    """What happened at one scale."""

    size: tuple[int, int]
    padded: tuple[int, int]
    iterations: int  # forwards run
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    result: Tensor | None = None  # (1, 3, H, W) composited result, with ScaleOptions.keep_results


def _masked_l1(a: Tensor, b: Tensor, select: Tensor) -> Tensor:
    # Official order: select, then |a - b|, then mean (a mean over nothing is NaN).
    return torch.mean(torch.abs(a[select] - b[select]))


def rear_segments(model: nn.Module) -> list[tuple[nn.Sequential, bool]]:
    """The rear cut for checkpointing: ``(segment, recompute)`` pairs that cover it in order.

    Checkpointing keeps a segment's input instead of what the segment saves for backward, and
    recomputes one segment at a time in backward; it pays where a segment saves more than its
    input. Measured per pixel of the image (Big-LaMa, float32; a block's input is 32 B):

    * eager model: a residual block saves ~400 B (its convolutions keep their inputs, BatchNorm
      and ReLU their outputs), so every block is a segment, and so is every decoder stage (cut
      before each transposed convolution and before the output padding; stages save 2-4x their
      input).
    * fused model (:mod:`ffc.fast`): a block saves ~29 B (1-byte ReLU masks, shapes), less than
      its input, so blocks are grouped, about sqrt(n_blocks) per segment: n/k inputs are kept
      plus one group's state while it is recomputed (Big-LaMa: 5 x 32 + 4 x 29 B instead of
      18 x 29 B). The decoder saves less than its stage inputs (masks against float maps) and
      runs normally.
    """
    body = _body(model)
    first = model.config.first_block_index
    blocks_end = first + model.config.n_blocks
    fused = isinstance(model, ffc.FastLamaGenerator) or isinstance(getattr(model, "inner", None), ffc.FastLamaGenerator)
    group = max(1, round(math.sqrt(model.config.n_blocks))) if fused else 1
    segments = [(body[i : min(i + group, blocks_end)], True) for i in range(first, blocks_end, group)]
    if fused:
        return segments + [(body[blocks_end:], False)]
    # Transposed convolutions start a decoder stage.
    cuts = [i for i in range(blocks_end + 1, len(body))
            if isinstance(body[i], nn.ReflectionPad2d) or isinstance(body[i], nn.ConvTranspose2d)]
    return segments + [(body[start:end], True) for start, end in zip([blocks_end] + cuts, cuts + [len(body)])]


def _run_rear(model: nn.Module, features: tuple[Tensor, Tensor], checkpointed: bool) -> Tensor:
    if not checkpointed or not torch.is_grad_enabled():
        return model.rear(features)
    # Only the inputs of recomputed segments are stored; their activations come back in backward.
    x: Tensor | tuple[Tensor, Tensor] = features
    if getattr(model, "channels_last", False):  # as model.rear() does
        x = tuple(f.contiguous(memory_format=torch.channels_last) for f in x)
    for segment, recompute in rear_segments(model):
        if not recompute:
            x = segment(x)
        elif isinstance(x, tuple):
            x = checkpoint(lambda l, g, m=segment: m((l, g)), *x, use_reentrant=False)
        else:
            x = checkpoint(segment, x, use_reentrant=False)
    return x.contiguous()


def _body(model: nn.Module) -> nn.Sequential:
    return model.body if hasattr(model, "body") else model.model


def _optimise_scale(
    model: nn.Module,
    image: Tensor,
    hole: Tensor,
    size: tuple[int, int],
    reference: Tensor | None,
    options: ScaleOptions,
    report: ScaleReport,
    notify: Callable[[dict], None],
) -> Tensor:
    """Official ``_infer`` on one padded scale; returns the composited, padded result (detached)."""
    height, width = size
    hole3 = hole.expand(-1, 3, -1, -1)
    x = torch.cat([image * (1 - hole), hole], dim=1)
    autocast = (
        torch.autocast(image.device.type, dtype=options.autocast_dtype)
        if options.autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        local, global_ = model.front(x)
    local = local.detach().float().requires_grad_(True)
    global_ = global_.detach().float().requires_grad_(True)

    if reference is None:  # coarsest scale: plain inference at this size
        grad = contextlib.nullcontext() if not options.no_grad_where_unused else torch.no_grad()
        with grad, autocast:
            pred = model.rear((local, global_)).float()
        report.iterations = 1
        result = torch.where(hole3 > 0, pred, image).detach()
        notify({"iteration": 0, "loss": math.nan, "loss_known": math.nan, "loss_ref": math.nan,
                "pred_hole_mean": _hole_mean(pred, hole3), "last": True, "result": result[..., :height, :width]})
        return result

    optimizer = torch.optim.Adam([local, global_], lr=options.lr)
    known = hole3 < MASK_EPS
    eroded = ffc.masks.erode(loss_mask_down(hole[:, :1, :height, :width]), EROSION_SIZE)
    coarse_hole = (eroded >= 1 - MASK_EPS).expand(-1, 3, -1, -1)
    has_known, has_coarse = bool(known.any()), bool(coarse_hole.any())

    best, stale = math.inf, 0
    for iteration in range(options.n_iters):
        last = iteration == options.n_iters - 1
        optimizer.zero_grad(set_to_none=True)
        grad = torch.no_grad() if (last and options.no_grad_where_unused) else contextlib.nullcontext()
        with grad, autocast:
            pred = _run_rear(model, (local, global_), options.checkpoint_rear).float()
        pred_down = pyrdown(pred[:, :, :height, :width])
        loss_known = _masked_l1(pred, image, known)
        loss_ref = _masked_l1(pred_down, reference, coarse_hole)
        # Reported as the official code reports it (NaN when a term has no pixels). The
        # optimised loss leaves an empty term out, so NaN never reaches Adam or the result.
        loss = loss_known + loss_ref
        terms = [t for t, present in ((loss_known, has_known), (loss_ref, has_coarse)) if present]
        objective = sum(terms) if terms else None
        value = float(objective.detach()) if objective is not None else math.nan
        report.losses.append(float(loss.detach()))
        report.iterations = iteration + 1
        if options.early_stop_tol > 0 and not last and math.isfinite(value):
            if value < best * (1 - options.early_stop_tol):
                best, stale = value, 0
            else:
                stale += 1
                if stale >= options.early_stop_patience:
                    report.stopped_early = True
                    last = True
        result = torch.where(hole3 > 0, pred, image).detach() if last else None
        notify({"iteration": iteration, "loss": float(loss.detach()), "loss_known": float(loss_known.detach()),
                "loss_ref": float(loss_ref.detach()), "pred_hole_mean": _hole_mean(pred, hole3), "last": last,
                "result": None if result is None else result[..., :height, :width]})
        if last:
            break
        if objective is not None and objective.requires_grad:
            objective.backward()
            optimizer.step()
    return result


def _hole_mean(pred: Tensor, hole3: Tensor) -> float:
    selected = pred.detach()[hole3 > 0]
    return float(selected.mean()) if selected.numel() else math.nan


def refine_pyramid(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    n_scales: int,
    options: ScaleOptions = ScaleOptions(),
    *,
    callback: Callback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Tensor, list[ScaleReport]]:
    """Run the official coarse-to-fine refinement on one image.

    Args:
        model: generator with ``front``/``rear``/``config`` (eval mode, weights frozen or not),
            on ``image``'s device, usable by autograd (not created under inference mode).
        image: (1, 3, H, W) float32 in [0, 1].
        mask: (1, 1, H, W) float; values >= 1e-8 are holes (the official threshold).
        n_scales: pyramid levels; the coarsest must be at least 16 px per side.
        options: per-scale optimisation options.
        callback: called with a dict (``scale``, ``n_scales``, ``iteration``, ``n_iters``,
            ``loss``, ``loss_known``, ``loss_ref``, ``pred_hole_mean``, ``last``, and on a
            scale's last forward its composited ``result``) after every forward; it may raise.
        cancel: polled before every forward; returning True raises :class:`RefineCancelled`.
            (:func:`refine.refine` also polls it between the generator's layers.)

    Returns:
        The composited result (1, 3, H, W) and one :class:`ScaleReport` per scale, coarsest first.
    """
    multiple = model.config.multiple
    reports: list[ScaleReport] = []
    reference: Tensor | None = None
    for scale, (level_image, level_mask) in enumerate(build_pyramid(image, mask, n_scales)):
        height, width = level_image.shape[-2:]
        padded_image = _pad(level_image, multiple)
        padded_hole = (_pad(level_mask, multiple) >= MASK_EPS).to(level_image.dtype)
        report = ScaleReport(size=(height, width), padded=tuple(padded_image.shape[-2:]), iterations=0)

        def notify(info: dict, scale: int = scale) -> None:
            if callback is not None:
                callback({"scale": scale, "n_scales": n_scales, "n_iters": options.n_iters, **info})

        def check_cancel() -> None:
            if cancel is not None and cancel():
                raise RefineCancelled("refinement cancelled")

        check_cancel()
        result = _optimise_scale(
            model, padded_image, padded_hole, (height, width), reference, options, report,
            lambda info: (notify(info), check_cancel()),
        )
        reference = result[:, :, :height, :width]
        if options.keep_results:
            report.result = reference
        reports.append(report)
    return reference, reports


def _pad(x: Tensor, multiple: int) -> Tensor:
    """Per-scale pad: torch "reflect" like the official code; numpy-symmetric below 16 px, where
    reflect cannot pad (the official code fails there) and the generator needs 16 px anyway."""
    height, width = x.shape[-2:]
    if min(height, width) >= ffc.MIN_SIZE:
        return pad_reflect_to_multiple(x, multiple)
    return ffc.pad_symmetric(x, *ffc.padded_size(height, width, multiple))
