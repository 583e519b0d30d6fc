"""Glue shared by the nodes: ComfyUI tensor layouts, devices, progress, interrupts, out-of-memory.

Layout rules (ComfyUI -> our BCHW core):

* IMAGE is (B, H, W, C) float in [0, 1] with C = 3 or 4; the alpha channel is split off and
  re-attached untouched.
* MASK may be (H, W), (B, H, W) or (B, 1, H, W), of any size. A mask of another size than the
  image is resized with nearest-exact (values kept, no new soft edges) and a warning is logged;
  a mask batch of 1 is used for every image; any other batch mismatch is an error naming both
  shapes. Values are clamped to [0, 1].

Messages for the user go through :mod:`nodes._ui` (shown on the node, and logged).

``comfy.*`` modules are imported when a node runs, never at import time, so the pack's schemas
can be rendered without ComfyUI.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ffc import binarize, composite
from ..refine import available_bytes
from ._ui import node_message, preview_image

__all__ = [
    "comfy",
    "split_image",
    "join_image",
    "mask_b1hw",
    "mask_for_image",
    "mask_to_comfy",
    "to_output",
    "InpaintInputs",
    "inpaint_inputs",
    "unchanged_outputs",
    "blended_outputs",
    "load_for_inference",
    "Progress",
    "check_interrupt",
    "interrupted",
    "plannable_bytes",
    "is_out_of_memory",
    "Attempt",
    "run_with_fallbacks",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def comfy(name: str) -> ModuleType:
    """``comfy(\"model_management\")`` -> ``comfy.model_management`` (imported on first use)."""
    return importlib.import_module(f"comfy.{name}")


# --- layouts -------------------------------------------------------------------------------------


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def split_image(image: object, name: str = "image") -> tuple[Tensor, Tensor | None]:
    """IMAGE (B, H, W, 3|4) -> (rgb (B, 3, H, W) float32, alpha (B, H, W, 1) or None)."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected an IMAGE tensor (B, H, W, C), got {_shape(image)}")
    if not image.is_floating_point():
        raise TypeError(f"{name}: expected a float IMAGE with values in [0, 1], got dtype {image.dtype}")
    if image.ndim != 4 or image.shape[-1] not in (3, 4) or min(image.shape) < 1:
        raise ValueError(f"{name}: expected shape (B, H, W, 3) or (B, H, W, 4), got {_shape(image)}")
    alpha = image[..., 3:] if image.shape[-1] == 4 else None
    return image[..., :3].movedim(-1, 1).float(), alpha


def join_image(rgb: Tensor, alpha: Tensor | None) -> Tensor:
    """(B, 3, H, W) -> IMAGE (B, H, W, C), with the untouched alpha channel re-attached."""
    out = rgb.movedim(1, -1)
    if alpha is None:
        return out.contiguous()
    return torch.cat([out, alpha.to(out.device, out.dtype)], dim=-1)


def mask_b1hw(mask: object, name: str = "mask") -> Tensor:
    """Any ComfyUI MASK layout -> (B, 1, H, W) float32 clamped to [0, 1]."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: expected a MASK tensor (H, W), (B, H, W) or (B, 1, H, W), got {_shape(mask)}")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    elif not (mask.ndim == 4 and mask.shape[1] == 1):
        raise ValueError(f"{name}: expected shape (H, W), (B, H, W) or (B, 1, H, W), got {_shape(mask)}")
    if min(mask.shape) < 1:
        raise ValueError(f"{name}: empty mask of shape {_shape(mask)}")
    mask = mask.float()
    if not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{name}: contains NaN or infinite values; expected values in [0, 1]")
    return mask.clamp(0, 1)


