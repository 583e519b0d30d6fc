"""Input validation shared by the public functions: name the input, say what was expected and got."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_image_bchw", "check_mask_b1hw", "check_finite", "check_inpaint_inputs"]


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"tensor of shape {tuple(t.shape)} and dtype {t.dtype}"
    return type(t).__name__


def check_image_bchw(name: str, image: object, channels: int = 3) -> Tensor:
    """Require a floating (B, channels, H, W) tensor with B, H, W >= 1."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, {channels}, H, W), got {_describe(image)}")
    if not image.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor with values in [0, 1], got dtype {image.dtype}")
    if image.ndim != 4 or image.shape[1] != channels or min(image.shape) < 1:
        raise ValueError(f"{name}: expected shape (B, {channels}, H, W), got {tuple(image.shape)}")
    return image


def check_mask_b1hw(name: str, mask: object, image: Tensor, image_name: str = "image") -> Tensor:
    """Require a (B, 1, H, W) mask matching ``image`` in batch and size (float or bool)."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, 1, H, W), got {_describe(mask)}")
    if mask.dtype not in (torch.bool, torch.uint8) and not mask.is_floating_point():
        raise TypeError(f"{name}: expected a float or bool tensor, got dtype {mask.dtype}")
    batch, _, height, width = image.shape
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (height, width) or mask.shape[0] != batch:
        raise ValueError(
            f"{name}: expected shape ({batch}, 1, {height}, {width}) to match {image_name}, got {tuple(mask.shape)}"
        )
    return mask


def check_finite(name: str, t: Tensor) -> None:
    """Reject NaN / inf, which would otherwise spread through the convolutions into every pixel."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); expected finite values in [0, 1]")


def check_inpaint_inputs(image: object, mask: object, model: torch.nn.Module | None = None) -> None:
    """The checks every inpainting entry point runs: shapes, dtypes, finite values, one device."""
    check_image_bchw("image", image)
    check_mask_b1hw("mask", mask, image)
    check_finite("image", image)
    check_finite("mask", mask)
    if model is not None:
        device = next(model.parameters()).device
        if image.device != device or mask.device != device:
            raise ValueError(
                f"image/mask are on {image.device}/{mask.device} but the model is on {device}; move them first"
            )
