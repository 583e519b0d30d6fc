"""Tiles for full-resolution work in bounded memory: grids over the holes, blend weights, seams.

Shared by the tiled refinement (``refine/tiles.py``) and tiled plain inference
(:mod:`ffc.strategies`, ``original`` above a memory limit):

* tiles lie on a grid over the holes' bounding box (grown by the overlap, as context for the
  tiles at its edge), start on the generator's 8 px stride grid and overlap their neighbours by
  exactly ``overlap`` px; tiles without a hole pixel are skipped, so the work follows the holes;
* inside the overlaps the tiles are cross-faded with a raised cosine over the overlap's central
  quarter; the weights of a grid sum to one at every pixel (a separable partition of unity), so
  hole pixels are a weighted sum of the tiles that cover them;
* :func:`seam_statistic` measures what the blend leaves: the mean gradient magnitude in a band
  along the seams (the centre lines of the overlaps) against the mean elsewhere in the hole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Tile",
    "SeamStats",
    "MIN_TILE_SIDE",
    "SEAM_BAND",
    "BLEND_START",
    "tile_overlap",
    "tile_spans",
    "tile_grid",
    "tile_weight",
    "add_tile",
    "seam_statistic",
]

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive
# The smallest tile side: an overlap of 2 x 8 px on both sides still leaves a core.
MIN_TILE_SIDE = 32
# Where the cross-fade starts inside an overlap (fraction of it): see _rise.
BLEND_START = 0.375
# Half-width in px of the band along each seam that the seam statistic looks at.
SEAM_BAND = 4


@dataclass(frozen=True)
class Tile:
    """One tile of one full-resolution level of a region."""

    level: int  # halvings below the region's own size (0 = full resolution)
    window: Box  # in that level's pixels, relative to the region's box
    ramps: tuple[int, int, int, int]  # px blended with the neighbour at top, left, bottom, right (0 = none)

    @property
    def size(self) -> tuple[int, int]:
        return self.window[2] - self.window[0], self.window[3] - self.window[1]


def tile_overlap(side: int, multiple: int = 8) -> int:
    """Overlap between neighbouring tiles of ``side`` px: an eighth of the side, at least 2 strides."""
    return max(2 * multiple, -(-side // (8 * multiple)) * multiple)


def tile_spans(start: int, end: int, length: int, side: int, overlap: int, multiple: int = 8) -> list[tuple[int, int]]:
    """Spans along one axis that cover ``[start, end)`` of ``[0, length)``: each at most ``side``
    px, starting on multiples of ``multiple``, neighbours overlapping by exactly ``overlap`` px."""
    start = (start // multiple) * multiple
    end = min(length, -(-end // multiple) * multiple)
    extent = end - start
    if extent <= side:
        return [(start, end)]
    count = math.ceil((extent - overlap) / (side - overlap))
    while True:
        stride = -(-math.ceil((extent - overlap) / count) // multiple) * multiple
        if stride + overlap <= side:
            break
        count += 1
    count = math.ceil((extent - overlap) / stride)  # rounding the stride up may make one span redundant
    return [(start + i * stride, min(end, start + i * stride + stride + overlap)) for i in range(count)]


def tile_grid(hole: Tensor, side: int, multiple: int = 8, level: int = 0) -> tuple[list[Tile], int]:
    """The tiles of one level with a hole pixel, and the overlap, for an (H, W) bool hole.

    The grid covers the holes' bounding box grown by the overlap (context for the tiles at its
    edge). Returns ``([], overlap)`` for an empty hole.
    """
    height, width = hole.shape
    overlap = tile_overlap(side, multiple)
    rows_any, cols_any = hole.any(dim=1), hole.any(dim=0)
    if not bool(rows_any.any()):
        return [], overlap
    rows_at, cols_at = rows_any.nonzero().flatten(), cols_any.nonzero().flatten()
    top, bottom = max(0, int(rows_at[0]) - overlap), min(height, int(rows_at[-1]) + 1 + overlap)
    left, right = max(0, int(cols_at[0]) - overlap), min(width, int(cols_at[-1]) + 1 + overlap)
    rows = tile_spans(top, bottom, height, side, overlap, multiple)
    cols = tile_spans(left, right, width, side, overlap, multiple)
    tiles = []
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            if not bool(hole[r0:r1, c0:c1].any()):
                continue  # no hole pixel: its blend weight covers only known pixels
            ramps = (overlap if i > 0 else 0, overlap if j > 0 else 0,
                     overlap if i < len(rows) - 1 else 0, overlap if j < len(cols) - 1 else 0)
            tiles.append(Tile(level, (r0, c0, r1, c1), ramps))
    return tiles, overlap


def _rise(length: int, device: torch.device) -> Tensor:
    """The rising blend over an overlap of ``length`` px: 0 over its first ``BLEND_START``, a raised
    cosine over the middle, 1 over the last ``BLEND_START``. Each tile's own border (where it has
    the least context) gets no weight, and the cross-fade stays short: averaging two tiles'
    textures lowers their contrast (measured with random weights: a cross-fade over the whole
    overlap leaves 6 % less gradient along the seams than the untiled result, this one 2 %)."""
    t = (torch.arange(length, dtype=torch.float64, device=device) + 0.5) / length
    t = ((t - BLEND_START) / (1 - 2 * BLEND_START)).clamp(0, 1)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _ramp_1d(length: int, before: int, after: int, device: torch.device) -> Tensor:
    weight = torch.ones(length, dtype=torch.float64, device=device)
    if before:
        weight[:before] = _rise(before, device)
    if after:
        weight[length - after :] = 1 - _rise(after, device)  # the next tile's rise at the same pixels: sum 1
    return weight.float()


def tile_weight(tile: Tile, device: torch.device | str = "cpu") -> Tensor:
    """(1, 1, h, w) blend weight of a tile; over a full grid the weights sum to one at every pixel."""
    height, width = tile.size
    top, left, bottom, right = tile.ramps
    rows = _ramp_1d(height, top, bottom, torch.device(device))
    cols = _ramp_1d(width, left, right, torch.device(device))
    return (rows[:, None] * cols[None, :])[None, None]


def add_tile(out: Tensor, hole: Tensor, tile: Tile, fill: Tensor) -> None:
    """Add a tile's fill (1, 3, h, w), weighted by :func:`tile_weight`, to the hole pixels of its
    window in ``out`` (1, 3, H, W), in place; ``hole`` is the (1, 1, H, W) bool hole of ``out``."""
    top, left, bottom, right = tile.window
    weight = tile_weight(tile, fill.device).to(fill.dtype)
    current = out[..., top:bottom, left:right]
    current.copy_(torch.where(hole[..., top:bottom, left:right], current + weight * fill, current))


# --- seams ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeamStats:
    """Gradient magnitude of a tiled result along its seams vs elsewhere in the hole."""

    band_mean: float  # mean |grad| of hole pixels within SEAM_BAND px of a seam
    elsewhere_mean: float  # ... of the other hole pixels the tiles cover
    band_pixels: int
    elsewhere_pixels: int

    @property
    def ratio(self) -> float:
        """``band_mean / elsewhere_mean``: 1.0 = seams indistinguishable; NaN without pixels."""
        if self.band_pixels == 0 or self.elsewhere_pixels == 0 or self.elsewhere_mean == 0:
            return math.nan
        return self.band_mean / self.elsewhere_mean


def seam_statistic(result: Tensor, hole: Tensor, tiles: list[Tile], band: int = SEAM_BAND,
                   strip_pixels: int = 1 << 16) -> SeamStats:
    """Measure seams in ``result`` (1, 3, H, W), tiled as ``tiles`` (level 0), in its hole (1, 1, H, W).

    The seams are the centre lines of the overlaps between neighbouring tiles. Gradient
    magnitude = ``sqrt(dx^2 + dy^2)`` of forward differences, averaged over the channels, at hole
    pixels whose right and lower neighbours are in the hole too (so the hole's own edge, where
    the fill meets the photo, is not counted). Computed in strips of rows of about
    ``strip_pixels`` (~60 bytes each while a strip is measured), so the memory does not grow with
    the image.
    """
    if not tiles:
        return SeamStats(math.nan, math.nan, 0, 0)
    height, width = result.shape[-2:]
    top = min(t.window[0] for t in tiles)
    left = min(t.window[1] for t in tiles)
    bottom = max(t.window[2] for t in tiles)
    right = max(t.window[3] for t in tiles)
    horizontal: list[tuple[int, int, int]] = []  # (seam row, first column, end column)
    vertical: list[tuple[int, int, int]] = []  # (seam column, first row, end row)
    for tile in tiles:
        t, l, b, r = tile.window
        if tile.ramps[2]:
            horizontal.append((b - tile.ramps[2] // 2, l, r))
        if tile.ramps[3]:
            vertical.append((r - tile.ramps[3] // 2, t, b))
    sums, counts = [0.0, 0.0], [0, 0]
    strip_rows = max(1, strip_pixels // max(1, right - left))
    for start in range(top, bottom, strip_rows):
        stop = min(bottom, start + strip_rows)
        block = result[0, :, start : min(height, stop + 1), left:right].float()
        inside = hole[0, 0, start : min(height, stop + 1), left:right] > 0
        rows, cols = min(stop - start, block.shape[1] - 1), block.shape[2] - 1
        if rows <= 0 or cols <= 0:
            continue
        dx = block[:, :rows, 1:] - block[:, :rows, :-1]
        dy = block[:, 1 : rows + 1, :cols] - block[:, :rows, :cols]
        magnitude = (dx.square() + dy.square()).sqrt().mean(0)
        valid = inside[:rows, :cols] & inside[:rows, 1 : cols + 1] & inside[1 : rows + 1, :cols]
        in_band = torch.zeros_like(valid)
        for row, c0, c1 in horizontal:
            lo, hi = max(start, row - band), min(start + rows, row + band)
            if lo < hi:
                in_band[lo - start : hi - start, max(0, c0 - left) : c1 - left] = True
        for col, r0, r1 in vertical:
            lo, hi = max(start, r0), min(start + rows, r1)
            if lo < hi:
                in_band[lo - start : hi - start, max(0, col - band - left) : max(0, col + band - left)] = True
        for index, select in enumerate((valid & in_band, valid & ~in_band)):
            sums[index] += float(magnitude[select].sum())
            counts[index] += int(select.sum())
    means = [s / c if c else math.nan for s, c in zip(sums, counts)]
    return SeamStats(means[0], means[1], counts[0], counts[1])
