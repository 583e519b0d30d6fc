"""Predicted vs measured: the refinement plan's time and peak memory against a real run.

    flock /tmp/heavy.lock python3 benchmarks/bench_plan.py                  # 512 1024 1536, n_iters 3
    python3 benchmarks/bench_plan.py --sizes 768 --n-iters 5 --json out.json

Each size runs in a fresh worker process (so its peak memory is its own): Big-LaMa shapes with
random weights, fused as refine() runs it, a synthetic photo with a centred square hole of 16 %.
The worker first makes the plan (`refine.plan`: the time profile is measured there, once per
process; its cost is reported as `calibration_seconds`), then runs `refine(plan=...)` and
measures wall time and peak memory above the loaded model. Settings: paper mode, 2 scales,
`n_iters` as given, the full size refined (px_budget 10^8), checkpointing as the plan decides.
Reports predicted and measured side by side, their ratio (measured / predicted), and the cores
the run really had (CPU seconds per wall second): on a shared machine, a run that had fewer cores
than the calibration did is slower than predicted for that reason alone.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, big_lama, device_from, environment, gib, memory_in_use, photo, run_worker  # noqa: E402

HOLE = 0.16


def worker(size: int, n_iters: int, device_name: str) -> dict:
    from lama_multiscale_refine.ffc import fuse_for_inference
    from lama_multiscale_refine.refine import RefineSettings, plan, refine

    device = device_from(device_name)
    model = fuse_for_inference(big_lama().to(device), channels_last=device.type == "cpu").eval()
    image, mask = (t.to(device) for t in photo(size, HOLE))
    settings = RefineSettings(n_iters=n_iters, n_scales=2, px_budget=10**8)
    started = time.perf_counter()
    made = plan(model, image, mask, settings)
    calibration = time.perf_counter() - started
    if device.type == "cpu":  # hand the calibration's freed memory back, so the peak below is the run's own
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    forwards: list[float] = []
    baseline = memory_in_use(device)
    cpu_started = time.process_time()
    with Measure(device, baseline) as m:
        _, reports = refine(model, image, mask, plan=made, callback=lambda info: forwards.append(time.perf_counter()))
    cores_used = (time.process_time() - cpu_started) / m.seconds
    (unit,) = made.units
    return {
        "size": size,
        "summary": made.summary(),
        "scales": [list(s) for s in unit.scales],
        "checkpointed": unit.checkpoint_rear,
        "forwards_planned": made.forwards,
        "forwards_run": len(forwards),
        "calibration_seconds": round(calibration, 2),
        # CPU seconds per wall second during the run: below the thread count, other work shared the cores.
        "cores_used": round(cores_used, 2),
        "predicted_seconds": round(made.predicted_seconds, 2),
        "measured_seconds": round(m.seconds, 2),
        "time_ratio": round(m.seconds / made.predicted_seconds, 3),
        "predicted_peak_gib": gib(made.predicted_peak_bytes),
        "measured_peak_gib": gib(m.peak_bytes),
        "memory_ratio": round(m.peak_bytes / made.predicted_peak_bytes, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1536])
    parser.add_argument("--n-iters", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        size, n_iters, device = args.worker
        print(json.dumps(worker(int(size), int(n_iters), device)))
        return

    device = device_from(args.device)
    rows = []
    for size in args.sizes:
        row = run_worker(Path(__file__), [str(size), str(args.n_iters), str(device)])
        rows.append(row)
        print(f"{size}: predicted {row['predicted_seconds']:.1f} s / {row['predicted_peak_gib']} GiB, measured "
              f"{row['measured_seconds']:.1f} s / {row['measured_peak_gib']} GiB", file=sys.stderr)
    result = {"environment": environment(device), "n_iters": args.n_iters, "hole_fraction": HOLE, "rows": rows}
    print(f"{'size':>6} {'forwards':>9} {'pred s':>8} {'meas s':>8} {'ratio':>6} {'cores':>6} {'pred GiB':>9} "
          f"{'meas GiB':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['size']:>6} {r['forwards_planned']:>4}/{r['forwards_run']:<4} {r['predicted_seconds']:>8.1f} "
              f"{r['measured_seconds']:>8.1f} {r['time_ratio']:>6.2f} {r['cores_used']:>6.2f} "
              f"{r['predicted_peak_gib']:>9.2f} {r['measured_peak_gib']:>9.2f} {r['memory_ratio']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
