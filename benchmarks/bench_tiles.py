"""Full-resolution (tiled) refinement vs the budget size: peak memory, time and seams, 2K to 8K.

    python benchmarks/bench_tiles.py --sizes 2048x2048 3072x2048            # CPU, n_iters 2
    python benchmarks/bench_tiles.py --sizes 8192x6144 --modes tiled --json out.json --append

Each (size, mode) runs in its own worker process (peak memory is its own: the resident-set
high-water mark above the model and inputs), Big-LaMa shapes with random weights, a smooth
synthetic photo with a centred box hole of ~10 % of the image, paper mode with the default
px_budget (1.8 MP) and checkpointing off (so the memory does not depend on what else the
machine runs). Modes:

  tiled  ``full_resolution=True``: the pyramid up to the budget, the finer levels tile by tile
  off    ``full_resolution=False``: refined at the budget size, the fill upscaled (today's path)
  plain  plain LaMa (fused, as the node runs it), strategy ``original`` with the memory guard
         (free memory: this machine's, or ``--free-gib``): one full-size pass where it fits, else
         crops around the holes, else ``original_tiled`` (a global pass on a resized copy plus
         full-resolution tiles)

Reports seconds, peak memory, forwards, tiles and the finest working size, the plan's predicted
peak memory and time, and the seam statistic (mean gradient magnitude of the result's hole in a
band of +-4 px along the level-0 seams / elsewhere in the hole; for ``off`` measured on the same
lines, as a baseline: an untiled result has no seams there).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, big_lama, device_from, environment, gib, memory_in_use, run_worker  # noqa: E402

MODES = ("tiled", "off", "plain")
HOLE_FRACTION = 0.10
DEFAULT_SIZES = ("2048x2048", "3072x2048", "4096x4096", "8192x6144")


def scene(height: int, width: int, hole_fraction: float = HOLE_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth synthetic photo (1, 3, H, W) with fine stripes, and a centred box hole."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    image = torch.stack([
        (x + 0.1 * torch.sin(90 * y)).expand(height, width),
        (y + 0.1 * torch.sin(70 * x)).expand(height, width),
        0.5 + 0.4 * torch.sin(12 * x) * torch.cos(9 * y),
    ])[None].clamp(0, 1)
    box_h, box_w = int(height * hole_fraction**0.5), int(width * hole_fraction**0.5)
    top, left = (height - box_h) // 2, (width - box_w) // 2
    mask = torch.zeros(1, 1, height, width)
    mask[..., top : top + box_h, left : left + box_w] = 1
    return image, mask


def _settings(mode: str, n_iters: int):
    from lama_multiscale_refine.refine import RefineSettings

    return RefineSettings(n_iters=n_iters, checkpointing="off", full_resolution=mode == "tiled")


def plain_worker(height: int, width: int, device: torch.device, free_gib: float) -> dict:
    from lama_multiscale_refine.ffc import fuse_for_inference
    from lama_multiscale_refine.ffc.plan import plan_inpaint
    from lama_multiscale_refine.ffc.strategies import inpaint_with_strategy
    from lama_multiscale_refine.ffc.tiles import seam_statistic
    from lama_multiscale_refine.refine.memory import available_bytes

    model = fuse_for_inference(big_lama()).to(device)
    image, mask = (t.to(device) for t in scene(height, width))
    free = int(free_gib * 2**30) if free_gib > 0 else available_bytes(device)
    made = plan_inpaint(model, mask, strategy="original", free_bytes=free)
    units = made.images[0].units
    tiles = [u.tile for u in units if u.tile is not None]
    baseline = memory_in_use(device)
    with Measure(device, baseline) as m, torch.inference_mode():
        result = inpaint_with_strategy(model, image, mask, plan=made)
    seams = seam_statistic(result, mask, tiles)
    known = (mask == 0).expand_as(image)
    return {
        "seconds": m.seconds,
        "peak_bytes": m.peak_bytes,
        "input_bytes": image.numel() * image.element_size() + mask.numel() * mask.element_size(),
        "forwards": len(units),
        "planned_forwards": made.forwards,
        "strategy": made.images[0].strategy,
        "tiles": len(tiles),
        "work_size": list(units[0].work_size),
        "largest_unit": list(max((u.work_size for u in units), key=lambda hw: hw[0] * hw[1])),
        "predicted_peak_bytes": max(u.predicted_bytes for u in units),
        "predicted_seconds": math.nan,  # plain inference has no time prediction
        "plan": "; ".join(note.text for note in made.notes) or made.images[0].strategy,
        "seam_ratio": seams.ratio,
        "seam_band_grad": seams.band_mean,
        "hole_grad": seams.elsewhere_mean,
        "unmasked_identical": bool(torch.equal(result[known], image[known])),
        "output_size": list(result.shape[-2:]),
    }


def worker(mode: str, height: int, width: int, n_iters: int, device_name: str, free_gib: float = 0.0) -> dict:
    from lama_multiscale_refine.ffc.tiles import seam_statistic
    from lama_multiscale_refine.refine import plan, refine

    device = device_from(device_name)
    if mode == "plain":
        return plain_worker(height, width, device, free_gib)
    model = big_lama().to(device)
    image, mask = (t.to(device) for t in scene(height, width))
    settings = _settings(mode, n_iters)
    made = plan(model, image, mask, settings)  # times the model once (outside the measured block)
    tiled_plan = made if mode == "tiled" else plan(model, image, mask, _settings("tiled", n_iters))
    baseline = memory_in_use(device)
    with Measure(device, baseline) as m:
        result, reports = refine(model, image, mask, plan=made)
    region = reports[0].regions[0]
    finest = [u.tile for u in tiled_plan.units if u.tile is not None and u.tile.level == 0]
    seams = region.seams if region.seams is not None else seam_statistic(result, mask, finest)
    known = (mask == 0).expand_as(image)
    return {
        "seconds": m.seconds,
        "peak_bytes": m.peak_bytes,
        "input_bytes": image.numel() * image.element_size() + mask.numel() * mask.element_size(),
        "forwards": reports[0].iterations,
        "planned_forwards": made.forwards,
        "tiles": region.tiles,
        "work_size": list(region.work_size),
        # what bounds the peak beyond the full-size buffers: the largest tile or budget-size pyramid
        "largest_unit": list(max((u.work_size for u in made.units), key=lambda hw: hw[0] * hw[1])),
        "n_scales": region.n_scales,
        "predicted_peak_bytes": made.predicted_peak_bytes,
        "predicted_seconds": made.predicted_seconds,
        "plan": made.summary(),
        "seam_ratio": seams.ratio,
        "seam_band_grad": seams.band_mean,
        "hole_grad": seams.elsewhere_mean,
        "unmasked_identical": bool(torch.equal(result[known], image[known])),
        "output_size": list(result.shape[-2:]),
    }


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="WIDTHxHEIGHT")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--n-iters", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--append", action="store_true", help="add these cases to the cases already in --json")
    parser.add_argument("--free-gib", type=float, default=0.0,
                        help="plain mode: plan for this much free memory (0 = what this machine has)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, height, width, n_iters, device, free_gib = args.worker
        print(json.dumps(worker(mode, int(height), int(width), int(n_iters), device, float(free_gib))))
        return

    device = device_from(args.device)
    results = {"environment": environment(device), "n_iters": args.n_iters, "hole_fraction": HOLE_FRACTION,
               "plain_free_gib": args.free_gib or None, "cases": {}}
    if args.append and args.json and args.json.is_file():
        results["cases"] = json.loads(args.json.read_text())["cases"]
    for text in args.sizes:
        height, width = _size(text)
        for mode in args.modes:  # side by side: both modes of a size in the same invocation
            row = run_worker(Path(__file__), [mode, str(height), str(width), str(args.n_iters), str(device),
                                              str(args.free_gib)])
            row["peak_gib"] = gib(row.pop("peak_bytes"))
            row["predicted_peak_gib"] = gib(row.pop("predicted_peak_bytes"))
            row["input_gib"] = gib(row.pop("input_bytes"))
            row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            results["cases"][f"{width}x{height} {mode}"] = row
            print(f"{width}x{height} {mode}: {row['seconds']:.0f} s, {row['peak_gib']} GiB, seams {row['seam_ratio']}",
                  file=sys.stderr)
            if args.json:  # after every case: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
