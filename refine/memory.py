"""An honest estimate of the memory one refinement scale needs, and what the device has free.

The estimate measures rather than guesses: it runs the rear of a CPU twin of the model (same
architecture and dtype, fresh weights) once at two small probe sizes with
``torch.autograd.graph.saved_tensors_hooks`` and counts the bytes autograd keeps for backward,
per residual block and for the decoder. Those bytes are linear in the number of pixels, so two
probes give the per-pixel cost for this model, dtype and mode. On top come the working tensors
(image, mask, prediction, losses) and the transient peak of the largest activation and its
gradient. Checkpointing keeps only segment boundaries plus one segment at a time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import ffc
from .core import rear_segments

__all__ = ["MemoryEstimate", "estimate_refine_bytes", "available_bytes"]

_PROBES = (64, 96)  # probe input sizes (multiples of 8, bottleneck >= 8 px)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to optimise one scale of ``height`` x ``width`` (weights not included)."""

    total: int
    saved_activations: int
    working: int

    def gib(self) -> float:
        return self.total / 2**30


def _storage_bytes(t: Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _probe(model: nn.Module, size: int, autocast_dtype: torch.dtype | None) -> tuple[list[int], list[int]]:
    """Per rear segment: bytes saved for backward, and bytes of the segment's output."""
    device = next(model.parameters()).device
    segments = rear_segments(model)
    saved, outputs = [0] * len(segments), [0] * len(segments)
    seen: set[int] = set()
    current = [0]

    def pack(t: Tensor) -> Tensor:
        # Weights are saved too, but they do not grow with the image: the two-probe fit drops them.
        ptr, nbytes = _storage_bytes(t)
        if ptr not in seen:
            seen.add(ptr)
            saved[current[0]] += nbytes
        return t

    x = torch.rand(1, model.config.in_channels, size, size, device=device)
    x[:, -1] = (x[:, -1] > 0.5).to(x.dtype)  # the mask channel is binary (LaMa-MPE checks it)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        local, global_ = model.front(x)
    # Run the segments one after another, exactly as checkpointing does.
    h: Tensor | tuple[Tensor, ...] = (local.float().requires_grad_(True), global_.float().requires_grad_(True))
    with torch.enable_grad(), autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for index, segment in enumerate(segments):
            current[0] = index
            h = segment(h)
            outputs[index] = sum(t.numel() * t.element_size() for t in (h if isinstance(h, tuple) else (h,)))
    return saved, outputs


# Per-pixel costs depend only on the architecture (model type and config), weight dtype, memory
# format and autocast dtype -- not on the weights or the device: measured once per such key.
_PROFILES: dict[tuple, tuple[list[float], list[float]]] = {}


def _twin(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A CPU model of the same type and configuration with fresh weights, built outside inference
    mode: measuring on it needs no VRAM and works whatever state the real model is in."""
    with torch.inference_mode(False):
        generator = ffc.LamaGenerator(model.config).eval().requires_grad_(False)
        if isinstance(model, ffc.FastLamaGenerator):
            return ffc.fuse_for_inference(generator, channels_last=model.channels_last).to(dtype)
        return generator.to(dtype)


def _per_pixel(
    model: nn.Module, autocast_dtype: torch.dtype | None, dtype: torch.dtype | None = None
) -> tuple[list[float], list[float]]:
    dtype = dtype or next(model.parameters()).dtype
    key = (type(model).__name__, model.config, dtype, getattr(model, "channels_last", False), autocast_dtype)
    if key not in _PROFILES:
        twin = _twin(model, dtype)
        with torch.inference_mode(False):
            (saved_a, out_a), (saved_b, out_b) = (_probe(twin, s, autocast_dtype) for s in _PROBES)
        area = _PROBES[1] ** 2 - _PROBES[0] ** 2
        slope = lambda a, b: [max(0.0, (y - x) / area) for x, y in zip(a, b)]  # noqa: E731
        _PROFILES[key] = slope(saved_a, saved_b), slope(out_a, out_b)
    return _PROFILES[key]


def estimate_refine_bytes(
    model: nn.Module,
    height: int,
    width: int,
    *,
    checkpoint_rear: bool = False,
    autocast_dtype: torch.dtype | None = None,
    dtype: torch.dtype | None = None,
) -> MemoryEstimate:
    """Estimate the peak bytes to optimise one padded scale of ``height`` x ``width``.

    ``model`` only names the architecture (its type, config and weight dtype, or ``dtype`` when
    given); the measurement runs once on a CPU twin, so any device and state is fine.
    """
    saved_px, output_px = _per_pixel(model, autocast_dtype, dtype)
    pixels = height * width
    if checkpoint_rear:
        # Segment inputs are kept; in backward one segment is recomputed at a time, and only the
        # gradients at its two ends are alive.
        saved = pixels * (sum(output_px) + max(saved_px) + 2 * max(output_px))
    else:
        saved = pixels * sum(saved_px)
    # Image, hole, prediction, pyramid and loss tensors (~24 floats per pixel), plus what is live
    # but not saved: the decoder's full-resolution activations and their gradients during forward
    # and backward, or the front's no-grad pass -- about four ngf-wide float maps.
    working = 4 * pixels * (24 + 4 * model.config.ngf)
    return MemoryEstimate(total=int(saved + working), saved_activations=int(saved), working=int(working))


def available_bytes(device: torch.device) -> int | None:
    """Free memory usable by this process on ``device`` (None when it cannot be known).

    On the CPU this is Linux's MemAvailable (free pages plus the page cache and reclaimable
    memory the kernel gives back on demand), not MemFree: with a large page cache MemFree is
    a small fraction of what can really be used.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reserved_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + reserved_unused)
    if device.type == "cpu":
        available = _meminfo_available()
        if available is not None:
            return available
        try:  # not Linux: free physical pages is the best portable figure
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes, or None where there is no such line."""
    try:
        with open(path, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None
