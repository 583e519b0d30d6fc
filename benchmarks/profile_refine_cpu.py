"""Where one refinement iteration's time goes on this CPU, against what the CPU can do.

    python benchmarks/profile_refine_cpu.py                 # 1024 px, official vs ours, fp32
    python benchmarks/profile_refine_cpu.py --size 512 --modes official ours ours_bf16 --json out.json

One iteration = what every optimised iteration of a scale runs: the rear forward with autograd
recording, the official loss (L1 on the known pixels + L1 of the blurred, half-size prediction
against the coarser result in the hole) and the backward to the features. Modes:
  official    the eager generator with frozen weights (the official cost, bin/predict.py)
  ours        the BatchNorm-folded generator with the light backward (refine()'s default)
  ours_nchw   ours in NCHW memory format instead of channels_last (refine()'s CPU default)
  ours_bf16   ours under bf16 autocast (``precision="bf16"``; changes the numbers)
  ours_compiled  ours with the rear through ``torch.compile`` (inductor, C++ kernels; the first
              call's compilation is timed apart as ``compile_seconds``)
For each: the median time of --iters iterations after a warm-up, the profiler's split of one
more iteration into convolutions (forward and input-gradient), FFTs and the rest (elementwise
work, layout copies, autograd), and the convolution FLOPs (torch.utils.flop_counter), hence
the achieved GFLOP/s. The CPU's peak is measured with an MKL sgemm and a oneDNN convolution
of the residual blocks' shape (and in bf16), and the ISA is read from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import big_lama, cpu_seconds, environment, fused, photo  # noqa: E402

from lama_multiscale_refine.ffc import fuse_for_inference  # noqa: E402
from lama_multiscale_refine.refine.pyramid import pyrdown  # noqa: E402

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
MODES = ("official", "ours", "ours_nchw", "ours_bf16", "ours_compiled")


def isa() -> list[str]:
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return [flag for flag in ISA_FLAGS if flag in flags]


def _cpu_facts() -> dict[str, str]:
    with open("/proc/cpuinfo") as f:
        facts = {}
        for line in f:
            key, _, value = line.partition(":")
            facts.setdefault(key.strip(), value.strip())
    return facts


def derived_peak() -> dict:
    """This CPU's float32 peak from its description: cores x GHz x FLOPs per cycle and core.

    FLOPs per cycle: two FMA pipes per core (2 FLOPs each per lane). Lanes: AMD Zen 4 (family 25
    with AVX-512) executes 512-bit instructions on 256-bit pipes, so 8 float32 lanes per pipe, as
    AVX2 cores; Intel server cores with AVX-512 have two 512-bit FMA pipes, 16 lanes. bf16 dot
    products (AVX512_BF16 VDPBF16PS) do twice the float32 FLOPs per instruction. The clock is the
    nominal one (/proc/cpuinfo "cpu MHz"; a VM shows no boost clock), so short bursts can beat it.
    """
    facts = _cpu_facts()
    flags = facts.get("flags", "").split()
    cores = len(os.sched_getaffinity(0))
    ghz = float(facts.get("cpu MHz", "0")) / 1000
    amd = facts.get("vendor_id") == "AuthenticAMD"
    if "avx512f" in flags and not amd:
        lanes = 16
    elif "avx2" in flags and "fma" in flags:
        lanes = 8
    else:
        lanes = 4
    fp32_per_cycle = 2 * 2 * lanes  # 2 pipes x FMA (2 FLOPs) x lanes
    fp32 = cores * ghz * fp32_per_cycle
    return {"cores": cores, "ghz": round(ghz, 3), "vendor": facts.get("vendor_id"), "family": facts.get("cpu family"),
            "model": facts.get("model"), "fp32_flops_per_cycle": fp32_per_cycle, "fp32_gflops": round(fp32, 1),
            "bf16_gflops": round(2 * fp32, 1) if "avx512_bf16" in flags else None}


def _best(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_gflops() -> dict:
    """Best-of-5 GFLOP/s of kernels that run near this CPU's peak."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    out = {"sgemm 4096 fp32 (MKL)": 2 * 4096**3 / _best(lambda: a @ b) / 1e9}
    ab, bb = a.bfloat16(), b.bfloat16()
    out["gemm 4096 bf16"] = 2 * 4096**3 / _best(lambda: ab @ bb) / 1e9
    for cin, cout in ((384, 128), (512, 512)):
        x = torch.randn(1, cin, 128, 128).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, 3, 3).contiguous(memory_format=torch.channels_last)
        flops = 2 * cin * cout * 9 * 128 * 128
        out[f"conv3x3 {cin}->{cout} @128^2 fp32 channels_last (oneDNN)"] = flops / _best(lambda: F.conv2d(x, w, padding=1)) / 1e9
        xb, wb = x.bfloat16(), w.bfloat16()
        out[f"conv3x3 {cin}->{cout} @128^2 bf16 channels_last (oneDNN)"] = flops / _best(lambda: F.conv2d(xb, wb, padding=1)) / 1e9
    return {k: round(v, 1) for k, v in out.items()}


