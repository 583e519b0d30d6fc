"""Multiscale refinement at 1024x1024: straightforward vs optimised faithful mode vs fast options.

    python benchmarks/bench_refine.py                       # CPU, n_iters 3, 1 round
    python benchmarks/bench_refine.py --size 2048 --n-iters 15 --device cuda --json out.json

Modes (each in its own worker process; Big-LaMa shapes with random weights):
  straightforward  the official cost: eager generator, weights requiring grad (weight gradients
                   computed and accumulated), autograd graph at the coarsest scale and last forward
  optimised        our faithful mode: BatchNorm-folded rear, frozen weights, no graph where unused
  crop             optimised + crop_to_mask (--crop-margin, default 128) on an object-sized hole
                   (~5 % of the image)
  crop_baseline    optimised on the whole image with that same object-sized hole (crop's reference)
  early_stop       optimised + early_stop_tol 0.01 (patience 2)
  checkpointed     optimised + rear activation checkpointing (memory for time)
The first four use the paper's scale rule (min_side 512 -> 2 scales at 1024). n_iters is reduced
so the run takes minutes on a CPU: the time per iteration at the finest scale is what counts.
Reports total seconds, seconds per finest-scale iteration, peak memory above the loaded model,
iterations run, and the largest hole-pixel difference of each mode from straightforward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, big_lama, device_from, environment, gib, memory_in_use, photo, run_worker  # noqa: E402

MODES = ("straightforward", "optimised", "checkpointed", "early_stop", "crop_baseline", "crop")
OBJECT_HOLE, LARGE_HOLE = 0.05, 0.16


def _settings(mode: str, n_iters: int, crop_margin: int = 128):
    from lama_multiscale_refine.refine import RefineSettings

    base = RefineSettings(n_iters=n_iters, checkpointing="off", px_budget=10**8)
    return {
        "straightforward": RefineSettings(**{**base.__dict__, "fused": False, "freeze_weights": False}),
        "optimised": base,
        "checkpointed": RefineSettings(**{**base.__dict__, "checkpointing": "on"}),
        "early_stop": RefineSettings(**{**base.__dict__, "early_stop_tol": 0.01}),
        "crop_baseline": base,
        "crop": RefineSettings(**{**base.__dict__, "crop_to_mask": True, "crop_margin": crop_margin}),
    }[mode]


def worker(mode: str, size: int, n_iters: int, device_name: str, out_dir: str, crop_margin: int) -> dict:
    from lama_multiscale_refine.refine import refine

    device = device_from(device_name)
    model = big_lama().to(device)
    hole = OBJECT_HOLE if mode.startswith("crop") else LARGE_HOLE
    image, mask = (t.to(device) for t in photo(size, hole, centred_box=not mode.startswith("crop")))
    stamps: list[tuple[int, float]] = []
    baseline = memory_in_use(device)
    with Measure(device, baseline) as m:
        result, reports = refine(model, image, mask, _settings(mode, n_iters, crop_margin),
                                 callback=lambda info: stamps.append((info["scale"], time.perf_counter())))
    finest = max(s for s, _ in stamps)
    finest_times = [t for s, t in stamps if s == finest]
    coarser_end = max(t for s, t in stamps if s < finest) if finest > 0 else m.start
    per_iteration = (finest_times[-1] - coarser_end) / len(finest_times)
    torch.save(result.cpu(), Path(out_dir) / f"{mode}.pt")
    return {
        "seconds": m.seconds,
        "seconds_per_finest_iteration": per_iteration,
        "peak_bytes": m.peak_bytes,
        "iterations": reports[0].iterations,
        "n_scales": reports[0].regions[0].n_scales,
        "regions": len(reports[0].regions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-iters", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--crop-margin", type=int, default=128, help="context around the hole in crop mode")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, size, n_iters, device, out_dir, crop_margin = args.worker
        print(json.dumps(worker(mode, int(size), int(n_iters), device, out_dir, int(crop_margin))))
        return

    device = device_from(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for mode in args.modes:
        rows[mode] = run_worker(Path(__file__), [mode, str(args.size), str(args.n_iters), str(device), str(args.out_dir),
                                                 str(args.crop_margin)])
        print(f"{mode}: {rows[mode]['seconds']:.1f} s", file=sys.stderr)

    _, large_mask = photo(args.size, LARGE_HOLE)
    _, object_mask = photo(args.size, OBJECT_HOLE, centred_box=False)
    for mode, row in rows.items():
        row["peak_gib"] = gib(row.pop("peak_bytes"))
        reference = {"crop": "crop_baseline", "crop_baseline": None}.get(mode, "straightforward")
        if reference in rows and reference != mode:
            hole = (object_mask if mode == "crop" else large_mask).bool().expand(-1, 3, -1, -1)
            diff = (torch.load(args.out_dir / f"{mode}.pt") - torch.load(args.out_dir / f"{reference}.pt")).abs()[hole]
            row[f"hole_diff_vs_{reference}"] = {"max": float(diff.max()), "mean": float(diff.mean())}
    ratios = {}
    if "straightforward" in rows and "optimised" in rows:
        s, o = rows["straightforward"], rows["optimised"]
        ratios["optimised/straightforward time"] = round(o["seconds"] / s["seconds"], 3)
        ratios["optimised/straightforward per-iteration time"] = round(
            o["seconds_per_finest_iteration"] / s["seconds_per_finest_iteration"], 3)
        ratios["optimised/straightforward peak memory"] = round(o["peak_gib"] / s["peak_gib"], 3)
    if "crop" in rows and "crop_baseline" in rows:
        ratios["crop speed-up vs whole image"] = round(rows["crop_baseline"]["seconds"] / rows["crop"]["seconds"], 2)
    results = {"environment": environment(device), "size": args.size, "n_iters": args.n_iters,
               "crop_margin": args.crop_margin, "modes": rows, "ratios": ratios}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
