"""Multiscale feature refinement for LaMa (Kulshreshtha et al. 2022), in plain PyTorch.

No ComfyUI import. Typical use::

    from ffc import load_generator
    from refine import refine, RefineSettings
    generator, _ = load_generator("big-lama.safetensors")
    result, reports = refine(generator, image_bchw, mask_b1hw, RefineSettings(min_side=256))

:func:`refine` is the practical entry point (batches, output at input size, crop-to-mask,
memory-aware checkpointing, progress and cancel hooks); :func:`refine_pyramid` is the official
algorithm on one image.
"""

from __future__ import annotations

from .api import ImageReport, RefineSettings, RegionReport, plan_scales, refine
from .core import RefineCancelled, ScaleOptions, ScaleReport, refine_pyramid
from .memory import MemoryEstimate, available_bytes, estimate_refine_bytes
from .pyramid import budget_size, build_pyramid, number_of_scales
from .speed import SpeedOptions

__all__ = [
    "ImageReport",
    "MemoryEstimate",
    "RefineCancelled",
    "RefineSettings",
    "RegionReport",
    "ScaleOptions",
    "ScaleReport",
    "SpeedOptions",
    "available_bytes",
    "budget_size",
    "build_pyramid",
    "estimate_refine_bytes",
    "number_of_scales",
    "plan_scales",
    "refine",
    "refine_pyramid",
]