def _category(name: str) -> str:
    if "cpp_fused" in name or "Compiled" in name or name.startswith(("graph_", "inductor")):
        return "compiled kernels"
    if "conv" in name or "mkldnn" in name:
        return "convolution"
    if "fft" in name:
        return "fft"
    if name.startswith("aten::") and any(k in name for k in ("copy", "clone", "contiguous", "_to_copy", "cat", "fill", "zero")):
        return "copies and fills"
    if name.startswith("aten::"):
        return "elementwise and other aten"
    return "autograd and Python"


def profile_mode(mode: str, size: int, iters: int) -> dict:
    device = torch.device("cpu")
    eager = big_lama()
    if mode == "official":
        model = eager.requires_grad_(False)
    elif mode == "ours_nchw":
        model = fuse_for_inference(eager.requires_grad_(False), channels_last=False)
    else:
        model = fused(eager, device)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "ours_bf16" else torch.autocast("cpu", enabled=False)
    image, mask = photo(size, 0.16)
    x = torch.cat([image * (1 - mask), mask], 1)
    with torch.no_grad(), autocast:
        local0, global0 = (f.float() for f in model.front(x))
    reference = pyrdown(image)
    known = (mask == 0).expand(-1, 3, -1, -1)
    coarse = (F.interpolate(mask, scale_factor=0.5, mode="bilinear") >= 1).expand(-1, 3, -1, -1)

    rear = torch.compile(model.rear, dynamic=False) if mode == "ours_compiled" else model.rear

    def iteration() -> None:
        local, global_ = local0.clone().requires_grad_(True), global0.clone().requires_grad_(True)
        with autocast:
            pred = rear((local, global_)).float()
        loss = (pred - image).abs()[known].mean() + (pyrdown(pred) - reference).abs()[coarse].mean()
        loss.backward()

    started = time.perf_counter()
    iteration()  # warm-up (and compilation)
    compile_seconds = None
    if mode == "ours_compiled":
        compile_seconds = time.perf_counter() - started
        iteration()  # the first calls after compiling can still be slow
    times, cpu = [], []
    for _ in range(iters):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        iteration()
        times.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - cpu_start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        iteration()
    split: dict[str, float] = {}
    for event in profiler.key_averages():
        key = _category(event.key)
        split[key] = split.get(key, 0.0) + event.self_cpu_time_total / 1e6
    profiled = sum(split.values())
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    rear = model.rear  # the same FLOPs compiled or not; count them eagerly
    with counter:
        iteration()
    flops = counter.get_total_flops()
    seconds = statistics.median(times)
    return {
        "compile_seconds": None if compile_seconds is None else round(compile_seconds, 1),
        "seconds_median": round(seconds, 3), "seconds_runs": [round(t, 2) for t in times],
        "cpu_seconds_median": round(statistics.median(cpu), 2),
        "profiled_seconds": round(profiled, 3),
        "share": {k: round(v / profiled, 3) for k, v in sorted(split.items(), key=lambda kv: -kv[1])},
        "conv_tflop": round(flops / 1e12, 3),
        "gflops_whole_iteration": round(flops / seconds / 1e9, 1),
        "gflops_in_convolutions": round(flops / (split["convolution"] / profiled * seconds) / 1e9, 1)
        if split.get("convolution") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["official", "ours"], choices=MODES)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"environment": {**environment(torch.device("cpu")), "isa": isa()}, "size": args.size,
               "derived_peak": derived_peak(), "measured_kernel_gflops": peak_gflops(), "modes": {}}
    for mode in args.modes:
        results["modes"][mode] = profile_mode(mode, args.size, args.iters)
        print(mode, json.dumps(results["modes"][mode]), file=sys.stderr)
    if "official" in results["modes"]:
        base = results["modes"]["official"]["seconds_median"]
        results["ratio_vs_official"] = {m: round(r["seconds_median"] / base, 3) for m, r in results["modes"].items()}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
