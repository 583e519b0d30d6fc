"""LaMa's FFC generator, checkpoint loading and plain inference, in plain PyTorch.

No ComfyUI import: usable as a library (``import ffc`` from the repository root) and inside the
node pack. Typical use::

    from ffc import load_generator, inpaint
    generator, info = load_generator("big-lama.pt")      # any format users have
    result = inpaint(generator, image_bchw, mask_b1hw)   # unmasked pixels bit-identical
"""

from __future__ import annotations

from .cancel import Cancelled, cancel_points
from .checkpoint import CheckpointError, ModelInfo, canonicalize, detect_format, load_generator, read_tensors
from .fast import FastLamaGenerator, fuse_for_inference
from .generator import BIG_LAMA, LAMA_FOURIER, LamaConfig, LamaGenerator, config_from_state_dict
from .variants import VARIANTS, Variant
from . import cancel, checks, masks, mpe, plan, strategies, variants
from .inference import MIN_SIZE, binarize, composite, inpaint, pad_symmetric, padded_size, predict

__all__ = [
    "BIG_LAMA",
    "Cancelled",
    "LAMA_FOURIER",
    "MIN_SIZE",
    "VARIANTS",
    "Variant",
    "CheckpointError",
    "FastLamaGenerator",
    "LamaConfig",
    "LamaGenerator",
    "ModelInfo",
    "binarize",
    "cancel",
    "cancel_points",
    "canonicalize",
    "checks",
    "composite",
    "config_from_state_dict",
    "detect_format",
    "fuse_for_inference",
    "inpaint",
    "load_generator",
    "masks",
    "mpe",
    "pad_symmetric",
    "plan",
    "padded_size",
    "predict",
    "read_tensors",
    "strategies",
    "variants",
]
