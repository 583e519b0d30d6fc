"""Image/mask pyramid of the official refinement (``docs/lama-reference.md`` §5.3, fixtures README §4)."""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MASK_EPS",
    "BLUR_STRIP_PIXELS",
    "blur5",
    "pyrdown",
    "pyrdown_mask",
    "loss_mask_down",
    "number_of_scales",
    "budget_size",
    "resize_to_budget",
    "resize_to",
    "build_pyramid",
    "pad_reflect_to_multiple",
]

# The official thresholds: a pyramid mask pixel is a hole when >= 1e-8 (in float32, 1 - 1e-8 == 1).
MASK_EPS = 1e-8


# Without autograd the blur runs one channel and about this many pixels at a time: mkldnn's
# depthwise convolution reorders its input and output into 16-channel blocks, ~140 bytes per pixel
# of a 3-channel image (7 GiB at 8K) for one whole-tensor call, ~9 MiB for one such strip (and
# faster). Same kernel, same taps per pixel: bit-identical.
BLUR_STRIP_PIXELS = 1 << 16


def _gaussian5(x: Tensor) -> Tensor:
    return kornia.filters.get_gaussian_kernel2d((5, 5), (1.0, 1.0), device=x.device, dtype=x.dtype)


def _differentiated(x: Tensor) -> bool:
    """Whether autograd records ops on ``x`` (then the whole-tensor calls, whose backward it knows)."""
    return torch.is_grad_enabled() and x.requires_grad


def blur5(x: Tensor) -> Tensor:
    """5x5 Gaussian, sigma 1, torch-"reflect" border, applied as one 2-D kernel (as kornia 0.5 did).

    Differentiated (the loss's blur of the prediction): kornia's ``filter2d`` on the whole tensor.
    Otherwise (the pyramid of the inputs) the same convolution plane by plane in strips of rows,
    bit-identical and in memory bounded by :data:`BLUR_STRIP_PIXELS`.
    """
    if _differentiated(x):
        return kornia.filters.filter2d(x, _gaussian5(x), border_type="reflect")
    height, width = x.shape[-2:]
    kernel = _gaussian5(x)[None]  # (1, 1, 5, 5): one plane per call
    rows = max(1, BLUR_STRIP_PIXELS // width)
    out = torch.empty_like(x)
    for batch in range(x.shape[0]):
        for channel in range(x.shape[1]):
            plane = x[batch : batch + 1, channel : channel + 1]
            for start in range(0, height, rows):
                stop = min(height, start + rows)
                # 2 rows of real context either side; torch "reflect" only at the image's own border
                first, last = max(0, start - 2), min(height, stop + 2)
                strip = F.pad(plane[..., first:last, :], (2, 2, 2 - (start - first), 2 - (last - stop)),
                              mode="reflect")
                out[batch, channel, start:stop] = F.conv2d(strip, kernel)[0, 0]
    return out


def pyrdown(x: Tensor) -> Tensor:
    """Blur, then bilinear resize to (H // 2, W // 2) without antialiasing.

    Without autograd one channel at a time (bit-identical: both steps work plane by plane), so
    the full-size blurred copy is one plane, not the whole image.
    """
    height, width = x.shape[-2:]
    size = (height // 2, width // 2)
    if _differentiated(x):
        return F.interpolate(blur5(x), size=size, mode="bilinear", align_corners=False)
    out = x.new_empty(*x.shape[:2], *size)
    for channel in range(x.shape[1]):
        plane = blur5(x[:, channel : channel + 1])
        out[:, channel : channel + 1] = F.interpolate(plane, size=size, mode="bilinear", align_corners=False)
    return out


def pyrdown_mask(mask: Tensor) -> Tensor:
    """Coarser pyramid mask: blur + bilinear, then any positive value is a hole (grows holes)."""
    return (pyrdown(mask) >= MASK_EPS).to(mask.dtype)


def loss_mask_down(mask: Tensor) -> Tensor:
    """Mask for the coarse-consistency term: bilinear (no blur) to half size, keep fully-hole pixels."""
    height, width = mask.shape[-2:]
    down = F.interpolate(mask, size=(height // 2, width // 2), mode="bilinear", align_corners=False)
    return (down >= 1 - MASK_EPS).to(mask.dtype)


def number_of_scales(height: int, width: int, min_side: int, max_scales: int) -> int:
    """``min(1 + round(max(0, log2(min(h, w) / min_side))), max_scales)`` (round half to even)."""
    return min(1 + int(round(max(0.0, math.log2(min(height, width) / min_side)))), max_scales)


def budget_size(height: int, width: int, px_budget: int) -> tuple[int, int]:
    """The official reduced size when ``height * width > px_budget`` (floor), else unchanged."""
    if height * width <= px_budget:
        return height, width
    ratio = math.sqrt(px_budget / (height * width))
    return int(height * ratio), int(width * ratio)


def resize_to_budget(image: Tensor, mask: Tensor, px_budget: int) -> tuple[Tensor, Tensor]:
    """Bilinear resize (no antialias) to the budget; resized mask values > 1e-8 become 1."""
    return resize_to(image, mask, budget_size(*image.shape[-2:], px_budget))


def resize_to(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bilinear resize (no antialias) to ``size``, as the official budget resize does it."""
    size = tuple(size)
    if size == tuple(image.shape[-2:]):
        return image, mask
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return image, torch.where(mask > MASK_EPS, torch.ones_like(mask), mask)


def build_pyramid(image: Tensor, mask: Tensor, n_scales: int) -> list[tuple[Tensor, Tensor]]:
    """[(image, mask)] from coarsest to finest; the finest mask is left as given (may be soft)."""
    levels = [(image, mask)]
    for _ in range(n_scales - 1):
        image, mask = pyrdown(image), pyrdown_mask(mask)
        levels.append((image, mask))
    return levels[::-1]


def pad_reflect_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple with torch "reflect" (the per-scale pad of the refiner)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
