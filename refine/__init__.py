"""Multiscale feature refinement for LaMa (Kulshreshtha et al. 2022), in plain PyTorch.

No ComfyUI import. Typical use::

    from ..ffc import load_generator
    from refine import refine, RefineSettings
    generator, _ = load_generator("big-lama.safetensors")
    result, reports = refine(generator, image_bchw, mask_b1hw, RefineSettings(min_side=256))

    made = plan(generator, image_bchw, mask_b1hw, RefineSettings(mode="auto", max_seconds=300))
    print(made)                    # "3 scales 256->1024, 31 forwards, ~4 min, ~2.1 GiB"
    result, reports = refine(generator, image_bchw, mask_b1hw, plan=made)

:func:`plan` decides everything a refinement does (regions, sizes, scales, checkpointing,
forwards, memory, time); :func:`refine` executes such a plan (batches, output at input size,
progress and cancel hooks); :func:`refine_pyramid` is the official algorithm on one image.
"""

from __future__ import annotations

from .api import ImageReport, RegionReport, refine
from .core import RefineCancelled, ScaleOptions, ScaleReport, refine_pyramid
from .memory import MemoryEstimate, available_bytes, estimate_refine_bytes
from .plan import ImagePlan, RefinePlan, RegionPlan, WorkUnit, auto_scales, plan, plan_scales
from .pyramid import budget_size, build_pyramid, number_of_scales
from .settings import CHECKPOINTING, MODES, PRECISIONS, RefineSettings
from .speed import SpeedOptions
from .timing import TimeProfile, time_profile

__all__ = [
    "CHECKPOINTING",
    "ImagePlan",
    "ImageReport",
    "MODES",
    "PRECISIONS",
    "RefinePlan",
    "RegionPlan",
    "TimeProfile",
    "WorkUnit",
    "auto_scales",
    "plan",
    "time_profile",
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
