"""Mask morphology and regions: circular kernels, erosion/dilation, feathering, hole boxes.

Shared by the refinement (which erodes its loss mask with the 15 px ellipse of the paper) and by
mask preprocessing for users.
"""

from __future__ import annotations

import functools
import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ellipse_kernel", "erode", "dilate", "feather", "hole_boxes", "Box"]

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


def ellipse_kernel(size: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """A ``size`` x ``size`` 0/1 disk, the same as OpenCV's ``getStructuringElement(MORPH_ELLIPSE)``.

    Row ``i`` is filled over ``c +- round(c * sqrt(1 - (i - r)^2 / r^2))``; for 15 this gives the
    169-pixel kernel the official refinement erodes with (row widths 1, 9, 11, 13, 13, 15 x5, ...).
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive integer kernel size, got {size!r}")
    radius = size // 2
    kernel = torch.zeros(size, size, dtype=dtype, device=device)
    for row in range(size):
        dy = row - radius
        # Python's round() is half-to-even like OpenCV's cvRound.
        dx = round(radius * math.sqrt((radius * radius - dy * dy) / (radius * radius))) if radius else 0
        kernel[row, max(radius - dx, 0) : min(radius + dx + 1, size)] = 1
    return kernel


def _check_mask(name: str, mask: Tensor) -> None:
    if not isinstance(mask, Tensor) or mask.ndim != 4 or mask.shape[1] != 1 or not mask.is_floating_point():
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a float (B, 1, H, W) mask, got {got}")


@functools.lru_cache(maxsize=None)
def _shift_engine_available() -> bool:
    """kornia's low-memory "shift" morphology engine is recent; ComfyUI only guarantees kornia >= 0.7.1."""
    probe = torch.zeros(1, 1, 3, 3)
    try:
        kornia.morphology.erosion(probe, torch.ones(3, 3), engine="shift")
    except (NotImplementedError, ValueError, TypeError):
        return False
    return True


# Older engines build a (k*k)-times larger window tensor: keep each call's input below this many
# elements (x k*k floats = about 1 GiB for a 15 px kernel) by processing row bands.
_BAND_ELEMENTS = 1 << 20


def _morphology(operation, mask: Tensor, size: int) -> Tensor:
    _check_mask("mask", mask)
    if size <= 1:
        return mask.clone()
    kernel = ellipse_kernel(size, device=mask.device, dtype=mask.dtype)
    # "geodesic": pixels outside the image take no part, so the border neither erodes nor dilates.
    if _shift_engine_available():
        return operation(mask, kernel, border_type="geodesic", engine="shift")
    height, width = mask.shape[-2:]
    rows = max(1, _BAND_ELEMENTS // (mask.shape[0] * width))
    if rows >= height:
        return operation(mask, kernel, border_type="geodesic")
    # Each band carries `radius` extra rows on both sides, so its own rows are exact.
    radius, out = size // 2, []
    for start in range(0, height, rows):
        lo, hi = max(0, start - radius), min(height, start + rows + radius)
        band = operation(mask[..., lo:hi, :], kernel, border_type="geodesic")
        out.append(band[..., start - lo : start - lo + min(rows, height - start), :])
    return torch.cat(out, dim=-2)


def erode(mask: Tensor, size: int) -> Tensor:
    """Grey-level erosion with a ``size`` px disk; the image border does not erode.

    Holes that touch the border keep their border pixels, as in the official refinement
    (kornia 0.5 padded with the maximum; kornia's "geodesic" border ignores outside pixels).
    """
    return _morphology(kornia.morphology.erosion, mask, size)


def dilate(mask: Tensor, size: int) -> Tensor:
    """Grey-level dilation with a ``size`` px disk (outside the image counts as no hole)."""
    return _morphology(kornia.morphology.dilation, mask, size)


def feather(mask: Tensor, radius: float) -> Tensor:
    """Soften mask edges with a Gaussian of standard deviation ``radius / 2`` px (0 = unchanged)."""
    _check_mask("mask", mask)
    if radius <= 0:
        return mask.clone()
    sigma = radius / 2
    ksize = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(mask, (ksize, ksize), (sigma, sigma), border_type="replicate").clamp_(0, 1)


def _label_components(grid: Tensor) -> Tensor:
    """4/8-connected labels of a small boolean grid by max-propagation (0 = background)."""
    labels = torch.arange(1, grid.numel() + 1, dtype=torch.float32, device=grid.device).reshape(grid.shape)
    labels = labels * grid
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * grid
        if torch.equal(grown, labels):
            return labels
        labels = grown


def hole_boxes(hole: Tensor, margin: int, *, separate: bool = True, cell: int = 8) -> list[Box]:
    """Boxes around the holes of an (H, W) mask, each grown by ``margin`` px of context.

    With ``separate`` each connected hole (found on a ``cell``-px grid) gets its own box and
    boxes that overlap are merged until none do; otherwise one box covers every hole. Returns
    an empty list for an empty mask.
    """
    if hole.ndim != 2:
        raise ValueError(f"hole: expected an (H, W) mask, got {tuple(hole.shape)}")
    if margin < 0:
        raise ValueError(f"margin: expected >= 0 pixels, got {margin}")
    height, width = hole.shape
    present = hole > 0
    if not bool(present.any()):
        return []
    if not separate:
        rows, cols = present.any(1).nonzero(), present.any(0).nonzero()
        return [_grow((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1), margin, height, width)]

    coarse = F.max_pool2d(present[None, None].float(), cell, stride=cell, ceil_mode=True)[0, 0]
    labels = _label_components(coarse)
    boxes = []
    for label in labels.unique():
        if label == 0:
            continue
        cells = (labels == label).nonzero()
        top, left = (int(v) * cell for v in cells.min(0).values)
        bottom, right = ((int(v) + 1) * cell for v in cells.max(0).values)
        # Tighten the cell-aligned box to the actual hole pixels inside it.
        region = present[top:bottom, left:right]
        rows, cols = region.any(1).nonzero(), region.any(0).nonzero()
        box = (top + int(rows[0]), left + int(cols[0]), top + int(rows[-1]) + 1, left + int(cols[-1]) + 1)
        boxes.append(_grow(box, margin, height, width))
    return _merge_overlapping(boxes)


def _grow(box: Box, margin: int, height: int, width: int) -> Box:
    """Grow by ``margin`` on every side; context cut off by an image edge is taken from the other side."""

    def span(start: int, stop: int, limit: int) -> tuple[int, int]:
        start, stop = start - margin, stop + margin
        if start < 0:
            stop, start = stop - start, 0
        if stop > limit:
            start, stop = start - (stop - limit), limit
        return max(start, 0), stop

    top, bottom = span(box[0], box[2], height)
    left, right = span(box[1], box[3], width)
    return top, left, bottom, right


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    boxes = sorted(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for box in boxes:
            for i, other in enumerate(out):
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    out[i] = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
                    merged = True
                    break
            else:
                out.append(box)
        boxes = sorted(out)
    return boxes
