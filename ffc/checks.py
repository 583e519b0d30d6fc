"""Input validation shared by the public functions: name the input, say what was expected and got."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "check_image_bchw",
    "check_mask_b1hw",
    "check_finite",
    "check_unit_range",
    "check_model",
    "check_inpaint_inputs",
    "RANGE_TOLERANCE",
]

# Values this far outside [0, 1] still pass: bicubic or Lanczos resampling of a high-contrast
# image (a ComfyUI "Upscale Image" node does not clamp) overshoots by up to about 0.2. An 8-bit
# image in 0..255 is far outside, unless it is black.
RANGE_TOLERANCE = 0.25


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


def check_unit_range(name: str, t: Tensor, tolerance: float = RANGE_TOLERANCE) -> None:
    """Reject values clearly outside [0, 1] (more than ``tolerance`` out), such as an image in 0..255."""
    low, high = (float(v) for v in torch.aminmax(t.detach()))
    if low < -tolerance or high > 1 + tolerance:
        hint = " (it looks like 0..255: divide by 255)" if high > 2 and low >= -tolerance else ""
        raise ValueError(f"{name}: expected values in [0, 1], got values from {low:.4g} to {high:.4g}{hint}")


def check_model(model: object, name: str = "model") -> nn.Module:
    """Require a LaMa generator ready for inference: eval mode, 4 input channels, 3 output channels.

    Nothing about the model is changed, not even its mode: a model in training mode is refused
    rather than switched, as it may be the caller's training copy.
    """
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or config is None:
        raise TypeError(f"{name}: expected a LamaGenerator or a fused one (ffc.fuse_for_inference), got {type(model).__name__}")
    if model.training:
        raise ValueError(
            f"{name}: expected eval mode, got a model in training mode; call model.eval() first (in training mode "
            "BatchNorm normalises with each batch's statistics, which changes the output, and overwrites its running statistics)"
        )
    if config.in_channels != 4:
        raise ValueError(
            f"{name}: its first convolution takes {config.in_channels} input channels, expected 4 (the RGB image with "
            "the hole blanked out, plus the mask); this is not a LaMa inpainting generator"
        )
    if config.out_channels != 3:
        raise ValueError(f"{name}: produces {config.out_channels} output channels, expected 3 (RGB)")
    return model


def check_inpaint_inputs(image: object, mask: object, model: torch.nn.Module | None = None) -> None:
    """The checks every inpainting entry point runs: shapes, dtypes, finite values in [0, 1], the model, one device."""
    check_image_bchw("image", image)
    check_mask_b1hw("mask", mask, image)
    check_finite("image", image)
    check_finite("mask", mask)
    check_unit_range("image", image)
    if model is not None:
        check_model(model)
        device = next(model.parameters()).device
        if image.device != device or mask.device != device:
            raise ValueError(
                f"image/mask are on {image.device}/{mask.device} but the model is on {device}; move them first"
            )
