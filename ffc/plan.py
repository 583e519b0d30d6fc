"""Plans for plain inference: which box of each image LaMa sees, at what size, with what memory.

:func:`plan_inpaint` decides everything :func:`ffc.strategies.inpaint_with_strategy` then does:
the boxes (one per image, or one per hole for ``crop_around_mask``), each box's working size
(``resize_to_limit`` shrinks it), the forwards and the predicted peak memory. When the caller
says how much memory is free, a strategy that does not fit is replaced by one that does (crops
around the holes, else a resized copy), with a note saying so, instead of running out of memory.

The box policy is shared with the refinement planner (``refine/plan.py``):

* :func:`snap_box` grows a box outwards onto the generator's grid, so a crop sees the same
  stride grid as the whole image (a box starting at (108, 362) does not: its fill then differs
  visibly from the whole-image fill);
* :func:`merge_boxes` merges boxes that overlap and boxes whose union is cheaper to run than
  both (many small holes: one forward instead of hundreds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .generator import LamaConfig
from .inference import MIN_SIZE, binarize, padded_size
from .masks import Box, hole_boxes
from .tiles import MIN_TILE_SIDE, Tile, tile_grid

__all__ = [
    "STRATEGIES",
    "TILED",
    "DEFAULT_STRATEGY",
    "DEFAULT_RESIZE_LIMIT",
    "DEFAULT_CROP_MARGIN",
    "Note",
    "InpaintUnit",
    "InpaintImagePlan",
    "InpaintPlan",
    "plan_inpaint",
    "inference_bytes",
    "snap_box",
    "merge_boxes",
    "resized_size",
    "format_bytes",
]

STRATEGIES = ("original", "resize_to_limit", "crop_around_mask")
# What the memory guard runs for ``original`` when neither the full pass nor crops fit: a global
# pass on a resized copy, then full-resolution tiles whose detail is added to it.
TILED = "original_tiled"
# Full-size buffers of a tiled image besides the output: the global pass upscaled (float32 RGB,
# 12), the hole (float 4, bool 1). Measured with the profiler at 512-4096 px: 28.8-29.5 B/px at
# the margin with the output (41 before the global fill was kept in one buffer);
# tests/refine/test_tiles.py checks the bound.
TILED_FULL_SIZE_BYTES_PER_PIXEL = 18
# Defaults of plain inference, for the library, the node and the command line alike.
DEFAULT_STRATEGY = "original"
DEFAULT_RESIZE_LIMIT = 1280
DEFAULT_CROP_MARGIN = 128
# Per-forward fixed cost, in pixels of work, for merge decisions of plain crops: Big-LaMa on a
# 2-core CPU takes ~0.05 s per forward plus ~10 us per pixel (and small crops run less
# efficiently), so one forward costs about as much as ~100 x 100 more pixels.
FORWARD_OVERHEAD_PX = 96 * 96
# The smallest copy the memory guard resizes to before it gives up.
MIN_RESIZE_SIDE = 64
# Above this many boxes, neighbours are first grouped on a coarse grid (keeps merging O(n^2) small).
_MAX_BOXES_PAIRWISE = 512


@dataclass(frozen=True)
class Note:
    """A decision or warning of a planner, for logs and the node's message area."""

    level: str  # "info" or "warning"
    text: str