def mask_for_image(mask: object, image_bchw: Tensor, name: str = "mask") -> Tensor:
    """Any ComfyUI MASK -> (B, 1, H, W) float32 in [0, 1] matching ``image_bchw`` (see module doc)."""
    mask = mask_b1hw(mask, name)
    batch, _, height, width = image_bchw.shape
    if mask.shape[0] not in (1, batch):
        raise ValueError(
            f"{name}: batch of {mask.shape[0]} masks {_shape(mask)} does not match the batch of {batch} images "
            f"{tuple(image_bchw.shape)} (use one mask, or one per image)"
        )
    if tuple(mask.shape[-2:]) != (height, width):
        if bool(mask.any()):  # an all-zero mask (LoadImage without alpha gives 64x64 zeros) needs no warning
            node_message(f"{name} is {mask.shape[-1]}x{mask.shape[-2]} but the image is {width}x{height}; "
                         "resizing the mask (nearest)", level="warning")
        mask = F.interpolate(mask, size=(height, width), mode="nearest-exact")
    return mask.expand(batch, -1, -1, -1).to(image_bchw.device)


def mask_to_comfy(mask_b1hw: Tensor) -> Tensor:
    """(B, 1, H, W) -> MASK (B, H, W) on ComfyUI's intermediate device."""
    return to_output(mask_b1hw[:, 0])


def to_output(t: Tensor) -> Tensor:
    """Move a result to where ComfyUI keeps node outputs, in its intermediate dtype."""
    mm = comfy("model_management")
    dtype_of = getattr(mm, "intermediate_dtype", None)  # newer ComfyUI only
    dtype = dtype_of() if dtype_of is not None else torch.float32
    return t.to(device=mm.intermediate_device(), dtype=dtype)


@dataclass(frozen=True)
class InpaintInputs:
    """A node's image and mask in our layout: ``soft`` as given, ``hole`` binarised."""

    image: Tensor  # the IMAGE as received, returned as is when there is nothing to do
    rgb: Tensor  # (B, 3, H, W) float32
    alpha: Tensor | None  # (B, H, W, 1)
    soft: Tensor  # (B, 1, H, W) in [0, 1]
    hole: Tensor  # (B, 1, H, W) 0/1: soft > threshold

    def any_hole(self) -> bool:
        return bool(self.hole.any())


