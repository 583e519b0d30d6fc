"""Shared benchmark plumbing: synthetic Big-LaMa, synthetic photo, isolated worker processes.

Every measurement runs in a fresh worker process, so its peak memory is its own (on CPU the
process's resident-set high-water mark, reset just before the measured call, minus the resident
set at that moment; on CUDA the allocator's peak above what was allocated before).
Modes are interleaved round by round, which spreads the noise of a shared machine evenly.
Speed does not depend on the weight values, so random weights stand in for the real Big-LaMa.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT / "tests"))
from pack_import import import_pack  # noqa: E402

import_pack()  # this checkout as lama_multiscale_refine (not what pip install -e points to)

from lama_multiscale_refine.ffc import BIG_LAMA, LamaConfig, LamaGenerator  # noqa: E402


def big_lama(config: LamaConfig = BIG_LAMA, seed: int = 0) -> LamaGenerator:
    """Big-LaMa-shaped generator with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    generator = LamaGenerator(config)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return generator.eval()


def photo(size: int, hole_fraction: float, *, centred_box: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth synthetic image (1,3,S,S) and a square hole covering ``hole_fraction`` of it."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([x, y, 0.5 + 0.5 * torch.sin(12 * x) * torch.cos(9 * y)])[None].clamp(0, 1)
    side = int(size * hole_fraction**0.5)
    top = (size - side) // 2 if centred_box else size // 8
    mask = torch.zeros(1, 1, size, size)
    mask[..., top : top + side, top : top + side] = 1
    return image, mask


def device_from(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark (VmHWM), resettable with :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def reset_peak_rss() -> None:
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_in_use(device: torch.device) -> int:
    """What is held now: allocated CUDA memory, or the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _current_rss()


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so a later RSS peak is not hidden by it."""
    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measure:
    """Wall time, CPU time and peak memory of a block.

    ``baseline`` is what was in use with just the model and inputs loaded (before any warm-up),
    so memory the allocator kept from a warm-up is not mistaken for free: the peak reported is
    the highest use during the block minus that baseline (``None``: what is in use on entry).
    On CUDA ``peak_bytes`` is the allocator's ``max_memory_allocated`` and ``peak_reserved_bytes``
    what it held from the driver (fragmentation included); on CPU both are the resident set's
    high-water mark (VmHWM). CPU time counts every thread: on this shared 2-core machine it is
    less disturbed by other jobs than wall time, though spinning OpenMP threads still inflate it.
    """

    def __init__(self, device: torch.device, baseline: int | None = None) -> None:
        self.device, self.baseline = device, baseline

    def __enter__(self) -> "Measure":
        sync(self.device)
        if self.device.type == "cuda":
            if self.baseline is None:
                self.baseline = torch.cuda.memory_allocated(self.device)
            self.reserved_baseline = torch.cuda.memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            trim_heap()
            if self.baseline is None:
                self.baseline = _current_rss()
            reset_peak_rss()
        self.start, self.cpu_start = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = cpu_seconds() - self.cpu_start
        if self.device.type == "cuda":
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self.baseline)
            self.peak_reserved_bytes = max(0, torch.cuda.max_memory_reserved(self.device) - self.reserved_baseline)
        else:
            self.peak_bytes = self.peak_reserved_bytes = max(0, peak_rss_bytes() - self.baseline)


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_worker(script: Path, args: list[str]) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter and return the JSON it prints last."""
    result = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarize(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "runs": samples}


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = f"{names[0] if names else 'unknown'} x{os.cpu_count()}"
    return info


def gib(n: float, digits: int = 2) -> float:
    return round(n / 2**30, digits)


def fused(model: LamaGenerator, device: torch.device) -> torch.nn.Module:
    """The model our nodes and ``refine()`` run: BatchNorm folded once at load, weights frozen."""
    from lama_multiscale_refine.ffc import fuse_for_inference

    return fuse_for_inference(model.requires_grad_(False), channels_last=device.type == "cpu")


def official_refine(model: LamaGenerator, image: torch.Tensor, mask: torch.Tensor, *, n_iters: int,
                    px_budget: int = 1_800_000, min_side: int = 512, autocast_dtype: torch.dtype | None = None,
                    callback=None):
    """The official refinement's cost (``bin/predict.py refine=True``), run on our eager generator.

    As the official code runs it: ``model.freeze()`` first (every weight stops requiring grad, so
    no weight gradients), the eager model with its BatchNorms, and autograd recording the rear
    wherever ``refine_predict`` records it: at the coarsest scale's forward and at each scale's
    last forward too, although no gradient of those is used. Paper settings otherwise (lr 0.002,
    max_scales 3, ``min_side`` 512 unless given). Returns ``(result, scale reports)`` at the working size.
    """
    from lama_multiscale_refine.refine import RefineSettings, ScaleOptions, plan_scales, refine_pyramid
    from lama_multiscale_refine.refine.pyramid import MASK_EPS, resize_to_budget

    settings = RefineSettings(n_iters=n_iters, px_budget=px_budget, min_side=min_side)
    n_scales = plan_scales(*image.shape[-2:], settings)
    work_image, work_mask = resize_to_budget(image, (mask >= MASK_EPS).float(), px_budget)
    options = ScaleOptions(n_iters=n_iters, lr=settings.lr, autocast_dtype=autocast_dtype, no_grad_where_unused=False)
    model.requires_grad_(False)
    with torch.inference_mode(False), torch.enable_grad():
        return refine_pyramid(model, work_image, work_mask, n_scales, options, callback=callback)
