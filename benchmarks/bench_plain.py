"""Plain Big-LaMa forward: straightforward eager paths vs the fast path, same run.

    python benchmarks/bench_plain.py                 # 512 and 1024, 3 rounds, CPU
    python benchmarks/bench_plain.py --sizes 512 --rounds 5 --device cuda --json out.json

Modes (each in its own worker process, interleaved round by round):
  eager_autograd  model(x) on a module whose weights require grad (a naive call records a graph)
  eager_no_grad   the same under torch.no_grad(), as the official predict script runs it
  fast            ffc.fuse_for_inference(model) (BatchNorm folded, merged convs, channels_last
                  on CPU) under torch.inference_mode()
Reports median/min seconds, peak memory above the loaded model and input (activations and
workspace), and fast/eager ratios, plus
the largest difference between the fast and the eager output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, big_lama, device_from, environment, gib, memory_in_use, run_worker, summarize  # noqa: E402

MODES = ("eager_autograd", "eager_no_grad", "fast")


def worker(mode: str, size: int, device_name: str) -> dict:
    from lama_multiscale_refine.ffc import fuse_for_inference

    device = device_from(device_name)
    model = big_lama().to(device)
    x = torch.rand(1, 4, size, size, device=device)
    if mode == "fast":
        model = fuse_for_inference(model.requires_grad_(False), channels_last=device.type == "cpu")
        context = torch.inference_mode
    elif mode == "eager_no_grad":
        context = torch.no_grad
    else:
        context = torch.enable_grad
    baseline = memory_in_use(device)  # the mode's model (the fused copy alone for "fast") and input
    with context():
        model(torch.rand(1, 4, 256, 256, device=device))  # warm-up: kernels, allocator
        with Measure(device, baseline) as m:
            out = model(x)
    reference_diff = None
    if mode == "fast":
        torch.manual_seed(0)
        eager = big_lama().to(device).requires_grad_(False)
        with torch.no_grad():
            reference_diff = float((eager(x) - out).abs().max())
    return {"seconds": m.seconds, "peak_bytes": m.peak_bytes, "max_abs_diff_vs_eager": reference_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "SIZE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.worker[2])))
        return

    device = device_from(args.device)
    results = {"environment": environment(device), "sizes": {}}
    for size in args.sizes:
        samples: dict[str, list[dict]] = {m: [] for m in MODES}
        for round_index in range(args.rounds):
            for mode in MODES:
                samples[mode].append(run_worker(Path(__file__), [mode, str(size), str(device)]))
                print(f"[{size}px round {round_index + 1}] {mode}: {samples[mode][-1]['seconds']:.2f} s", file=sys.stderr)
        row = {}
        for mode in MODES:
            row[mode] = summarize([s["seconds"] for s in samples[mode]])
            row[mode]["peak_gib"] = gib(max(s["peak_bytes"] for s in samples[mode]))
        row["fast_vs_eager_no_grad"] = round(row["fast"]["median"] / row["eager_no_grad"]["median"], 3)
        row["fast_vs_eager_autograd"] = round(row["fast"]["median"] / row["eager_autograd"]["median"], 3)
        row["fast_max_abs_diff"] = max(s["max_abs_diff_vs_eager"] for s in samples["fast"])
        results["sizes"][size] = row

    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("\nsize  mode             median s   min s   peak GiB", file=sys.stderr)
    for size, row in results["sizes"].items():
        for mode in MODES:
            r = row[mode]
            print(f"{size:<5} {mode:<16} {r['median']:>8.2f} {r['min']:>7.2f} {r['peak_gib']:>9.2f}", file=sys.stderr)
        print(f"{size:<5} fast/no_grad {row['fast_vs_eager_no_grad']}  fast/autograd {row['fast_vs_eager_autograd']}  "
              f"max |fast - eager| {row['fast_max_abs_diff']:.1e}", file=sys.stderr)


if __name__ == "__main__":
    main()
