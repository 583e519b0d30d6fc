"""An honest estimate of the memory one refinement scale needs, and what the device has free.

The estimate measures rather than models. It runs the real refinement code (:func:`refine_pyramid`,
two scales, three iterations) on a CPU twin of the model (same type,
configuration, dtype, memory format and frozen-or-not weights; fresh values) at two small probe
sizes under the PyTorch profiler, and reads the peak of live tensor bytes from the allocator's
events. Everything the step holds at its worst moment is in that peak: activations saved for
backward, gradients, the transients inside kernels (layout copies, padded buffers), the front's
pass, masks, images and optimiser state. All of it grows with the finest scale's pixels except
a few weight-sized transients, so the two probes give a fixed and a per-pixel term for this
architecture, dtype and mode. Checkpointing is measured the same way, with checkpointing on, so
its estimate is what it really costs (see :func:`refine.core.rear_segments`).

On the CPU the resident set is what must fit, and it is larger than the tensors, by an amount
that depends on the process's history. Most of it is glibc's heap: its dynamic mmap threshold
rises to 32 MiB after the first large free, so later blocks below that come from the heap, which
fragments and does not shrink during the run (at 512 px, fused, fresh process: 0.72 GiB resident
with the default, 0.43 GiB with ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment but 1.9x
the time, every block then being fresh zeroed pages; with 131072: 0.42 GiB, 1.4x the time); the
rest is library code and caches paged in by the first run. Measured on the reference machine
(Big-LaMa, 2 scales, n_iters 3): in a fresh process that runs nothing else first, +0.37 GiB at
512 x 512 and +0.83 GiB at 1024 x 1024 over the tensors' peak, whatever the mode; in a process
that has already run other work (``benchmarks/device_suite.py``: the official cost first, and our
own plan's probes, as every ``refine()`` call has), +1.68 GiB for the fused model and +1.79 GiB
checkpointed at 1024 x 1024 (+0.89 GiB for the eager model). A long-lived host (ComfyUI) is the
second case, and an estimate that is too low is an out-of-memory error, so a CPU estimate adds
``resident_overhead`` = :data:`CPU_RESIDENT_FIXED` + :data:`CPU_RESIDENT_PER_PIXEL` per pixel,
fitted to that case: the fresh-process peaks are then 30-40 % below the estimate (fused), the
eager one 11 % below. On CUDA the estimate is the allocator's peak
(``max_memory_allocated``); the caching allocator reserves more than that, and cuDNN's
workspaces are not in a CPU twin's peak. Not counted anywhere: the model's weights.
``benchmarks/device_suite.py`` prints the estimate beside the measured peak of every case on
the device it runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .. import ffc
from .core import ScaleOptions, refine_pyramid

__all__ = ["MemoryEstimate", "estimate_refine_bytes", "available_bytes", "peak_tensor_bytes", "CPU_RESIDENT_FIXED",
           "CPU_RESIDENT_PER_PIXEL"]

# Finest-scale probe sizes (square, multiples of 8; the coarser scale is half of it). Large
# enough that the per-pixel terms dominate the weights' transients at both.
_PROBES = (96, 160)


# What a CPU process's resident set needs beyond the tensors' peak (see the module docstring):
# the fixed part from fresh processes (0.37 GiB at 512 px, 0.83 GiB at 1024 px), the per-pixel
# part so that the fused model's 1024 px peak in a process with a history (+1.68 GiB) is met.
CPU_RESIDENT_FIXED = int(0.217 * 2**30)
CPU_RESIDENT_PER_PIXEL = 1498.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to optimise one scale of ``height`` x ``width`` (weights not included).

    ``total = fixed + per_pixel * pixels + resident_overhead``; the first two are the tensors'
    peak (the allocator's), the last what a CPU process's resident set needs on top (0 on GPUs).
    """

    total: int
    per_pixel: float  # tensor bytes per pixel of the finest scale
    fixed: int  # tensor bytes that do not grow with the image (weight-sized transients, weight gradients)
    resident_overhead: int = 0  # CPU only: heap fragmentation, library code and caches

    @property
    def tensor_bytes(self) -> int:
        """The allocator's peak: what ``max_memory_allocated`` reports on CUDA."""
        return self.total - self.resident_overhead

    def gib(self) -> float:
        return self.total / 2**30


