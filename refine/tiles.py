"""Full-resolution refinement in bounded memory: the finer pyramid levels refined tile by tile.

With ``RefineSettings(full_resolution=True)`` a region larger than ``px_budget`` is not refined at
a reduced size and upscaled. Its pyramid is the official one over the region's own size (each
level ``pyrdown`` of the finer one); the levels that fit the budget run as one multiscale
pyramid (the global fill), and every finer level up to full resolution runs tile by tile:
each tile is one guided scale (:func:`refine.core.refine_scale`): its front features are
optimised with the official loss against the coarser level's result over the same area, so the
global fill is every tile's reference and neighbouring tiles agree. The grid, the blend and the
seam statistic are :mod:`ffc.tiles`'.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .. import ffc
from .core import ScaleOptions, ScaleReport, refine_pyramid, refine_scale
from .pyramid import MASK_EPS, pyrdown, pyrdown_mask

__all__ = ["FULL_SIZE_BYTES_PER_PIXEL", "level_masks", "refine_tiled"]

Tile = ffc.tiles.Tile
add_tile = ffc.tiles.add_tile
# Full-size buffers of a tiled region, per pixel of the region, at their worst moment (building the
# pyramid; tests/refine/test_tiles.py measures it): the output (float32 RGB, 12), the hole (float,
# 4), one blurred plane (4), the coarser levels' images, holes and results (~6). Measured with the
# profiler at 1024-4096 px: 27.3 B/px at the margin (157 before the pyramid was built strip-wise).
FULL_SIZE_BYTES_PER_PIXEL = 28


def level_masks(hole: Tensor, levels: int) -> list[Tensor]:
    """[hole, pyrdown_mask(hole), ...] for ``levels + 1`` levels, as bool (1, 1, h, w) tensors."""
    masks, current = [hole >= MASK_EPS], hole.float()
    for _ in range(levels):
        current = pyrdown_mask(current)
        masks.append(current >= MASK_EPS)
    return masks


def refine_tiled(
    model: nn.Module,
    image: Tensor,
    mask: Tensor,
    pyramid_level: int,
    n_scales: int,
    pyramid_options: ScaleOptions,
    tiles: list[tuple[Tile, ScaleOptions]],
    *,
    out: Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Tensor, list[ScaleReport]]:
    """Refine one region at its own size: a pyramid at level ``pyramid_level``, then the tiles.

    Args:
        model: as :func:`refine.core.refine_pyramid`.
        image: (1, 3, H, W) float32, the region; mask: (1, 1, H, W), >= 1e-8 = hole.
        pyramid_level: halvings of the region at which the untiled pyramid's finest level runs.
        n_scales: that pyramid's levels.
        tiles: the tiles of levels ``pyramid_level - 1`` down to 0, coarsest level first, each
            with its options (iterations, checkpointing).
        callback: after every forward: the pyramid's dicts, then per tile ``scale`` (counted on
            from the pyramid's), ``tile``, ``n_tiles``, ``iteration`` ..., ``last`` and on the last
            forward of a level ``result`` (the level's result).
        out: where the full-size result goes, (1, 3, H, W) holding ``image`` (it may be a view of
            a larger output; hole pixels are overwritten). None = a new tensor.

    Returns:
        The result (1, 3, H, W) composited with the region's hole, and the scale reports (the
        pyramid's, then one per tile).
    """
    images, holes = [image], [mask]
    for _ in range(pyramid_level):  # the official pyramid over the region's own size
        images.append(pyrdown(images[-1]))
        holes.append(pyrdown_mask(holes[-1]))
    n_total = n_scales + pyramid_level

    def notify_pyramid(info: dict) -> None:
        if callback is not None:
            callback({**info, "n_scales": n_total})

    result, reports = refine_pyramid(model, images[pyramid_level], holes[pyramid_level], n_scales, pyramid_options,
                                     callback=notify_pyramid, cancel=cancel)
    for level in range(pyramid_level - 1, -1, -1):
        images[level + 1] = holes[level + 1] = None  # the coarser level lives on only as ``result``
        level_tiles = [(tile, options) for tile, options in tiles if tile.level == level]
        level_image, level_hole = images[level], holes[level]
        hole_bool = level_hole >= MASK_EPS
        if level == 0 and out is not None:
            level_out = out.masked_fill_(hole_bool, 0)  # the tiles' weighted predictions add up here
        else:
            level_out = level_image.masked_fill(hole_bool, 0)
        scale = n_total - 1 - level
        for number, (tile, options) in enumerate(level_tiles):
            top, left, bottom, right = tile.window
            reference = result[..., top // 2 : top // 2 + (bottom - top) // 2, left // 2 : left // 2 + (right - left) // 2]

            def notify(info: dict, last_tile: bool = number == len(level_tiles) - 1, tile: Tile = tile,
                       number: int = number, scale: int = scale, count: int = len(level_tiles),
                       level_out: Tensor = level_out, hole_bool: Tensor = hole_bool) -> None:
                # A tile's last forward carries its result (refine_scale's contract): added there, so
                # after the last tile the level can be shown complete without a full-size copy.
                if info.get("last"):
                    add_tile(level_out, hole_bool, tile, info["result"])
                if callback is None:
                    return
                shown = {**info, "scale": scale, "n_scales": n_total, "tile": number, "n_tiles": count}
                shown["result"] = level_out if info.get("last") and last_tile else None  # a tile is not an image
                callback(shown)

            _, report = refine_scale(model, level_image[..., top:bottom, left:right],
                                     level_hole[..., top:bottom, left:right], reference, options,
                                     callback=notify, cancel=cancel)
            reports.append(report)
        result = level_out  # (a finer level's hole always shows at the coarser ones: no level lacks tiles)
    return result, reports

