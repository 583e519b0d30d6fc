"""Multiscale refinement at 1024x1024: the official cost vs our faithful mode vs our fast options.

    python benchmarks/bench_refine.py                       # CPU, n_iters 3, 1 round
    python benchmarks/bench_refine.py --rounds 2 --modes official optimised checkpointed
    python benchmarks/bench_refine.py --size 2048 --n-iters 15 --device cuda --json out.json

Modes (each in its own worker process, interleaved round by round; Big-LaMa shapes with random
weights, loaded before the measurement starts):
  official        the baseline: the official refinement's cost. bin/predict.py calls
                  model.freeze() before refine_predict, so no weight gradients; eager model
                  with its BatchNorms; autograd records the rear at the coarsest scale and at
                  each scale's last forward, where refine_predict records it
  official_weight_grads
                  the same with the weights requiring grad (weight gradients computed and
                  accumulated): a cost the official code never pays; kept to show the old,
                  wrong baseline; not run by default
  optimised       our faithful default: BatchNorm-folded model (fused once at load, as the Load
                  LaMa Model node does), frozen weights, light backward, no graph where unused
  crop            optimised + crop_to_mask (--crop-margin, default 128) on an object-sized hole
                  (~5 % of the image)
  crop_baseline   optimised on the whole image with that same object-sized hole (crop's reference)
  early_stop      optimised + early_stop_tol 0.01 (patience 2)
  checkpointed    optimised + rear activation checkpointing
All use the paper's scale rule (min_side 512 -> 2 scales at 1024). n_iters is reduced so the run
takes minutes on a CPU: the time per iteration at the finest scale is what counts. Reports total
wall and CPU seconds, seconds per finest-scale iteration, peak memory above the loaded model
(RSS on CPU, allocated on CUDA), the memory estimator's prediction for the finest scale,
iterations run, and each mode's largest hole-pixel difference from the official mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Measure, big_lama, device_from, environment, fused, gib, memory_in_use, official_refine, photo, run_worker,
)

MODES = ("official", "official_weight_grads", "optimised", "checkpointed", "early_stop", "crop_baseline", "crop")
DEFAULT_MODES = ("official", "optimised", "checkpointed", "early_stop", "crop_baseline", "crop")
OBJECT_HOLE, LARGE_HOLE = 0.05, 0.16


def _settings(mode: str, n_iters: int, crop_margin: int = 128):
    from lama_multiscale_refine.refine import RefineSettings

    base = RefineSettings(n_iters=n_iters, checkpointing="off", px_budget=10**8)
    return {
        "official_weight_grads": RefineSettings(**{**base.__dict__, "fused": False, "freeze_weights": False}),
        "optimised": base,
        "checkpointed": RefineSettings(**{**base.__dict__, "checkpointing": "on"}),
        "early_stop": RefineSettings(**{**base.__dict__, "early_stop_tol": 0.01}),
        "crop_baseline": base,
        "crop": RefineSettings(**{**base.__dict__, "crop_to_mask": True, "crop_margin": crop_margin}),
    }[mode]


def worker(mode: str, size: int, n_iters: int, device_name: str, out_dir: str, crop_margin: int) -> dict:
    from lama_multiscale_refine.ffc import padded_size
    from lama_multiscale_refine.refine import estimate_refine_bytes, refine

    device = device_from(device_name)
    eager = big_lama().to(device)
    model = eager if mode.startswith("official") else fused(eager, device)
    del eager
    hole = OBJECT_HOLE if mode.startswith("crop") else LARGE_HOLE
    image, mask = (t.to(device) for t in photo(size, hole, centred_box=not mode.startswith("crop")))
    stamps: list[tuple[int, float]] = []
    record = lambda info: stamps.append((info["scale"], time.perf_counter()))  # noqa: E731
    baseline = memory_in_use(device)
    with Measure(device, baseline) as m:
        if mode == "official":
            result, scales = official_refine(model, image, mask, n_iters=n_iters, px_budget=10**8, callback=record)
            iterations, n_scales, regions = sum(s.iterations for s in scales), len(scales), 1
        else:
            result, reports = refine(model, image, mask, _settings(mode, n_iters, crop_margin), callback=record)
            region = reports[0].regions[0]
            iterations, n_scales, regions = reports[0].iterations, region.n_scales, len(reports[0].regions)
    finest = max(s for s, _ in stamps)
    finest_times = [t for s, t in stamps if s == finest]
    coarser_end = max(t for s, t in stamps if s < finest) if finest > 0 else m.start
    per_iteration = (finest_times[-1] - coarser_end) / len(finest_times)
    torch.save(result.cpu(), Path(out_dir) / f"{mode}.pt")
    estimate = None
    if not mode.startswith("crop"):
        estimate = estimate_refine_bytes(model, *padded_size(size, size, model.config.multiple),
                                         checkpoint_rear=mode == "checkpointed").total
    return {
        "seconds": m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "seconds_per_finest_iteration": per_iteration,
        "peak_bytes": m.peak_bytes,
        "estimate_bytes": estimate,
        "iterations": iterations,
        "n_scales": n_scales,
        "regions": regions,
    }


def _summary(samples: list[dict]) -> dict:
    row = {key: statistics.median(s[key] for s in samples)
           for key in ("seconds", "cpu_seconds", "seconds_per_finest_iteration")}
    row["seconds_min"] = min(s["seconds"] for s in samples)
    row["seconds_runs"] = [round(s["seconds"], 2) for s in samples]
    row["peak_gib"] = gib(max(s["peak_bytes"] for s in samples))
    estimate = samples[0]["estimate_bytes"]
    row["estimate_gib"] = None if estimate is None else gib(estimate)
    for key in ("iterations", "n_scales", "regions"):
        row[key] = samples[0][key]
    return row


def _ratios(rows: dict, over: str, base: str) -> dict:
    a, b = rows[over], rows[base]
    return {
        "time (median)": round(a["seconds"] / b["seconds"], 3),
        "time (min)": round(a["seconds_min"] / b["seconds_min"], 3),
        "cpu time": round(a["cpu_seconds"] / b["cpu_seconds"], 3),
        "per finest-scale iteration": round(a["seconds_per_finest_iteration"] / b["seconds_per_finest_iteration"], 3),
        "peak memory": round(a["peak_gib"] / b["peak_gib"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians and minima reported)")
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
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
    samples: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for round_index in range(args.rounds):
        for mode in args.modes:
            samples[mode].append(run_worker(Path(__file__), [mode, str(args.size), str(args.n_iters), str(device),
                                                             str(args.out_dir), str(args.crop_margin)]))
            print(f"[round {round_index + 1}] {mode}: {samples[mode][-1]['seconds']:.1f} s", file=sys.stderr)
    rows = {mode: _summary(runs) for mode, runs in samples.items()}

    _, large_mask = photo(args.size, LARGE_HOLE)
    _, object_mask = photo(args.size, OBJECT_HOLE, centred_box=False)
    for mode, row in rows.items():
        reference = {"crop": "crop_baseline", "crop_baseline": None}.get(mode, "official")
        if reference in rows and reference != mode:
            hole = (object_mask if mode == "crop" else large_mask).bool().expand(-1, 3, -1, -1)
            diff = (torch.load(args.out_dir / f"{mode}.pt") - torch.load(args.out_dir / f"{reference}.pt")).abs()[hole]
            row[f"hole_diff_vs_{reference}"] = {"max": float(diff.max()), "mean": float(diff.mean())}
    ratios = {}
    for mode in ("optimised", "checkpointed", "early_stop"):
        for base in ("official", "official_weight_grads"):
            if mode in rows and base in rows:
                ratios[f"{mode}/{base}"] = _ratios(rows, mode, base)
    if "official" in rows and "official_weight_grads" in rows:
        ratios["official/official_weight_grads"] = _ratios(rows, "official", "official_weight_grads")
    if "crop" in rows and "crop_baseline" in rows:
        ratios["crop speed-up vs whole image"] = round(rows["crop_baseline"]["seconds"] / rows["crop"]["seconds"], 2)
    results = {"environment": environment(device), "size": args.size, "n_iters": args.n_iters, "rounds": args.rounds,
               "crop_margin": args.crop_margin, "modes": rows, "ratios": ratios}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
