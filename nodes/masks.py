"""``LamaFFC_PrepareMask``: threshold, erode/dilate with a true disk, and feather a mask."""

from __future__ import annotations

import logging

from torch import Tensor

from ..ffc import masks as ffc_masks
from ..ffc.cancel import CancelCheck
from ._common import check_interrupt, comfy, mask_b1hw, mask_to_comfy
from ._spec import NodeSpec, Out, Param

__all__ = ["SPEC", "prepare_mask", "OPERATIONS"]

log = logging.getLogger(__name__)

OPERATIONS = ("erode", "dilate", "none")


def prepare_mask(mask: Tensor, threshold: float, operation: str, kernel_size: int, feather: float, *,
                 cancel: CancelCheck | None = None) -> tuple[Tensor, list[str]]:
    """Binary hole ``mask > threshold``, grown or shrunk by a ``kernel_size`` px disk, then feathered outwards.

    Returns the prepared (B, 1, H, W) mask and the warnings for the user (not logged here).
    """
    if operation not in OPERATIONS:
        raise ValueError(f"operation: expected one of {OPERATIONS}, got {operation!r}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size: expected >= 1 px, got {kernel_size}")
    if feather < 0:
        raise ValueError(f"feather: expected >= 0 px, got {feather}")
    hole = (mask > threshold).to(mask.dtype)
    # An even disk has no centre pixel and would shift the mask by half a pixel.
    size = kernel_size | 1
    if operation == "erode":
        hole = ffc_masks.erode(hole, size, cancel=cancel)
    elif operation == "dilate":
        hole = ffc_masks.dilate(hole, size, cancel=cancel)
    if feather <= 0:
        return hole, []
    return ffc_masks.feather(hole, feather, cancel=cancel), _feather_warnings(hole, feather)


def _feather_warnings(hole: Tensor, feather: float) -> list[str]:
    """A warning per image whose smallest hole is at most twice the feather: the edge outgrows the hole."""
    warnings = []
    for index in range(hole.shape[0]):
        boxes = ffc_masks.hole_boxes(hole[index, 0], 0)
        if not boxes:
            continue
        height, width = min(((b[2] - b[0], b[3] - b[1]) for b in boxes), key=min)
        if feather >= min(height, width) / 2:
            where = f" in image {index}" if hole.shape[0] > 1 else ""
            warnings.append(
                f"feather {feather:g} px is at least half the size of the smallest hole{where} ({width}x{height} px): "
                f"the hole stays fully masked, but the soft edge spreads the fill up to {feather:g} px around it, "
                "more than the hole itself; lower feather to keep the change local"
            )
    return warnings


def _interrupted() -> bool:
    check_interrupt()  # raises ComfyUI's interrupt exception when the user pressed Cancel
    return False


def run(mask: Tensor, threshold: float = 0.5, operation: str = "erode", kernel_size: int = 15,
        feather: float = 0.0) -> tuple[Tensor]:
    source = mask_b1hw(mask)
    device = comfy("model_management").get_torch_device()
    prepared, warnings = prepare_mask(source.to(device), threshold, operation, kernel_size, feather,
                                      cancel=_interrupted)
    for warning in warnings:
        log.warning("LaMa Mask Preprocess: %s", warning)
    return (mask_to_comfy(prepared),)


SPEC = NodeSpec(
    node_id="LamaFFC_PrepareMask",
    display_name="LaMa Mask Preprocess",
    category="inpaint/lama",
    description=(
        "Makes a clean inpainting mask: binarise at a threshold, then erode (shrink) or dilate (grow) the hole "
        "with a true circular kernel (the LaMa paper uses 15 px), then optionally add a soft edge around it for a "
        "blended composite. Dilate when the object's edge or shadow must also be removed."
    ),
    inputs=(
        Param.socket("mask", "MASK", tooltip="Mask to prepare; 1 = hole. (H, W), (B, H, W) or (B, 1, H, W)."),
        Param.float("threshold", 0.5, lo=0.0, hi=1.0, step=0.01, tooltip=(
            "Pixels with mask > threshold become hole (1), the rest 0. Cleans soft, JPEG-damaged or anti-aliased masks.")),
        Param.combo("operation", OPERATIONS, default="erode", tooltip=(
            "erode shrinks the hole, dilate grows it, none keeps the thresholded mask. "
            "The image border neither erodes nor dilates.")),
        Param.int("kernel_size", 15, lo=1, hi=255, step=2, tooltip=(
            "Diameter of the circular kernel in pixels (1 = no change). Even values are rounded up to the next odd "
            "size so the disk stays centred.")),
        Param.float("feather", 0.0, lo=0.0, hi=256.0, step=0.5, tooltip=(
            "Width in pixels of a soft edge added outside the hole; 0 keeps a hard 0/1 mask. The hole itself stays 1, "
            "so the object is always fully replaced; the edge fades from 1 to 0 within this many pixels around it, "
            "where LaMa Inpaint blends its fill into the original.")),
    ),
    outputs=(Out("MASK", "mask", "The prepared mask (B, H, W), 0..1."),),
    run=run,
)