def format_bytes(n: float) -> str:
    """``2.1 GiB``, ``350 MiB``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# --- boxes ----------------------------------------------------------------------------------------


def snap_box(box: Box, grid: int, height: int, width: int) -> Box:
    """Grow ``box`` outwards to multiples of ``grid`` (clipped to the image).

    A crop whose top-left corner is a multiple of ``multiple * 2 ** (n_scales - 1)`` is, at every
    pyramid level, on the generator's stride grid of the whole image.
    """
    if grid < 1:
        raise ValueError(f"grid: expected >= 1 px, got {grid}")
    top, left, bottom, right = box
    return ((top // grid) * grid, (left // grid) * grid,
            min(height, -(-bottom // grid) * grid), min(width, -(-right // grid) * grid))


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member index) of every node of a boolean adjacency."""
    n = len(adjacent)
    labels = np.arange(n)
    while True:
        neighbour_min = np.where(adjacent, labels[None, :], n).min(axis=1)
        updated = np.minimum(labels, neighbour_min)
        updated = updated[updated]  # pointer jumping: follow labels to their own labels
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def _union_by_label(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = []
    for label in np.unique(labels):
        group = boxes[labels == label]
        out.append((group[:, 0].min(), group[:, 1].min(), group[:, 2].max(), group[:, 3].max()))
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def _merge_overlapping(boxes: np.ndarray) -> np.ndarray:
    while len(boxes) > 1:
        t, l, b, r = (boxes[:, i] for i in range(4))
        overlap = (t[:, None] < b[None, :]) & (t[None, :] < b[:, None]) & (l[:, None] < r[None, :]) & (l[None, :] < r[:, None])
        np.fill_diagonal(overlap, False)
        if not overlap.any():
            break
        boxes = _union_by_label(boxes, _components(overlap))
    return boxes


def _coarsen(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Group boxes whose centres share a cell of a coarse grid (at most ~_MAX_BOXES_PAIRWISE cells)."""
    cell = max(1, math.ceil(math.sqrt(height * width / _MAX_BOXES_PAIRWISE)))
    rows = ((boxes[:, 0] + boxes[:, 2]) // 2) // cell
    cols = ((boxes[:, 1] + boxes[:, 3]) // 2) // cell
    return _union_by_label(boxes, rows * (width // cell + 1) + cols)


def merge_boxes(boxes: Sequence[Box], cost: Callable[[np.ndarray, np.ndarray], np.ndarray], height: int,
                width: int) -> list[Box]:
    """Merge overlapping boxes, then pairs of boxes whose union costs less than the two apart.

    Args:
        boxes: (top, left, bottom, right) boxes inside an ``height`` x ``width`` image.
        cost: vectorised cost of running one box, ``cost(heights, widths) -> costs`` (arrays).
            Merging lowers the summed cost; it stops when no pair's union is cheaper.

    Returns:
        Non-overlapping boxes, sorted, that cover every input box. Greedy (mutual best pairs,
        then the single box around everything if that is cheaper still).
    """
    array = np.asarray(list(boxes), dtype=np.int64).reshape(-1, 4)
    if len(array) == 0:
        return []
    if len(array) > _MAX_BOXES_PAIRWISE:
        array = _coarsen(array, height, width)
    array = _merge_overlapping(array)

    def costs(a: np.ndarray) -> np.ndarray:
        return np.asarray(cost(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]), dtype=np.float64)

    while len(array) > 1:
        n = len(array)
        own = costs(array)
        t = np.minimum.outer(array[:, 0], array[:, 0])
        l = np.minimum.outer(array[:, 1], array[:, 1])
        b = np.maximum.outer(array[:, 2], array[:, 2])
        r = np.maximum.outer(array[:, 3], array[:, 3])
        union = np.asarray(cost((b - t).ravel(), (r - l).ravel()), dtype=np.float64).reshape(n, n)
        gain = own[:, None] + own[None, :] - union
        np.fill_diagonal(gain, -np.inf)
        index = np.arange(n)
        best = gain.argmax(axis=1)
        take = (best[best] == index) & (gain[index, best] > 0) & (index < best)
        if not take.any():
            break
        first, second = index[take], best[take]
        merged = np.stack([t[first, second], l[first, second], b[first, second], r[first, second]], axis=1)
        keep = np.ones(n, dtype=bool)
        keep[first] = keep[second] = False
        array = _merge_overlapping(np.concatenate([array[keep], merged]))

    if len(array) > 1:
        around = np.array([[array[:, 0].min(), array[:, 1].min(), array[:, 2].max(), array[:, 3].max()]])
        if costs(around)[0] < costs(array).sum():
            array = around
    return sorted(tuple(int(v) for v in row) for row in array)


# --- memory ---------------------------------------------------------------------------------------


def inference_bytes(config: LamaConfig, height: int, width: int, dtype: torch.dtype = torch.float32, *,
                    fused: bool = True) -> int:
    """Peak bytes of one no-grad forward of one ``height`` x ``width`` image (weights not included).

    The peak is in the last decoder stage, at full resolution: its input, its output, the padded
    copy for the output convolution (about 2.5 ngf-wide maps in the fused model, whose ReLUs run
    in place; 4 in the eager model, whose BatchNorm does not). Measured on CPU at 1024 x 1024:
    0.64 GiB fused, 1.00 GiB eager; this gives 0.69 and 1.06 GiB.
    """
    padded_h, padded_w = padded_size(height, width, config.multiple)
    pixels = padded_h * padded_w
    element = torch.finfo(dtype).bits // 8
    decoder = (2.5 if fused else 4.0) * config.ngf * pixels * element
    # The bottleneck stage (residual blocks and their float32 FFTs) peaks lower, at H/8 x W/8.
    bottleneck = 8 * config.bottleneck_channels * (pixels / config.multiple**2) * 4
    working = 16 * 4 * pixels  # image, hole, padded copies, prediction and composite in float32
    return int(max(decoder, bottleneck) + working)


# --- plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InpaintUnit:
    """One generator forward: ``box`` of the image, inpainted at ``work_size``."""

    box: Box  # (top, left, bottom, right) in the image
    work_size: tuple[int, int]  # what the generator sees before padding (smaller when resized)
    predicted_bytes: int
    tile: Tile | None = None  # a full-resolution tile of ``original_tiled`` (box = its window)

    @property
    def resized(self) -> bool:
        return self.work_size != (self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass(frozen=True)
class InpaintImagePlan:
    """What happens to one image of the batch."""

    strategy: str  # the strategy used (the requested one, or the memory guard's replacement)
    units: tuple[InpaintUnit, ...] = ()
    skipped: str | None = None  # reason, when the image is returned unchanged


@dataclass(frozen=True)
class InpaintPlan:
    """Plain inference of a batch, decided before anything runs."""

    strategy: str  # as requested
    size: tuple[int, int]
    images: tuple[InpaintImagePlan, ...]
    notes: tuple[Note, ...] = field(default=())

    @property
    def forwards(self) -> int:
        return sum(len(image.units) for image in self.images)

    @property
    def predicted_peak_bytes(self) -> int:
        return max((u.predicted_bytes for image in self.images for u in image.units), default=0)

    def summary(self) -> str:
        """``crop_around_mask: 3 boxes, 3 forwards, ~0.4 GiB``."""
        used = sorted({image.strategy for image in self.images if image.units})
        if not used:
            return "nothing to inpaint (empty mask)"
        units = [u for image in self.images for u in image.units]
        sizes = {u.work_size for u in units}
        what = (f"a global pass + {sum(u.tile is not None for u in units)} tiles" if TILED in used
                else f"{len(units)} boxes" if "crop_around_mask" in used
                else "x".join(map(str, sizes.pop()[::-1])) if len(sizes) == 1 else f"{len(units)} images")
        return f"{'/'.join(used)}: {what}, {self.forwards} forwards, ~{format_bytes(self.predicted_peak_bytes)}"

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """A JSON-ready description."""
        return {
            "summary": self.summary(),
            "strategy": self.strategy,
            "size": list(self.size),
            "forwards": self.forwards,
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "notes": [{"level": n.level, "text": n.text} for n in self.notes],
            "images": [{"strategy": image.strategy, "skipped": image.skipped,
                        "units": [{"box": list(u.box), "work_size": list(u.work_size),
                                   "predicted_bytes": u.predicted_bytes, "tile": u.tile is not None}
                                  for u in image.units]}
                       for image in self.images],
        }


def resized_size(height: int, width: int, limit: int) -> tuple[int, int]:
    """Size of the ``resize_to_limit`` copy: longer side ``limit`` (unchanged when already smaller)."""
    if max(height, width) <= limit:
        return height, width
    ratio = limit / max(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def _config_and_fused(model: nn.Module | LamaConfig) -> tuple[LamaConfig, bool]:
    if isinstance(model, LamaConfig):
        return model, True
    return model.config, hasattr(model, "body")  # the fused model keeps its layers in .body


def plan_inpaint(
    model: nn.Module | LamaConfig,
    mask: Tensor,
    *,
    strategy: str = DEFAULT_STRATEGY,
    threshold: float = 0.0,
    resize_limit: int = DEFAULT_RESIZE_LIMIT,
    crop_margin: int = DEFAULT_CROP_MARGIN,
    free_bytes: int | None = None,
    memory_fraction: float = 0.9,
    dtype: torch.dtype | None = None,
    tile_size: int | None = None,
) -> InpaintPlan:
    """Plan plain inference of a batch under ``strategy`` (see :mod:`ffc.strategies`).

    Args:
        model: the generator that will run (its config, dtype and whether it is fused set the
            memory estimate), or just a :class:`LamaConfig` (a fused float32 model assumed).
        mask: (B, 1, H, W); ``mask > threshold`` is a hole.
        free_bytes: memory free on the device; None = do not guard memory. When a strategy's
            peak exceeds ``memory_fraction`` of it, crops around the holes are used if they fit,
            else (``original``) a resized global pass plus full-resolution tiles that fit, else
            a copy resized until it fits (each with a warning note).
        dtype: the weights' dtype when ``model`` is a config (default float32).
        tile_size: tile side for ``original_tiled`` (None = the largest that fits); set, it
            tiles ``original`` whatever the memory (tests, forced small tiles).

    Raises:
        ValueError: for an unknown strategy or bad sizes. MemoryError: when not even a
            ``MIN_RESIZE_SIDE`` px copy fits in ``free_bytes``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if resize_limit < MIN_SIZE:
        raise ValueError(f"resize_limit: expected >= {MIN_SIZE} px, got {resize_limit}")
    if crop_margin < 0:
        raise ValueError(f"crop_margin: expected >= 0 px, got {crop_margin}")
    if not isinstance(mask, Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask: expected a (B, 1, H, W) tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    config, fused = _config_and_fused(model)
    if dtype is None:
        dtype = torch.float32 if isinstance(model, LamaConfig) else next(model.parameters()).dtype
    height, width = mask.shape[-2:]
    hole = binarize(mask, threshold)
    limit = None if free_bytes is None else free_bytes * memory_fraction
    notes: list[Note] = []

    def unit(box: Box, size: tuple[int, int]) -> InpaintUnit:
        return InpaintUnit(box, size, inference_bytes(config, *size, dtype, fused=fused))

    def whole(size: tuple[int, int]) -> tuple[InpaintUnit, ...]:
        extra = 0 if size == (height, width) else 48 * height * width  # the full-size copies around a resize
        u = unit((0, 0, height, width), size)
        return (InpaintUnit(u.box, u.work_size, u.predicted_bytes + extra),)

    def crops(hole_hw: Tensor) -> tuple[InpaintUnit, ...]:
        boxes = [snap_box(b, config.multiple, height, width) for b in hole_boxes(hole_hw, crop_margin)]
        cost = lambda h, w: _padded(h, config.multiple) * _padded(w, config.multiple) + FORWARD_OVERHEAD_PX  # noqa: E731
        return tuple(unit(b, (b[2] - b[0], b[3] - b[1])) for b in merge_boxes(boxes, cost, height, width))

    images = []
    for index in range(mask.shape[0]):
        if not bool(hole[index].any()):
            images.append(InpaintImagePlan(strategy, skipped="empty mask"))
            continue
        if strategy == "original":
            units = whole((height, width))
        elif strategy == "resize_to_limit":
            units = whole(resized_size(height, width, resize_limit))
        else:
            units = crops(hole[index, 0])
        used = strategy
        need = max(u.predicted_bytes for u in units)
        tiles = lambda: _tiles(config, hole[index, 0], limit, dtype, fused, tile_size)  # noqa: E731
        if strategy == "original" and tile_size is not None and (limit is None or need <= limit):
            used = TILED  # forced tiles: the global pass at half size (at most resize_limit)
            units = (whole(resized_size(height, width, max(MIN_SIZE, min(resize_limit, max(height, width) // 2))))[0],
                     *tiles())
            notes.append(Note("info", f"image {index}: original in {len(units) - 1} full-resolution tiles of at most "
                                      f"{tile_size} px over a global pass at {max(units[0].work_size)} px"))
        elif limit is not None and need > limit:
            used, units = _fit_memory(strategy, units, limit, height, width, whole, lambda: crops(hole[index, 0]),
                                      tiles)
            notes.append(Note("warning", (
                f"image {index}: {strategy} needs ~{format_bytes(need)} but ~{format_bytes(limit)} is usable; "
                + (f"inpainting {len(units)} crop{'s' if len(units) != 1 else ''} around the holes instead"
                   if used == "crop_around_mask" else
                   f"inpainting a copy resized to {max(units[0].work_size)} px for the global structure, then "
                   f"{len(units) - 1} full-resolution tile{'s' if len(units) != 2 else ''} of at most "
                   f"{max(max(u.work_size) for u in units[1:])} px for the detail" if used == TILED else
                   f"inpainting a copy resized to {max(units[0].work_size)} px instead (the fill is upscaled)"))))
        images.append(InpaintImagePlan(used, units))
    return InpaintPlan(strategy, (height, width), tuple(images), tuple(notes))


def _padded(n: np.ndarray, multiple: int) -> np.ndarray:
    return np.maximum(-(-np.asarray(n) // multiple) * multiple, MIN_SIZE)


def _fit_memory(strategy, units, limit, height, width, whole, crops, tiles) -> tuple[str, tuple[InpaintUnit, ...]]:
    """A replacement strategy whose largest forward fits in ``limit`` bytes."""
    if strategy != "crop_around_mask":
        cropped = crops()
        if max(u.predicted_bytes for u in cropped) <= limit:
            return "crop_around_mask", cropped
    side = max(units[0].work_size) if strategy != "crop_around_mask" else max(height, width)
    while side >= MIN_RESIZE_SIDE:
        side = int(side * 0.9)
        resized = whole(resized_size(height, width, side))
        if resized[0].predicted_bytes <= limit:
            if strategy == "original":
                tiled = tiles()
                if tiled:
                    return TILED, (resized[0], *tiled)
            return "resize_to_limit", resized
    raise MemoryError(
        f"LaMa cannot fit a forward into ~{format_bytes(limit)} of free memory, not even for a {MIN_RESIZE_SIDE} px copy"
    )


def _tiles(config: LamaConfig, hole: Tensor, limit: float | None, dtype: torch.dtype, fused: bool,
           tile_size: int | None) -> tuple[InpaintUnit, ...]:
    """Full-resolution tiles over the (H, W) hole whose forward fits ``limit`` (empty: none fits)."""
    height, width = hole.shape
    extra = TILED_FULL_SIZE_BYTES_PER_PIXEL * height * width
    if tile_size is not None:
        side = max(MIN_TILE_SIDE, tile_size // config.multiple * config.multiple)
    else:
        side = max(height, width) // config.multiple * config.multiple + config.multiple
        while inference_bytes(config, side, side, dtype, fused=fused) + extra > limit:
            side = int(side * 0.85) // config.multiple * config.multiple
            if side < MIN_TILE_SIDE:
                return ()
    grid, _ = tile_grid(hole.bool(), side, config.multiple)
    return tuple(InpaintUnit(t.window, t.size, inference_bytes(config, *t.size, dtype, fused=fused) + extra, tile=t)
                 for t in grid)
