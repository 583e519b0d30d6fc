"""Plain LaMa inference on batched tensors, as the official ``bin/predict.py`` does it.

Pipeline (``docs/lama-reference.md`` §4): binarise the mask (``> 0``), pad bottom/right to a
multiple of 8 by numpy-"symmetric" mirroring (edge pixel repeated), run the generator on
``cat(image * (1 - mask), mask)``, crop back and composite. Unmasked pixels come back
bit-identical to the input; images whose mask is empty skip the model.

Cancel: ``cancel()`` (a callable returning True to stop) is polled between the generator's
top-level layers (each residual block, each decoder stage), in the forward pass and, for the
refinement, in the backward pass too (:func:`ffc.cancel.cancel_points`), so a large image stops within
about one layer's time instead of a whole forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .cancel import cancel_check, cancel_points
from .checks import check_inpaint_inputs

__all__ = ["inpaint", "predict", "binarize", "composite", "pad_symmetric", "padded_size", "MIN_SIZE"]

# The bottleneck (H/8) must be at least 2 px for the residual blocks' reflect padding.
MIN_SIZE = 16


def binarize(mask: Tensor, threshold: float = 0.0) -> Tensor:
    """Hole where ``mask > threshold`` (official: any non-zero value is a hole), as float 0/1."""
    if mask.dtype == torch.bool:
        return mask.float()
    return (mask > threshold).float()


def padded_size(height: int, width: int, multiple: int = 8, minimum: int = MIN_SIZE) -> tuple[int, int]:
    """Smallest size >= (height, width) and >= ``minimum`` that is a multiple of ``multiple``."""

    def up(n: int) -> int:
        n = max(n, minimum)
        return -(-n // multiple) * multiple

    return up(height), up(width)


def _symmetric_index(size: int, target: int, device: torch.device) -> Tensor:
    # numpy "symmetric": ... c b a | a b c | c b a ...  (period 2 * size); handles target > 2 * size.
    index = torch.arange(target, device=device) % (2 * size)
    return torch.where(index < size, index, 2 * size - 1 - index)


def pad_symmetric(x: Tensor, height: int, width: int) -> Tensor:
    """Pad (..., H, W) at the bottom/right to (height, width) like ``np.pad(mode="symmetric")``."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    x = x.index_select(-2, _symmetric_index(h, height, x.device))
    return x.index_select(-1, _symmetric_index(w, width, x.device))


def composite(image: Tensor, prediction: Tensor, mask: Tensor) -> Tensor:
    """``mask * prediction + (1 - mask) * image``; exactly ``image`` where mask == 0.

    For a binary mask this is a selection; for a soft mask the blend, with unmasked pixels
    (mask == 0) still copied bit for bit.
    """
    if mask.dtype == torch.bool:
        return torch.where(mask, prediction, image)
    blended = mask * prediction + (1 - mask) * image
    blended = torch.where(mask >= 1, prediction, blended)
    return torch.where(mask <= 0, image, blended)


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def predict(model: nn.Module, image: Tensor, hole: Tensor, *, cancel: Callable[[], bool] | None = None) -> Tensor:
    """Raw generator prediction for every pixel, (B, 3, H, W), same dtype as ``image``.

    Args:
        model: a :class:`~ffc.generator.LamaGenerator` (or its fast variant) on ``image``'s device.
        image: (B, 3, H, W) in [0, 1]; any H, W >= 1.
        hole: (B, 1, H, W) binary float mask, 1 = fill.
        cancel: polled between the generator's layers; True raises :class:`ffc.Cancelled`.
    """
    height, width = image.shape[-2:]
    multiple = model.config.multiple
    ph, pw = padded_size(height, width, multiple, max(MIN_SIZE, 2 * multiple))
    image_p = pad_symmetric(image, ph, pw)
    hole_p = pad_symmetric(hole, ph, pw)
    dtype = _model_dtype(model)
    x = torch.cat([image_p * (1 - hole_p), hole_p], dim=1).to(dtype)
    with torch.no_grad(), cancel_points(model, cancel_check(cancel)):
        prediction = model(x)
    return prediction[..., :height, :width].to(image.dtype)


def inpaint(model: nn.Module, image: Tensor, mask: Tensor, *, threshold: float = 0.0,
            cancel: Callable[[], bool] | None = None) -> Tensor:
    """Fill the masked area of ``image`` with LaMa, as the official predict script does.

    Args:
        model: generator in eval mode, on the same device as ``image``.
        image: (B, 3, H, W) float in [0, 1]; any H, W >= 1; B >= 1.
        mask: (B, 1, H, W) float or bool; pixels with ``mask > threshold`` are filled.
        threshold: binarisation threshold (official: 0).
        cancel: polled between the generator's layers; True raises :class:`ffc.Cancelled`.

    Returns:
        (B, 3, H, W), same dtype and device as ``image``: the prediction inside the binarised hole,
        the input bit for bit elsewhere. Images with an empty hole are returned unchanged without
        running the model. The inputs are never modified.

    Raises:
        TypeError, ValueError: for wrong types, shapes, mismatched sizes or non-finite pixels.
    """
    check_inpaint_inputs(image, mask, model)

    hole = binarize(mask, threshold).to(image.dtype)
    out = image.clone()
    todo = hole.flatten(1).any(dim=1).nonzero().flatten()
    if todo.numel() == 0:
        return out
    prediction = predict(model, image[todo], hole[todo], cancel=cancel)
    out[todo] = composite(image[todo], prediction, hole[todo].bool())
    return out
