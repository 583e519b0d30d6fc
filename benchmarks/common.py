"""Shared benchmark plumbing: synthetic Big-LaMa, synthetic photo, isolated worker processes.

Every measurement runs in a fresh worker process, so its peak memory is its own (on CPU the
process's resident-set high-water mark, reset just before the measured call, minus the resident
set at that moment; on CUDA the allocator's peak above what was allocated before).
Modes are interleaved round by round, which spreads the noise of a shared machine evenly.
Speed does not depend on the weight values, so random weights stand in for the real Big-LaMa.
"""

from __future__ import annotations

import json
import os
import re
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


class Measure:
    """Wall time and peak memory of a block, measured in a fresh worker process.

    ``baseline`` is what was in use with just the model and inputs loaded (before any warm-up),
    so memory the allocator kept from a warm-up is not mistaken for free: the peak reported is
    the highest use during the block minus that baseline.
    """

    def __init__(self, device: torch.device, baseline: int) -> None:
        self.device, self.baseline = device, baseline

    def __enter__(self) -> "Measure":
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else peak_rss_bytes()
        self.peak_bytes = max(0, peak - self.baseline)


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


def gib(n: float) -> float:
    return round(n / 2**30, 2)