def peak_tensor_bytes(run) -> int:
    """Peak of live CPU tensor bytes while ``run()`` executes, from the profiler's allocation events.

    Counts what PyTorch's CPU allocator hands out (tensors and kernel temporaries alike) above
    what was live when ``run`` started.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def _probe(twin: nn.Module, size: int, autocast_dtype: torch.dtype | None, checkpoint_rear: bool) -> int:
    """Peak live bytes of refining a ``size`` x ``size`` image over two scales on ``twin``."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=generator)
    hole = torch.zeros(1, 1, size, size)
    hole[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1  # a quarter of the image
    # Three iterations: the second forward records its graph while the first's leftovers (Adam's
    # state, weight gradients of a trainable model) are alive, as in every later iteration.
    options = ScaleOptions(n_iters=3, checkpoint_rear=checkpoint_rear, autocast_dtype=autocast_dtype)
    with torch.inference_mode(False), torch.enable_grad():
        return peak_tensor_bytes(lambda: refine_pyramid(twin, image, hole, 2, options))


# Per-pixel costs depend only on the architecture (model type and config), weight dtype, memory
# format, whether the weights require grad, autocast and checkpointing -- not on the weights'
# values or the device: measured once per such key.
_PROFILES: dict[tuple, tuple[float, float]] = {}


def _twin(model: nn.Module, dtype: torch.dtype, trainable: bool) -> nn.Module:
    """A CPU model of the same type and configuration with fresh weights, built outside inference
    mode: measuring on it needs no VRAM and works whatever state the real model is in."""
    with torch.inference_mode(False):
        generator = ffc.LamaGenerator(model.config).eval().requires_grad_(False)
        if isinstance(model, ffc.FastLamaGenerator):
            return ffc.fuse_for_inference(generator, channels_last=model.channels_last).to(dtype)
        return generator.to(dtype).requires_grad_(trainable)


def _profile(model: nn.Module, autocast_dtype: torch.dtype | None, dtype: torch.dtype | None,
             checkpoint_rear: bool) -> tuple[float, float]:
    dtype = dtype or next(model.parameters()).dtype
    trainable = any(p.requires_grad for p in model.parameters())
    key = (type(model).__name__, model.config, dtype, getattr(model, "channels_last", False), trainable,
           autocast_dtype, checkpoint_rear)
    if key not in _PROFILES:
        twin = _twin(model, dtype, trainable)
        small, large = (_probe(twin, size, autocast_dtype, checkpoint_rear) for size in _PROBES)
        per_pixel = max(0.0, (large - small) / (_PROBES[1] ** 2 - _PROBES[0] ** 2))
        _PROFILES[key] = per_pixel, max(0.0, small - per_pixel * _PROBES[0] ** 2)
    return _PROFILES[key]


def estimate_refine_bytes(
    model: nn.Module,
    height: int,
    width: int,
    *,
    checkpoint_rear: bool = False,
    autocast_dtype: torch.dtype | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> MemoryEstimate:
    """Estimate the peak bytes to optimise one padded scale of ``height`` x ``width``.

    ``model`` only names the architecture (its type, config, memory format, whether its weights
    require grad, and its weight dtype, or ``dtype`` when given); the measurement runs once per
    such kind on a CPU twin (Big-LaMa on a 2-core CPU: 4 to 30 s per kind), so any device and state is
    fine. ``device`` is where the refinement will run (default: the model's); on the CPU the
    estimate includes the resident set's overhead beyond the tensors.
    """
    per_pixel, fixed = _profile(model, autocast_dtype, dtype, checkpoint_rear)
    pixels = height * width
    target = torch.device(device) if device is not None else next(model.parameters()).device
    overhead = int(CPU_RESIDENT_FIXED + CPU_RESIDENT_PER_PIXEL * pixels) if target.type == "cpu" else 0
    return MemoryEstimate(total=int(fixed + per_pixel * pixels) + overhead, per_pixel=per_pixel, fixed=int(fixed),
                          resident_overhead=overhead)


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