def inpaint_inputs(image: object, mask: object, threshold: float) -> InpaintInputs:
    """Convert and check a node's IMAGE and MASK; the hole is ``mask > threshold``."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"mask_threshold: expected a value in [0, 1], got {threshold}")
    rgb, alpha = split_image(image)
    soft = mask_for_image(mask, rgb)
    return InpaintInputs(image=image, rgb=rgb, alpha=alpha, soft=soft, hole=binarize(soft, threshold))


def unchanged_outputs(inputs: InpaintInputs, node: str) -> tuple[Tensor, Tensor]:
    """Outputs for an empty hole: the image as it came, and the (empty) mask."""
    node_message(f"{node}: the mask is empty, nothing to inpaint; returning the image unchanged "
                 "(LoadImage gives an all-zero 64x64 mask for images without alpha)", level="warning")
    return to_output(inputs.image), mask_to_comfy(inputs.hole)


def blended_outputs(inputs: InpaintInputs, filled: Tensor) -> tuple[Tensor, Tensor]:
    """IMAGE and MASK outputs: ``filled`` blended into the input with the soft mask inside the hole.

    Inside the binarised hole the soft mask's value is the weight of the fill (a feathered or
    anti-aliased edge blends); outside it the input is copied bit for bit.
    """
    weight = inputs.soft * inputs.hole
    rgb = composite(inputs.rgb, filled.to(inputs.rgb.device, inputs.rgb.dtype), weight)
    return to_output(join_image(rgb, inputs.alpha)), mask_to_comfy(inputs.hole)


# --- devices -------------------------------------------------------------------------------------


def _accepts(function: Callable, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def plannable_bytes(device: torch.device, weight_bytes: int) -> int | None:
    """Memory a plan may use on ``device`` for activations.

    On a GPU, ComfyUI offloads other models when we ask for memory, so the device's total (minus
    our weights and ComfyUI's reserve) is what a plan may count on; on the CPU it is what is
    available now. None when unknown.
    """
    mm = comfy("model_management")
    total = getattr(mm, "get_total_memory", None)
    if device.type == "cpu" or total is None:
        return available_bytes(device)
    reserve = mm.extra_reserved_memory() if hasattr(mm, "extra_reserved_memory") else 0
    return max(0, int(total(device)) - int(weight_bytes) - int(reserve))


def load_for_inference(patcher: Any, memory_required: int) -> nn.Module:
    """Let ComfyUI make room and load the patched model; return it, on ``patcher.load_device``.

    ``memory_required`` is the activation estimate (weights are accounted by the patcher).
    Loading is forced to be complete: our modules are plain torch, not comfy.ops, and cannot
    run with some weights left on the offload device.
    """
    mm = comfy("model_management")
    kwargs: dict[str, Any] = {"memory_required": int(memory_required)}
    if _accepts(mm.load_models_gpu, "force_full_load"):
        kwargs["force_full_load"] = True
    mm.load_models_gpu([patcher], **kwargs)
    model = patcher.model
    device = torch.device(patcher.load_device)
    if next(model.parameters()).device != device:
        log.debug("LaMa: moving the model to %s after load_models_gpu", device)
        model.to(device)
    return model


# --- progress and interrupts ----------------------------------------------------------------------


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    comfy("model_management").throw_exception_if_processing_interrupted()


def interrupted() -> bool:
    """A ``cancel`` callable for the core: raises ComfyUI's interrupt itself when Cancel was pressed.

    The core polls it between the generator's layers; raising ComfyUI's own exception lets the
    executor report "interrupted" rather than an error.
    """
    check_interrupt()
    return False


class Progress:
    """ComfyUI progress bar over a plan's ``total`` forwards, with optional preview images."""

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self.done = 0
        self._bar = comfy("utils").ProgressBar(self.total)

    def restart(self, total: int) -> None:
        """Start over with a new plan (an out-of-memory retry)."""
        self.total, self.done = max(1, int(total)), 0
        self._bar.update_absolute(0, self.total)

    def step(self, n: int = 1, preview: Tensor | None = None) -> None:
        """``n`` more forwards done; ``preview`` (B, 3, H, W) becomes the node's preview image."""
        self.done += n
        self.total = max(self.total, self.done)
        shown = preview_image(preview) if preview is not None else None
        self._bar.update_absolute(self.done, self.total, shown)

    def finish(self) -> None:
        self.done = self.total
        self._bar.update_absolute(self.done, self.total)


# --- out of memory -------------------------------------------------------------------------------


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device out-of-memory error (never an interrupt or a user error)."""
    mm = comfy("model_management")
    interrupt = getattr(mm, "InterruptProcessingException", None)
    if isinstance(interrupt, type) and isinstance(err, interrupt):
        return False
    raise_non_oom = getattr(mm, "raise_non_oom", None)  # newer ComfyUI
    if raise_non_oom is not None:
        try:
            raise_non_oom(err)
        except BaseException:  # noqa: BLE001 - it re-raises everything that is not an OOM
            return False
        return True
    oom = getattr(mm, "OOM_EXCEPTION", None)
    # On CPU-only builds OOM_EXCEPTION is plain Exception, which would swallow every error.
    if isinstance(oom, type) and oom is not Exception and isinstance(err, oom):
        return True
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@dataclass(frozen=True)
class Attempt:
    """One way to run the work; ``note`` is logged when it is used as a fallback."""

    run: Callable[[], Any]
    note: str


def run_with_fallbacks(attempts: Sequence[Attempt], what: str) -> Any:
    """Run the first attempt; on out-of-memory free the cache and try the next (smaller) one.

    Anything that is not out-of-memory propagates at once; the last attempt's OOM propagates.
    """
    for index, attempt in enumerate(attempts):
        try:
            return attempt.run()
        except Exception as err:
            if index == len(attempts) - 1 or not is_out_of_memory(err):
                raise
            comfy("model_management").soft_empty_cache()
            node_message(f"{what}: out of memory ({str(err).splitlines()[0][:200]}); retrying with "
                         f"{attempts[index + 1].note}", level="warning")
    raise ValueError(f"{what}: nothing to run")
