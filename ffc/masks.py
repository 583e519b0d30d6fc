"""Mask morphology and regions: circular kernels, erosion/dilation, feathering, hole boxes.

Shared by the refinement (which erodes its loss mask with the 15 px ellipse of the paper) and by
mask preprocessing for users.
"""

from __future__ import annotations

import math

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .cancel import CancelCheck, raise_if_cancelled

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


def _row_runs(kernel: Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` of each kernel row's single run of ones (a disk has exactly one per row)."""
    runs = []
    for index, row in enumerate(kernel.bool().tolist()):
        columns = [c for c, on in enumerate(row) if on]
        if not columns or columns[-1] - columns[0] + 1 != len(columns):
            raise ValueError(f"kernel: row {index} must hold one run of ones, got {row}")
        runs.append((columns[0], columns[-1] + 1))
    return runs


def _flat_morphology(image: Tensor, out: Tensor, runs: list[tuple[int, int]], origin: int, *, dilate: bool,
                     cancel: CancelCheck | None, what: str) -> None:
    """``out = min`` (``max`` to dilate) of ``image`` (H, W) over the kernel ``runs`` placed at each pixel.

    Output pixel (y, x) reduces ``image[y + i - origin, x + j - origin]`` over kernel cells (i, j),
    pixels outside the image excluded. Row decomposition, exact for any kernel with one run per
    row: a horizontal running extreme of each run's width, then one shifted reduction per kernel
    row. Widths are visited in increasing order and each one is built from the previous with a
    single reduction (two overlapping windows of width w cover any width up to 2 w), so the cost is
    about ``rows + distinct widths`` passes over the image, never ``rows * columns``.
    """
    reduce = torch.maximum if dilate else torch.minimum
    fill = float("-inf") if dilate else float("inf")  # the identity: excluded pixels never win
    height, width = image.shape
    offsets = [start - origin for start, _ in runs]
    left = max(0, -min(offsets))
    right = max(0, max(stop - 1 - origin for _, stop in runs))
    # Columns outside the image are padded with the identity; rows outside are skipped below.
    current = F.pad(image[None], (left, right), value=fill)[0]  # running extreme of width 1
    spare = torch.empty_like(current)
    current_width, padded_width = 1, current.shape[1]
    out.fill_(fill)
    rows_by_width: dict[int, list[int]] = {}
    for row, (start, stop) in enumerate(runs):
        rows_by_width.setdefault(stop - start, []).append(row)
    for run_width in sorted(rows_by_width):
        while current_width < run_width:
            raise_if_cancelled(cancel, what)
            step = min(current_width, run_width - current_width)
            n = padded_width - (current_width + step) + 1  # columns whose window lies inside the padding
            reduce(current[:, :n], current[:, step : step + n], out=spare[:, :n])
            current, spare, current_width = spare, current, current_width + step
        for row in rows_by_width[run_width]:
            dy = row - origin
            top, bottom = max(0, -dy), min(height, height - dy)
            if top >= bottom:
                continue
            raise_if_cancelled(cancel, what)
            column = left + offsets[row]
            target = out[top:bottom]
            reduce(target, current[top + dy : bottom + dy, column : column + width], out=target)


def _morphology(mask: Tensor, size: int, *, dilate: bool, cancel: CancelCheck | None) -> Tensor:
    _check_mask("mask", mask)
    if mask.requires_grad and torch.is_grad_enabled():
        raise ValueError("mask: erode/dilate are not differentiable, got a mask that requires grad; detach it first")
    if size <= 1:
        return mask.clone()
    runs = _row_runs(ellipse_kernel(size))
    origin = size // 2  # kornia's default anchor, also for even sizes
    if dilate:
        # Minkowski dilation reflects the kernel: max over image[y - (i - origin), x - (j - origin)].
        runs = [(size - stop, size - start) for start, stop in reversed(runs)]
        origin = size - 1 - origin
    what = "dilate" if dilate else "erode"
    out = torch.empty_like(mask, memory_format=torch.contiguous_format)
    for index in range(mask.shape[0]):  # one image at a time bounds the scratch memory
        _flat_morphology(mask[index, 0], out[index, 0], runs, origin, dilate=dilate, cancel=cancel, what=what)
    return out


def erode(mask: Tensor, size: int, *, cancel: CancelCheck | None = None) -> Tensor:
    """Grey-level erosion with a ``size`` px disk (:func:`ellipse_kernel`); the image border does not erode.

    Pixels outside the image take no part (kornia's "geodesic" border), so holes that touch the
    border keep their border pixels, as in the official refinement (kornia 0.5 padded with the
    maximum). Exactly ``kornia.morphology.erosion(mask, ellipse_kernel(size), border_type="geodesic")``,
    at a cost of about ``1.3 * size`` passes over the image instead of ``size ** 2``.

    Args:
        mask: (B, 1, H, W) float (any float dtype; binary or grey).
        size: kernel diameter in px; ``size <= 1`` returns a copy. Even sizes use kornia's anchor
            ``size // 2``.
        cancel: polled between passes (each one pass over one image); returning True raises
            :class:`~ffc.cancel.Cancelled`.

    Returns:
        (B, 1, H, W), same dtype and device as ``mask``.

    Raises:
        ValueError: for a mask that is not a float (B, 1, H, W) tensor or a bad ``size``.
        Cancelled: when ``cancel()`` returned True.
    """
    return _morphology(mask, size, dilate=False, cancel=cancel)


def dilate(mask: Tensor, size: int, *, cancel: CancelCheck | None = None) -> Tensor:
    """Grey-level dilation with a ``size`` px disk (outside the image counts as no hole).

    Exactly ``kornia.morphology.dilation(mask, ellipse_kernel(size), border_type="geodesic")``; see
    :func:`erode` for the arguments and the cost.
    """
    return _morphology(mask, size, dilate=True, cancel=cancel)


def feather(mask: Tensor, width: float, *, cancel: CancelCheck | None = None) -> Tensor:
    """Add a soft edge ``width`` px wide outside the hole; inside, the mask is never lowered.

    The hole is grown by a disk of radius ``width / 2`` and blurred with a Gaussian of sigma
    ``width / 6`` (reach 3 sigma = ``width / 2``); the original value is kept wherever it is
    larger. So a hole stays 1 however small it is (the object it covers is always fully
    replaced), the edge falls from 1 at the hole's boundary (0.9987 beside a straight edge) to 0
    within ``width`` px outside it, and pixels farther away stay exactly 0.

    Args:
        mask: (B, 1, H, W) float in [0, 1], usually binary.
        width: soft edge width in px; ``<= 0`` returns a copy.
        cancel: polled between steps; returning True raises :class:`~ffc.cancel.Cancelled`.

    Returns:
        (B, 1, H, W) in [0, 1], same dtype and device as ``mask``.
    """
    _check_mask("mask", mask)
    if width <= 0:
        return mask.clone()
    grown = dilate(mask, 2 * math.floor(width / 2) + 1, cancel=cancel)
    raise_if_cancelled(cancel, "feather")
    sigma = width / 6
    ksize = 2 * math.ceil(3 * sigma) + 1
    soft = kornia.filters.gaussian_blur2d(grown, (ksize, ksize), (sigma, sigma), border_type="replicate")
    return torch.maximum(mask, soft.clamp_(0, 1))


def _components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected components of n nodes joined by the pairs (first[k], second[k]), by union-find.

    Returns each node's component, numbered 0, 1, ... in the order of their smallest node.
    """
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i, j in zip(first.tolist(), second.tolist()):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.fromiter((root(i) for i in range(n)), dtype=np.int64, count=n)
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def _pairs_in_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) with lo[i] <= j < hi[i]."""
    counts = np.maximum(hi - lo, 0)
    first = np.repeat(np.arange(len(lo)), counts)
    # j runs from lo[i] upwards within each i's block.
    second = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    return first, second


def _label_runs(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a boolean (h, w) grid, by union-find over its row runs.

    Returns, for each run of True cells in row-major order, its row, first and last column and
    component (0, 1, ...). Linear in the grid size: one numpy pass finds the runs, binary search
    the runs of the next row that touch each one (columns overlapping or diagonally adjacent;
    fewer such pairs than runs in the two rows), and each pair is one union.
    """
    height, width = grid.shape
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = grid
    rows, first = np.nonzero(padded[:, 1:-1] & ~padded[:, :-2])
    _, last = np.nonzero(padded[:, 1:-1] & ~padded[:, 2:])  # same row-major order: one end per start
    # Keys that sort runs by (row, column); a gap of 2 per row keeps "column - 1" and "+ 1" in their row.
    stride = width + 2
    first_key, last_key = rows * stride + first + 1, rows * stride + last + 1
    below = (rows + 1) * stride + 1
    # The runs of the next row touching run i: last >= first_i - 1 and first <= last_i + 1.
    lo = np.searchsorted(last_key, below + first - 1, side="left")
    hi = np.searchsorted(first_key, below + last + 1, side="right")
    return rows, first, last, _components(len(rows), *_pairs_in_ranges(lo, hi))


def _cell_extents(present: Tensor, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each ``cell`` x ``cell`` cell: first and last row, first and last column holding a hole pixel.

    Offsets within the cell, (gh, gw) each; an empty cell has first = ``cell`` and last = -1.
    """
    height, width = present.shape
    gh, gw = -(-height // cell), -(-width // cell)
    grid = F.pad(present, (0, gw * cell - width, 0, gh * cell - height)).reshape(gh, cell, gw, cell)
    # Offsets 1 .. cell in uint8 (cells are small), 0 where no pixel: half the time of int64.
    offsets = torch.arange(1, cell + 1, device=present.device, dtype=torch.uint8)
    empty = torch.tensor(cell + 1, device=present.device, dtype=torch.uint8)

    def extents(any_at: Tensor) -> tuple[np.ndarray, np.ndarray]:  # any_at: (gh, gw, cell)
        first = torch.where(any_at, offsets, empty).amin(-1)
        last = (any_at * offsets).amax(-1)
        return first.cpu().numpy().astype(np.int64) - 1, last.cpu().numpy().astype(np.int64) - 1

    first_row, last_row = extents(grid.any(3).permute(0, 2, 1))
    first_col, last_col = extents(grid.any(1))
    return first_row, last_row, first_col, last_col


def hole_boxes(hole: Tensor, margin: int, *, separate: bool = True, cell: int = 8) -> list[Box]:
    """Boxes around the holes of an (H, W) mask, each grown by ``margin`` px of context.

    With ``separate`` each connected hole (found on a ``cell``-px grid) gets its own box and
    boxes that overlap are merged until none do; otherwise one box covers every hole. Returns
    an empty list for an empty mask, else the boxes sorted.

    Time is linear in the number of pixels (one pass to find each cell's hole extents) and in
    the number of grid cells (union-find over row runs of cells), whatever the holes' shapes.
    """
    if hole.ndim != 2:
        raise ValueError(f"hole: expected an (H, W) mask, got {tuple(hole.shape)}")
    if margin < 0:
        raise ValueError(f"margin: expected >= 0 pixels, got {margin}")
    if not 1 <= cell <= 254:  # cell offsets are kept in uint8
        raise ValueError(f"cell: expected 1 to 254 px, got {cell}")
    height, width = hole.shape
    present = hole > 0
    if not bool(present.any()):
        return []
    if not separate:
        rows, cols = present.any(1).nonzero(), present.any(0).nonzero()
        return [_grow((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1), margin, height, width)]

    first_row, last_row, first_col, last_col = _cell_extents(present, cell)
    rows, first, last, component = _label_runs(last_row >= 0)
    n = int(component.max()) + 1
    # Cell bounding box of each component.
    top, bottom = np.full(n, rows.max() + 1), np.zeros(n, dtype=rows.dtype)
    left, right = np.full(n, last.max() + 1), np.zeros(n, dtype=last.dtype)
    np.minimum.at(top, component, rows)
    np.maximum.at(bottom, component, rows)
    np.minimum.at(left, component, first)
    np.maximum.at(right, component, last)
    boxes = []
    for t, l, b, r in zip(top.tolist(), left.tolist(), bottom.tolist(), right.tolist()):
        # Tighten the cell-aligned box to the hole pixels inside it (of any component): the first
        # such row lies in the box's top cell row (the component has a cell there), and so on.
        box = (t * cell + int(first_row[t, l : r + 1].min()), l * cell + int(first_col[t : b + 1, l].min()),
               b * cell + int(last_row[b, l : r + 1].max()) + 1, r * cell + int(last_col[t : b + 1, r].max()) + 1)
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


_PAIR_CHUNK = 1 << 22


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    """Merge boxes that overlap (share area) into their bounding box until none do; sorted.

    The result does not depend on the order of merging: any merged group lies inside one box of
    every non-overlapping cover, so merging until nothing overlaps always ends in the finest one.
    Each round finds the overlapping pairs with a sweep over the boxes sorted by top (boxes
    starting below a box's bottom cannot overlap it) and merges their connected groups at once.
    """
    array = np.array(sorted(set(boxes)), dtype=np.int64).reshape(-1, 4)
    while len(array) > 1:
        array = array[np.argsort(array[:, 0], kind="stable")]
        top, left, bottom, right = array.T
        # Boxes j > i start at or below box i's top; those starting above its bottom overlap it
        # vertically, and overlap it when their columns overlap too.
        start, stop = np.arange(1, len(array) + 1), np.searchsorted(top, bottom, side="left")
        # Candidates in chunks of about 4M pairs, so that memory stays bounded when many overlap.
        ends = np.cumsum(np.maximum(stop - start, 0))
        chunks = np.searchsorted(ends, np.arange(_PAIR_CHUNK, ends[-1], _PAIR_CHUNK), side="right")
        pairs = []
        for lo, hi in zip([0, *chunks.tolist()], [*chunks.tolist(), len(array)]):
            first, second = _pairs_in_ranges(start[lo:hi], stop[lo:hi])
            first += lo
            keep = (left[second] < right[first]) & (left[first] < right[second])
            pairs.append((first[keep], second[keep]))
        first, second = (np.concatenate(side) for side in zip(*pairs))
        if len(first) == 0:
            break
        group = _components(len(array), first, second)
        merged = np.empty((group.max() + 1, 4), dtype=np.int64)
        merged[:, :2], merged[:, 2:] = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        for column, reduce in enumerate((np.minimum, np.minimum, np.maximum, np.maximum)):
            reduce.at(merged[:, column], group, array[:, column])
        array = merged
    return sorted((int(t), int(l), int(b), int(r)) for t, l, b, r in array)
