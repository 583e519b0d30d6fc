"""One plan per refinement: regions, working sizes, scales, checkpointing, forwards, memory, time.

:func:`plan` is the only place that decides what a refinement does. :func:`refine.refine`
executes exactly the plan it is given (or makes one with the same call), and the ComfyUI node,
the command line and the progress bars read the same plan: its forward count is what runs, its
peak memory is what the node asks ComfyUI for, its notes are what the user is told.

Structure: a :class:`RefinePlan` has one :class:`ImagePlan` per image of the batch, each with
its regions (the whole image, or boxes around the holes), each region with its work units (the
multiscale pyramid over the box; with ``full_resolution`` above the budget, then one unit per
tile of the finer levels). Forwards and time are sums over the units, peak memory is their
maximum (units run one after another).

Decisions, in order (each that changes what the user gets becomes a :class:`Note`):

1. **Regions.** ``crop_to_mask`` (paper mode) or, in auto mode, when the boxes around the holes
   cover less than ``AUTO_CROP_COVERAGE`` of the image: one region per hole box (found once),
   snapped outwards onto the generator's grid at every pyramid level (``8 * 2 ** (n - 1)`` px)
   and merged where one box costs less than several (the time model is the cost).
2. **Working size and scales.** The region, shrunk to ``px_budget`` pixels if larger. Paper
   mode: the number of scales of the official rule for the whole image (``min_side``,
   ``max_scales``, ``n_scales``). Auto mode: per region, the coarsest level near LaMa's 256 px
   training size, ``1 + round(log2(short side / 256))`` levels.
3. **Memory** (``checkpointing="auto"``): the estimate of the finest scale must fit in
   ``memory_fraction`` of the free memory; if not, checkpointing the rear when the estimate says
   that is smaller, then a lower working size.
4. **Time** (auto mode, ``max_seconds``): fewer iterations (down to ``AUTO_MIN_ITERS``), then a
   lower working size, then one scale (plain LaMa), until the prediction fits.
5. **Full resolution** (``full_resolution``, a region above the budget): the pyramid's finest
   level is the region halved until it fits the budget (and memory); the finer levels are tiled
   (:mod:`ffc.tiles`) with the largest square tile within the budget whose estimate fits the free
   memory (or ``tile_size``), tiles without a hole pixel at their level skipped.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from .. import ffc
from .memory import MemoryEstimate, available_bytes, estimate_refine_bytes
from .pyramid import MASK_EPS, budget_size, number_of_scales
from .settings import AUTO_COARSEST_SIDE, MIN_COARSEST, RefineSettings
from .tiles import FULL_SIZE_BYTES_PER_PIXEL, level_masks
from .timing import Rate, TimeProfile, time_profile, unit_seconds

__all__ = [
    "WorkUnit",
    "RegionPlan",
    "ImagePlan",
    "RefinePlan",
    "Note",
    "plan",
    "plan_scales",
    "auto_scales",
    "check_refinable",
    "check_weights",
    "AUTO_CROP_COVERAGE",
    "AUTO_MIN_ITERS",
    "AUTO_MAX_SCALES",
]

log = logging.getLogger(__name__)

Box = ffc.masks.Box
Note = ffc.plan.Note
format_bytes = ffc.plan.format_bytes
Tile = ffc.tiles.Tile
MIN_TILE_SIDE = ffc.tiles.MIN_TILE_SIDE
tile_grid, tile_overlap = ffc.tiles.tile_grid, ffc.tiles.tile_overlap

# Full-size buffers every refined image holds while its regions run, per pixel of the image: the
# output (float32 RGB, 12) and the hole (float, 4).
IMAGE_BYTES_PER_PIXEL = 16
# ... and of a region refined at a reduced size, per pixel of the region, those two included (when
# the region is the image): the fill upscaled (12) and its hole (1) on top. Measured with the
# profiler at 512-2048 px: 27.7-29.0 B/px at the margin (41 before the paste went in place);
# tests/refine/test_plan.py checks the bound. (Tiled regions: FULL_SIZE_BYTES_PER_PIXEL.)
RESIZED_FULL_SIZE_BYTES_PER_PIXEL = 30

# Auto mode: crop when the hole boxes cover less than this fraction of the image.
AUTO_CROP_COVERAGE = 0.5
# Auto mode: the time budget lowers n_iters down to this before it lowers the working size.
AUTO_MIN_ITERS = 5
AUTO_MAX_SCALES = 6
# The working size is never lowered below this many pixels to fit memory.
MIN_WORK_AREA = 256 * 256
_MEMORY_STEP = 0.7  # each memory retry plans this fraction of the pixels
_TIME_STEP = 0.8  # each time-budget retry plans this fraction of the pixels
_MEASURE = object()  # free_bytes default: ask the device


# --- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkUnit:
    """One multiscale pyramid run over ``box`` of the image, with its finest level at ``work_size``;
    or (``tile`` set) one tile of a full-resolution level of that box, refined against the coarser
    level's result (see :mod:`refine.tiles`)."""

    box: Box  # (top, left, bottom, right) in the image
    work_size: tuple[int, int]  # finest level (H, W); smaller than the box when over the budget
    scales: tuple[tuple[int, int], ...]  # every level's (H, W), coarsest first
    n_iters: int
    checkpoint_rear: bool
    estimate: MemoryEstimate  # of the finest scale, the peak
    predicted_seconds: float  # NaN when the device could not be timed
    # full_resolution: the pyramid runs at the box halved ``level`` times and tile units refine
    # the finer levels (0 = the classic unit: resized to the budget, the fill upscaled).
    level: int = 0
    tile: Tile | None = None

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    @property
    def forwards(self) -> int:
        """1 at the coarsest scale, ``n_iters`` at every finer one; a tile: ``n_iters``."""
        if self.tile is not None:
            return self.n_iters
        return 1 + (self.n_scales - 1) * self.n_iters

    @property
    def predicted_peak_bytes(self) -> int:
        return self.estimate.total

    @property
    def resized(self) -> bool:
        return self.work_size != (self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass(frozen=True)
class RegionPlan:
    """The whole image or one box around holes, with the work units that refine it."""

    box: Box
    units: tuple[WorkUnit, ...]

    @property
    def forwards(self) -> int:
        return sum(u.forwards for u in self.units)

    @property
    def tiles(self) -> int:
        """How many full-resolution tiles (0 = refined as one pyramid)."""
        return sum(u.tile is not None for u in self.units)

    @property
    def work_size(self) -> tuple[int, int]:
        """The finest working size: the box itself when tiled to full resolution."""
        if self.tiles:
            return self.box[2] - self.box[0], self.box[3] - self.box[1]
        return self.units[0].work_size

    @property
    def predicted_seconds(self) -> float:
        return sum(u.predicted_seconds for u in self.units)

    @property
    def predicted_peak_bytes(self) -> int:
        return max((u.predicted_peak_bytes for u in self.units), default=0)


@dataclass(frozen=True)
class ImagePlan:
    """One image of the batch: its regions, or why it is returned unchanged."""

    regions: tuple[RegionPlan, ...] = ()
    skipped: str | None = None
    hole_pixels: int = 0  # identifies the mask the plan was made for


@dataclass(frozen=True)
class RefinePlan:
    """Everything a refinement will do, decided before it runs. ``str(plan)`` is a short summary."""

    settings: RefineSettings
    size: tuple[int, int]
    images: tuple[ImagePlan, ...]
    notes: tuple[Note, ...] = field(default=())
    device: str = "cpu"
    time_source: str = ""

    @property
    def regions(self) -> tuple[RegionPlan, ...]:
        return tuple(r for image in self.images for r in image.regions)

    @property
    def units(self) -> tuple[WorkUnit, ...]:
        return tuple(u for r in self.regions for u in r.units)

    @property
    def forwards(self) -> int:
        return sum(r.forwards for r in self.regions)

    @property
    def predicted_seconds(self) -> float:
        return float(sum(r.predicted_seconds for r in self.regions))

    @property
    def predicted_peak_bytes(self) -> int:
        return max((r.predicted_peak_bytes for r in self.regions), default=0)

    def summary(self) -> str:
        """``2 scales 384->768, 31 forwards, ~3 min, ~2.1 GiB``."""
        units = tuple(u for u in self.units if u.tile is None)
        if not units:
            return "nothing to refine (empty mask)"
        counts = sorted({u.n_scales for u in units})
        if counts == [1]:
            sizes = {u.work_size for u in units}
            what = f"1 scale at {_size(sizes.pop())} (no refinement: plain LaMa)" if len(sizes) == 1 else \
                "1 scale (no refinement: plain LaMa)"
        elif len(units) == 1 or len({u.scales for u in units}) == 1:
            scales = units[0].scales
            what = f"{len(scales)} scales {max(scales[0])}->{max(scales[-1])}"
        else:
            what = f"{counts[0]}-{counts[-1]} scales"
        tiled = [r for r in self.regions if r.tiles]
        if tiled:
            finest = max(tiled, key=lambda r: r.work_size[0] * r.work_size[1]).work_size
            count = sum(r.tiles for r in tiled)
            what += f" + full resolution to {max(finest)} in {count} tile{'s' if count != 1 else ''}"
        regions = f"{len(self.regions)} regions, " if len(self.regions) > 1 else ""
        return (f"{regions}{what}, {self.forwards} forwards, {_duration(self.predicted_seconds)}, "
                f"~{format_bytes(self.predicted_peak_bytes)}")

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """A JSON-ready description (what ``lama-inpaint --plan --json`` prints)."""
        return {
            "summary": self.summary(),
            "mode": self.settings.mode,
            "size": list(self.size),
            "device": self.device,
            "forwards": self.forwards,
            "predicted_seconds": None if math.isnan(self.predicted_seconds) else round(self.predicted_seconds, 2),
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "time_source": self.time_source,
            "notes": [{"level": n.level, "text": n.text} for n in self.notes],
            "images": [{
                "skipped": image.skipped,
                "regions": [{
                    "box": list(region.box),
                    "work_size": list(region.work_size),
                    "tiles": region.tiles,
                    "units": [{
                        "work_size": list(u.work_size), "scales": [list(s) for s in u.scales], "n_iters": u.n_iters,
                        "checkpoint_rear": u.checkpoint_rear, "forwards": u.forwards,
                        "predicted_seconds": None if math.isnan(u.predicted_seconds) else round(u.predicted_seconds, 2),
                        "predicted_peak_bytes": u.predicted_peak_bytes,
                        **({"level": u.tile.level, "tile": list(u.tile.window)} if u.tile is not None else
                           {"level": u.level}),
                    } for u in region.units],
                } for region in image.regions],
            } for image in self.images],
        }


def _size(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "time unknown"
    if seconds < 90:
        return f"~{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


# --- scale rules ----------------------------------------------------------------------------------


def _cap_scales(n: int, min_side: int) -> int:
    # Keep the coarsest level at least MIN_COARSEST px (never fewer than one level).
    while n > 1 and min_side // 2 ** (n - 1) < MIN_COARSEST:
        n -= 1
    return n


def plan_scales(height: int, width: int, settings: RefineSettings) -> int:
    """Paper mode: pyramid levels for an image of this size (the official rule, after the budget)."""
    h, w = budget_size(height, width, settings.px_budget)
    n = settings.n_scales if settings.n_scales is not None else number_of_scales(h, w, settings.min_side, settings.max_scales)
    return _cap_scales(n, min(h, w))


def auto_scales(height: int, width: int) -> int:
    """Auto mode: levels that put the coarsest short side near LaMa's 256 px training size.

    ``1 + round(log2(min(h, w) / 256))``: 1 scale below ~362 px (LaMa already works at its own
    scale there), 2 from ~362 px (600 px -> 300, 600), 3 from ~724 px (1024 -> 256, 512, 1024),
    and so on up to ``AUTO_MAX_SCALES``.
    """
    short = min(height, width)
    n = 1 + int(round(max(0.0, math.log2(short / AUTO_COARSEST_SIDE))))
    return _cap_scales(min(n, AUTO_MAX_SCALES), short)


def pyramid_sizes(height: int, width: int, n_scales: int) -> tuple[tuple[int, int], ...]:
    """Level sizes as :func:`refine.pyramid.build_pyramid` makes them (halved, floor), coarsest first."""
    return tuple((height >> k, width >> k) for k in range(n_scales - 1, -1, -1))


def check_refinable(model: nn.Module) -> None:
    """Refinement optimises the features between the generator's front and rear: it needs that split."""
    if not getattr(model, "refinable", False):
        raise TypeError(
            f"model: {type(model).__name__} cannot be refined: refinement needs a LaMa generator whose network splits "
            "into front and rear (ffc.LamaGenerator or ffc.FastLamaGenerator; see ModelInfo.refinable)"
        )


def check_weights(dtype: torch.dtype, precision: str) -> None:
    """The weight dtypes the refinement accepts (it optimises float32 features)."""
    if dtype == torch.float16:
        raise ValueError("model: float16 weights are not supported (LaMa's FFTs fail in fp16); "
                         "pass model.float() (or model.bfloat16() with precision='bf16')")
    if dtype == torch.bfloat16 and precision != "bf16":
        raise ValueError("model: bfloat16 weights need precision='bf16' (autocast); "
                         "for a float32 refinement pass model.float()")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"model: expected float32 or bfloat16 weights, got {dtype}")


# --- the planner ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _fused_stand_in(config: ffc.LamaConfig, channels_last: bool) -> nn.Module:
    """A weightless (meta) fused model: names the architecture for the memory estimator."""
    with torch.inference_mode(False), torch.device("meta"):
        generator = ffc.LamaGenerator(config).eval()
    return ffc.fuse_for_inference(generator, channels_last=channels_last)


@dataclass
class _Fit:
    """A unit and why its size is what it is (for the notes)."""

    unit: WorkUnit
    memory_lowered_from: tuple[int, int] | None = None
    plain_estimate: MemoryEstimate | None = None
    tiles: tuple[WorkUnit, ...] = ()  # full_resolution: the tiles refining the finer levels
    tile_side: int = 0

    @property
    def units(self) -> tuple[WorkUnit, ...]:
        return (self.unit, *self.tiles)


class _Planner:
    def __init__(self, model: nn.Module, settings: RefineSettings, device: torch.device, dtype: torch.dtype,
                 free_bytes: int | None, timing: TimeProfile | None) -> None:
        self.model, self.settings, self.device, self.dtype = model, settings, device, dtype
        self.config = model.config
        self.auto = settings.mode == "auto"
        self.limit = None if free_bytes is None else free_bytes * settings.memory_fraction
        self.free_bytes = free_bytes
        fused = settings.fused or isinstance(model, ffc.FastLamaGenerator)
        if fused and not isinstance(model, ffc.FastLamaGenerator):
            self.estimator_model = _fused_stand_in(model.config, settings.speed.channels_last_for(device))
        else:
            self.estimator_model = model
        self.fused = fused
        self.timing = timing
        self._profiles: dict[bool, TimeProfile | None] = {}
        self.holes: Tensor | None = None  # (B, 1, H, W) bool, for the tiles
        self._level_masks: dict[tuple, list[Tensor]] = {}

    # -- cost models ---------------------------------------------------------------------------

    def profile(self, checkpointed: bool) -> TimeProfile | None:
        if self.timing is not None:
            return self.timing
        if checkpointed not in self._profiles:
            s = self.settings
            self._profiles[checkpointed] = time_profile(
                self.model, device=self.device, dtype=self.dtype, fused=self.fused, freeze_weights=s.freeze_weights,
                autocast_dtype=s.autocast_dtype, checkpointed=checkpointed)
        return self._profiles[checkpointed]

    def estimate(self, padded: tuple[int, int], checkpointed: bool) -> MemoryEstimate:
        return estimate_refine_bytes(self.estimator_model, *padded, checkpoint_rear=checkpointed,
                                     autocast_dtype=self.settings.autocast_dtype, dtype=self.dtype, device=self.device)

    def padded(self, size: tuple[int, int]) -> tuple[int, int]:
        return ffc.padded_size(*size, self.config.multiple)

    def scales_for(self, work: tuple[int, int], image_scales: int) -> int:
        return auto_scales(*work) if self.auto else _cap_scales(image_scales, min(work))

    def box_cost(self, image_scales: int, n_iters: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """Vectorised predicted seconds of refining boxes of these heights and widths (for merging)."""
        profile = self.profile(False)
        if profile is None:  # no timing on this device: pixels, plus a fixed cost per forward
            overhead = float(ffc.plan.FORWARD_OVERHEAD_PX)
            profile = TimeProfile(Rate(overhead, 1.0), Rate(2 * overhead, 2.0))
        infer, step, budget = profile.infer, profile.step, float(self.settings.px_budget)

        def cost(heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
            h, w = np.asarray(heights, dtype=np.float64), np.asarray(widths, dtype=np.float64)
            ratio = np.sqrt(np.minimum(1.0, budget / np.maximum(h * w, 1.0)))
            short, pixels = np.minimum(h, w) * ratio, h * w * ratio**2
            if self.auto:
                n = np.clip(1 + np.round(np.log2(np.maximum(short, 1.0) / AUTO_COARSEST_SIDE)), 1, AUTO_MAX_SCALES)
            else:
                n = np.minimum(image_scales, 1 + np.floor(np.log2(np.maximum(short, MIN_COARSEST) / MIN_COARSEST)))
            every = (1 - 4.0**-n) / 0.75  # sum of 4^-k over the n levels
            finer = (1 - 4.0 ** -(n - 1)) / 0.75  # ... over the n - 1 optimised levels
            return (n * infer.fixed + infer.per_pixel * pixels * every
                    + (n_iters - 1) * ((n - 1) * step.fixed + step.per_pixel * pixels * finer))

        return cost

    # -- units ---------------------------------------------------------------------------------

    def pyramid_work(self, height: int, width: int, budget: float, single_scale: bool = False) -> tuple[tuple[int, int], int]:
        """(working size, halvings): the budget size, or with ``full_resolution`` the box halved
        until it fits the budget (the finer levels are then tiled)."""
        if not self.settings.full_resolution or single_scale or height * width <= budget:
            return budget_size(height, width, int(budget)), 0
        level = 0
        while (height >> level) * (width >> level) > budget:
            level += 1
        return (height >> level, width >> level), level

    def unit(self, box: Box, image_scales: int, n_iters: int, area_cap: float | None = None,
             single_scale: bool = False, image_index: int = 0) -> _Fit:
        """The unit for ``box``: working size within the budget (and ``area_cap``), fitted to memory;
        with ``full_resolution`` also the tiles that refine the finer levels up to the box's size."""
        s = self.settings
        height, width = box[2] - box[0], box[3] - box[1]
        budget = s.px_budget if area_cap is None else max(MIN_WORK_AREA, min(s.px_budget, int(area_cap)))
        first: tuple[int, int] | None = None
        plain_estimate = None
        while True:
            work, level = self.pyramid_work(height, width, budget, single_scale)
            first = first or work
            n = 1 if single_scale else self.scales_for(work, image_scales)
            checkpointed, estimate, plain, fits = self.checkpointing(self.padded(work))
            plain_estimate = plain_estimate or plain
            if fits:
                break
            smaller = max(int(budget * _MEMORY_STEP), MIN_WORK_AREA)
            if smaller >= work[0] * work[1]:
                smaller = int(work[0] * work[1] * _MEMORY_STEP)
            if smaller < MIN_WORK_AREA:
                raise MemoryError(
                    f"refinement needs ~{format_bytes(estimate.total)} for {_size(work)} and "
                    f"~{format_bytes(self.free_bytes or 0)} is free; use crop_to_mask or a smaller px_budget")
            budget = smaller
        scales = pyramid_sizes(*work, n)
        seconds = unit_seconds(self.profile(checkpointed), [self.padded(hw) for hw in scales], n_iters, checkpointed)
        # Full-size buffers: the image's output and hole, and the region's own on top.
        image_pixels = self.image_pixels()
        if not level:
            resized = work != (height, width)  # the fill comes back upscaled
            per_region = RESIZED_FULL_SIZE_BYTES_PER_PIXEL - IMAGE_BYTES_PER_PIXEL if resized else 0
            estimate = _plus(estimate, IMAGE_BYTES_PER_PIXEL * image_pixels + per_region * height * width)
            unit = WorkUnit(box, work, scales, n_iters, checkpointed, estimate, seconds)
            return _Fit(unit, first if work != first else None, plain_estimate)
        extra = (IMAGE_BYTES_PER_PIXEL * image_pixels
                 + (FULL_SIZE_BYTES_PER_PIXEL - IMAGE_BYTES_PER_PIXEL) * height * width)
        unit = WorkUnit(box, work, scales, n_iters, checkpointed, _plus(estimate, extra), seconds, level=level)
        side, tiles = self.tiles(box, level, n_iters, budget, image_index, extra)
        return _Fit(unit, first if work != first else None, plain_estimate, tiles, side)

    def image_pixels(self) -> int:
        """Pixels of one image of the batch (0 before the holes are known)."""
        return 0 if self.holes is None else self.holes.shape[-2] * self.holes.shape[-1]

    def tile_side(self, budget: float) -> tuple[int, bool, MemoryEstimate]:
        """Tile side (``tile_size``, else the largest square within the budget that fits memory)."""
        s, multiple = self.settings, self.config.multiple
        if s.tile_size is not None:
            side = max(MIN_TILE_SIDE, s.tile_size // multiple * multiple)
            checkpointed, estimate, _, _ = self.checkpointing(self.padded((side, side)))
            return side, checkpointed, estimate
        side = math.isqrt(int(budget)) // multiple * multiple
        while True:
            if side < MIN_TILE_SIDE:
                raise MemoryError(
                    f"full_resolution: not even a {MIN_TILE_SIDE}x{MIN_TILE_SIDE} tile fits in "
                    f"~{format_bytes(self.limit or 0)} of free memory (or px_budget {s.px_budget} is too small)")
            checkpointed, estimate, _, fits = self.checkpointing(self.padded((side, side)))
            if fits:
                return side, checkpointed, estimate
            side = int(side * 0.85) // multiple * multiple

    def tiles(self, box: Box, level: int, n_iters: int, budget: float, image_index: int,
              extra: int) -> tuple[int, tuple[WorkUnit, ...]]:
        """The tiles of levels ``level - 1`` .. 0 of ``box`` that hold hole pixels, coarsest first."""
        assert self.holes is not None
        side, checkpointed, _ = self.tile_side(budget)
        key = (image_index, box, level)
        if key not in self._level_masks:
            top, left, bottom, right = box
            crop = self.holes[image_index : image_index + 1, :, top:bottom, left:right].float()
            self._level_masks[key] = level_masks(crop, level)
        masks = self._level_masks[key]
        profile = self.profile(checkpointed)
        units = []
        for j in range(level - 1, -1, -1):
            grid, _ = tile_grid(masks[j][0, 0], side, self.config.multiple, level=j)
            for tile in grid:
                padded = self.padded(tile.size)
                estimate = _plus(self.estimate(padded, checkpointed), extra)
                seconds = (float("nan") if profile is None
                           else profile.scale_seconds(padded[0] * padded[1], n_iters, checkpointed))
                units.append(WorkUnit(box, tile.size, (tile.size,), n_iters, checkpointed, estimate, seconds, tile=tile))
        return side, tuple(units)

    def checkpointing(self, padded: tuple[int, int]) -> tuple[bool, MemoryEstimate, MemoryEstimate, bool]:
        """(checkpoint?, estimate, plain estimate, fits): checkpoint only when that is smaller."""
        plain = self.estimate(padded, False)
        mode = self.settings.checkpointing
        if mode != "auto" or self.limit is None:
            chosen = self.estimate(padded, True) if mode == "on" else plain
            return mode == "on", chosen, plain, True
        if plain.total <= self.limit:
            return False, plain, plain, True
        saved = self.estimate(padded, True)
        if saved.total < plain.total and saved.total <= self.limit:
            return True, saved, plain, True
        return False, min(plain, saved, key=lambda e: e.total), plain, False

    # -- regions -------------------------------------------------------------------------------

    def snapped(self, box: Box, image_scales: int, height: int, width: int) -> Box:
        """``box`` grown onto the grid of its deepest pyramid level (auto: re-checked after growing)."""
        multiple = self.config.multiple
        for _ in range(4):
            work, level = self.pyramid_work(box[2] - box[0], box[3] - box[1], self.settings.px_budget)
            grid = multiple * 2 ** (self.scales_for(work, image_scales) - 1 + level)
            grown = ffc.plan.snap_box(box, grid, height, width)
            if grown == box:
                break
            box = grown
        return box

    def crop_boxes(self, hole: Tensor, image_scales: int, n_iters: int) -> tuple[list[Box], int]:
        """Snapped, merged boxes around the holes of an (H, W) hole, and how many holes boxes there were."""
        height, width = hole.shape
        s = self.settings
        found = ffc.masks.hole_boxes(hole, s.crop_margin, separate=s.separate_holes)
        boxes = ffc.plan.merge_boxes([self.snapped(b, image_scales, height, width) for b in found],
                                     self.box_cost(image_scales, n_iters), height, width)
        # A merged box may need a coarser grid (more scales): snap again; snapping only grows
        # boxes, so merge what then overlaps (an area cost merges nothing else), until stable.
        for _ in range(4):
            again = ffc.plan.merge_boxes([self.snapped(b, image_scales, height, width) for b in boxes],
                                         lambda h, w: h * w, height, width)
            if again == boxes:
                break
            boxes = again
        return boxes, len(found)


def plan(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    settings: RefineSettings = RefineSettings(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    free_bytes: int | None | object = _MEASURE,
    timing: TimeProfile | None = None,
) -> RefinePlan:
    """Decide everything a refinement of this batch will do; see the module docstring.

    Args:
        model: the generator :func:`refine.refine` will get (its config names the architecture;
            it is not modified and need not be on ``device``).
        image: (B, 3, H, W) float; only its shape is used.
        mask: (B, 1, H, W); pixels >= 1e-8 are holes.
        settings: see :class:`RefineSettings`.
        device: where the refinement will run (default: the model's device); it is timed there.
        dtype: the weights' dtype there (default: the model's).
        free_bytes: memory the refinement may use on ``device``; default: what is free now;
            None: do not fit memory.
        timing: a time profile to use instead of measuring one (tests, benchmarks).

    Returns:
        The :class:`RefinePlan`; its notes are also logged.

    Raises:
        ValueError: bad settings, inputs or weight dtype. MemoryError: not even a 256 x 256
            working size fits in ``free_bytes``.
    """
    settings.validate()
    check_refinable(model)
    ffc.checks.check_image_bchw("image", image)
    ffc.checks.check_mask_b1hw("mask", mask, image)
    ffc.checks.check_finite("mask", mask)
    parameter = next(model.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = dtype or parameter.dtype
    check_weights(dtype, settings.precision)
    if settings.precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision: bf16 autocast is supported on CUDA and CPU, not on {device.type}")
    free = available_bytes(device) if free_bytes is _MEASURE else free_bytes
    planner = _Planner(model, settings, device, dtype, free, timing)
    height, width = image.shape[-2:]
    holes = mask.detach() >= MASK_EPS
    planner.holes = holes
    notes: list[Note] = []
    image_scales = plan_scales(height, width, settings)
    if settings.mode == "paper" and settings.max_seconds is not None:
        notes.append(Note("info", "max_seconds is used by mode auto only; paper runs the settings as given"))
    ignored = settings.speed.cuda_only_set()
    if ignored and device.type != "cuda":
        notes.append(Note("info", f"speed: {', '.join(ignored)} only act on CUDA; ignored on {device.type}"))

    layouts: list[list[Box] | None] = []  # per image: region boxes, None = empty mask
    for index in range(image.shape[0]):
        hole = holes[index, 0]
        if not bool(hole.any()):
            layouts.append(None)
            notes.append(Note("warning", f"image {index}: the mask is empty; returned unchanged"))
            continue
        layouts.append(_regions(planner, hole, image_scales, index, notes))

    n_iters, area_scale, single = settings.n_iters, 1.0, False
    fits = _fit_all(planner, layouts, image_scales, n_iters, area_scale, single)
    if planner.auto and settings.max_seconds is not None:
        fits, n_iters, area_scale, single = _fit_time(planner, layouts, image_scales, fits, notes)
    _memory_notes(planner, fits, notes)
    _scale_notes(planner, fits, notes, height, width)
    _tile_notes(planner, fits, notes)

    images, position = [], 0
    for index, layout in enumerate(layouts):
        if layout is None:
            images.append(ImagePlan(skipped="empty mask"))
            continue
        regions = tuple(RegionPlan(fit.unit.box, fit.units) for fit in fits[position : position + len(layout)])
        position += len(layout)
        images.append(ImagePlan(regions, hole_pixels=int(holes[index].sum())))
    profile = planner.profile(False) if any(layout for layout in layouts) else None
    result = RefinePlan(settings, (height, width), tuple(images), tuple(notes), str(device),
                        profile.source if profile is not None else "")
    for note in notes:
        log.log(logging.WARNING if note.level == "warning" else logging.INFO, "LaMa refine: %s", note.text)
    return result


def _regions(planner: _Planner, hole: Tensor, image_scales: int, index: int, notes: list[Note]) -> list[Box]:
    s = planner.settings
    height, width = hole.shape
    whole = [(0, 0, height, width)]
    if not (s.crop_to_mask or planner.auto):
        return whole
    boxes, found = planner.crop_boxes(hole, image_scales, s.n_iters)
    coverage = sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (height * width)
    if planner.auto and coverage >= AUTO_CROP_COVERAGE:
        notes.append(Note("info", f"image {index}: auto refines the whole image (boxes around the holes would "
                                  f"cover {coverage:.0%} of it)"))
        return whole
    if planner.auto:
        notes.append(Note("info", f"image {index}: auto crops to the holes ({len(boxes)} box"
                                  f"{'es' if len(boxes) != 1 else ''} covering {coverage:.0%} of the image)"))
    if found > len(boxes):
        notes.append(Note("info", f"image {index}: merged {found} hole boxes into {len(boxes)} "
                                  f"region{'s' if len(boxes) != 1 else ''} (cheaper to run)"))
    return boxes


def _fit_all(planner, layouts, image_scales, n_iters, area_scale, single) -> list[_Fit]:
    budget = planner.settings.px_budget
    return [planner.unit(box, image_scales, n_iters, single_scale=single, image_index=index,
                         area_cap=None if area_scale >= 1 else area_scale * min(_area(box), budget))
            for index, layout in enumerate(layouts) if layout for box in layout]


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _seconds(fits: list[_Fit]) -> float:
    return sum(u.predicted_seconds for f in fits for u in f.units)


def _plus(estimate: MemoryEstimate, extra: int) -> MemoryEstimate:
    """``estimate`` plus ``extra`` tensor bytes that do not scale with the unit (full-size buffers)."""
    return replace(estimate, total=estimate.total + extra, fixed=estimate.fixed + extra)


def _fit_time(planner, layouts, image_scales, fits, notes) -> tuple[list[_Fit], int, float, bool]:
    """Auto mode: fewer iterations, then a smaller working size, then one scale, to meet max_seconds."""
    s = planner.settings
    budget = s.max_seconds
    predicted = _seconds(fits)
    if math.isnan(predicted):
        notes.append(Note("warning", f"max_seconds {budget:g} ignored: this device could not be timed"))
        return fits, s.n_iters, 1.0, False
    if predicted <= budget:
        return fits, s.n_iters, 1.0, False
    # Time is affine in the iterations: try them from the most down.
    for n_iters in range(s.n_iters - 1, min(AUTO_MIN_ITERS, s.n_iters) - 1, -1):
        trial = _fit_all(planner, layouts, image_scales, n_iters, 1.0, False)
        if _seconds(trial) <= budget:
            notes.append(Note("warning", f"max_seconds {budget:g}: n_iters lowered from {s.n_iters} to {n_iters} "
                                         f"(predicted ~{_seconds(trial):.0f} s instead of ~{predicted:.0f} s)"))
            return trial, n_iters, 1.0, False
    n_iters = min(AUTO_MIN_ITERS, s.n_iters)
    area_scale, smallest = 1.0, _fit_all(planner, layouts, image_scales, n_iters, 1.0, False)
    while True:
        area_scale *= _TIME_STEP
        trial = _fit_all(planner, layouts, image_scales, n_iters, area_scale, False)
        if all(f.unit.n_scales == 1 for f in trial):
            break  # nothing is refined any more at this size
        smallest = trial
        if _seconds(trial) <= budget:
            sizes = ", ".join(_size(f.unit.work_size) for f in trial[:3])
            notes.append(Note("warning", f"max_seconds {budget:g}: n_iters lowered from {s.n_iters} to {n_iters} and "
                                         f"the working size to {sizes} (predicted ~{_seconds(trial):.0f} s instead of "
                                         f"~{predicted:.0f} s)"))
            return trial, n_iters, area_scale, False
    single = _fit_all(planner, layouts, image_scales, n_iters, 1.0, True)
    over = "" if _seconds(single) <= budget else f"; even that takes ~{_seconds(single):.0f} s"
    notes.append(Note("warning", f"max_seconds {budget:g} is too short for any refinement (the smallest takes "
                                 f"~{_seconds(smallest):.0f} s): running 1 scale, i.e. plain LaMa{over}"))
    return single, n_iters, 1.0, True


def _memory_notes(planner: _Planner, fits: list[_Fit], notes: list[Note]) -> None:
    limit = planner.limit
    for number, fit in enumerate(fits):
        unit = fit.unit
        where = f"region {number} " if len(fits) > 1 else ""
        if unit.checkpoint_rear and planner.settings.checkpointing == "auto" and fit.plain_estimate is not None:
            notes.append(Note("info", f"{where}{_size(unit.work_size)} needs ~{format_bytes(fit.plain_estimate.total)}, "
                                      f"~{format_bytes(limit or 0)} usable: checkpointing the rear "
                                      f"(~{format_bytes(unit.predicted_peak_bytes)}, same numbers, slower)"))
        if fit.memory_lowered_from is not None:
            after = "the finer levels are tiled" if fit.tiles else "the fill is upscaled"
            notes.append(Note("warning", f"{where}{_size(fit.memory_lowered_from)} does not fit in "
                                         f"~{format_bytes(limit or 0)} even with checkpointing; lowering the pixel "
                                         f"budget to {_size(unit.work_size)} ({after})"))
        if limit is not None and planner.settings.checkpointing != "auto" and unit.predicted_peak_bytes > limit:
            notes.append(Note("warning", f"{where}{_size(unit.work_size)} needs ~{format_bytes(unit.predicted_peak_bytes)}"
                                         f" but ~{format_bytes(limit)} is usable; it may run out of memory "
                                         f"(checkpointing '{planner.settings.checkpointing}' does not adapt)"))


def _scale_notes(planner: _Planner, fits: list[_Fit], notes: list[Note], height: int, width: int) -> None:
    if not fits:
        return
    s = planner.settings
    if all(f.unit.n_scales == 1 and not f.tiles for f in fits):
        if planner.auto:
            notes.append(Note("warning", "1 scale: the holes' regions are already near LaMa's 256 px training size, "
                                         "refinement would change nothing; this is plain LaMa"))
        else:
            notes.append(Note("warning", f"1 scale for {_size((height, width))} with min_side {s.min_side}: no "
                                         "refinement (plain LaMa); lower min_side or use mode auto"))
    elif planner.auto:
        shown = {f.unit.scales for f in fits}
        text = "; ".join(f"{len(sc)} scales {' -> '.join(str(max(hw)) for hw in sc)}" for sc in sorted(shown)[:3])
        notes.append(Note("info", f"auto: {text} px (coarsest near LaMa's 256 px training size)"))


def _tile_notes(planner: _Planner, fits: list[_Fit], notes: list[Note]) -> None:
    for number, fit in enumerate(fits):
        if not fit.tiles:
            continue
        where = f"region {number}: " if len(fits) > 1 else ""
        box = fit.unit.box
        full = (box[2] - box[0], box[3] - box[1])
        overlap = tile_overlap(fit.tile_side, planner.config.multiple)
        notes.append(Note("info", (
            f"{where}full resolution: the pyramid runs up to {_size(fit.unit.work_size)}, then {fit.unit.level} finer "
            f"level{'s' if fit.unit.level != 1 else ''} up to {_size(full)} in {len(fit.tiles)} tiles of at most "
            f"{fit.tile_side} px (overlap {overlap} px; tiles without a hole are skipped)")))
