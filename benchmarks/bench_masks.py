"""Mask operations before and after issue 9, same run: disk erosion/dilation and hole boxes.

    python benchmarks/bench_masks.py                       # everything (about 10 min on 2 cores)
    python benchmarks/bench_masks.py --only morphology --sizes 1024x1024 --kernels 15 63
    python benchmarks/bench_masks.py --json out.json

morphology  ``old``: kornia's erosion with the ellipse kernel and the geodesic border, engine
            "shift", as ``ffc.masks.erode`` ran it before with kornia >= 0.8; ``old_banded``: its
            path for older kornia ("unfold" in bands of 2^20 pixels, a band x size^2 window tensor
            each; run up to ``--banded-max-kernel``: 63 would need 16 GiB per band); ``new``:
            ``ffc.masks.erode``. Each in a fresh worker process (time and peak memory above the
            input). The old cost is ``size ** 2`` passes over the image: where that is too long
            (``--old-full-limit``) it is measured on a band of 2^20 pixels and scaled by the image's
            rows, and reported as estimated. That is a lower bound: a band stays in the CPU's
            caches, the whole image does not (``band_estimate_check`` compares both on the largest
            case run in full: 20.4 s from the band against 207.6 s measured for 4000x6000 k63, see
            reference/masks_cpu.json). Also: a checksum of the outputs where the old path ran in
            full, and the longest time ``new`` takes to stop after ``cancel()`` starts returning True.
boxes       ``old``: a copy of the previous ``hole_boxes`` (tests/mask_references.py); ``new``:
            ``ffc.masks.hole_boxes``; on a snake mask (one hole along a long path) and on dots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, environment, gib, memory_in_use, run_worker, summarize  # noqa: E402


KERNELS = (15, 63, 255)
SIZES = ("1024x1024", "4000x6000")


def _mask(height: int, width: int) -> torch.Tensor:
    return (torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def morphology_worker(mode: str, height: int, width: int, kernel: int, band_rows: int) -> dict:
    from mask_references import kornia_morphology, old_banded_morphology

    from lama_multiscale_refine.ffc.masks import erode

    rows = band_rows or height
    mask = _mask(height, width)[..., :rows, :].clone()
    device = torch.device("cpu")
    if mode == "old":
        def run(x: torch.Tensor) -> torch.Tensor:
            return kornia_morphology(x, kernel, dilation=False, crop=False, engine="shift")
    elif mode == "old_banded":
        def run(x: torch.Tensor) -> torch.Tensor:
            return old_banded_morphology(x, kernel, dilation=False)
    else:
        def run(x: torch.Tensor) -> torch.Tensor:
            return erode(x, kernel)
    baseline = memory_in_use(device)
    for _ in range(3):  # warm-up: kernels, allocator, and the thread pool (slow to wake on a busy machine)
        run(mask[..., : max(1, min(rows // 16, 64)), :])
    with Measure(device, baseline) as m:
        out = run(mask)
    result = {"seconds": m.seconds * height / rows, "peak_bytes": None if band_rows else m.peak_bytes,
              "estimated": bool(band_rows), "digest": None if band_rows else _digest(out)}
    if mode == "new" and not band_rows:
        result["cancel_latency_s"] = max(_cancel_latency(mask, kernel, after=m.seconds * f) for f in (0.3, 0.6))
    return result


def _cancel_latency(mask: torch.Tensor, kernel: int, after: float) -> float:
    """Seconds from the moment cancel() starts returning True (``after`` s in) to the Cancelled exception."""
    from lama_multiscale_refine.ffc import Cancelled
    from lama_multiscale_refine.ffc.masks import erode

    start = time.perf_counter()
    try:
        erode(mask, kernel, cancel=lambda: time.perf_counter() - start >= after)
    except Cancelled:
        return time.perf_counter() - start - after
    raise RuntimeError("erode finished without seeing the cancel")


def boxes_worker(mode: str, case: str, margin: str) -> dict:
    from mask_references import dots, old_hole_boxes, snake

    from lama_multiscale_refine.ffc.masks import hole_boxes

    kind, size = case.split("_")
    hole = snake(int(size)) if kind == "snake" else dots(4000, 6000, int(size))
    function = old_hole_boxes if mode == "old" else hole_boxes
    function(torch.zeros(64, 64), int(margin))  # warm-up
    start = time.perf_counter()
    boxes = function(hole, int(margin))
    return {"seconds": time.perf_counter() - start, "boxes": len(boxes), "digest": hashlib.sha256(repr(boxes).encode()).hexdigest()[:16]}


def _band_rows(width: int) -> int:
    return -(-(1 << 20) // width)


def _morphology(args, results: dict) -> None:
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        for kernel in args.kernels:
            band = _band_rows(width) if kernel * kernel * height * width > args.old_full_limit else 0
            old = run_worker(Path(__file__), ["morphology", "old", str(height), str(width), str(kernel), str(band)])
            banded = None
            if kernel <= args.banded_max_kernel:
                banded = run_worker(Path(__file__), ["morphology", "old_banded", str(height), str(width), str(kernel), "0"])
            new = [run_worker(Path(__file__), ["morphology", "new", str(height), str(width), str(kernel), "0"])
                   for _ in range(args.rounds)]
            row = {
                "old_seconds": round(old["seconds"], 3), "old_estimated_from_band": old["estimated"],
                "old_peak_gib": None if old["peak_bytes"] is None else gib(old["peak_bytes"]),
                "new": summarize([r["seconds"] for r in new]), "new_peak_gib": gib(max(r["peak_bytes"] for r in new)),
                "old_over_new": round(old["seconds"] / min(r["seconds"] for r in new), 1),
                "same_output": None if old["digest"] is None else old["digest"] == new[0]["digest"],
                "new_cancel_latency_s": round(max(r["cancel_latency_s"] for r in new), 4),
            }
            if banded is not None:
                row.update(old_banded_seconds=round(banded["seconds"], 3), old_banded_peak_gib=gib(banded["peak_bytes"]),
                           old_banded_over_new=round(banded["seconds"] / min(r["seconds"] for r in new), 1),
                           old_banded_same_output=banded["digest"] == new[0]["digest"])
            results["morphology"][f"{size} k{kernel}"] = row
            print(f"[morphology {size} k{kernel}] old {row['old_seconds']:.2f} s{' (est.)' if band else ''}, "
                  f"new {row['new']['median']:.2f} s, x{row['old_over_new']}", file=sys.stderr)
    # The band scaling, checked on the largest case where the old path ran in full.
    measured = [key for key, row in results["morphology"].items() if not row["old_estimated_from_band"]]
    if measured:
        key = max(measured, key=lambda k: int(k.split("x")[0]) * int(k.split("x")[1].split()[0]) * int(k.split("k")[1]) ** 2)
        (height, width), kernel = (int(v) for v in key.split()[0].split("x")), key.split("k")[1]
        check = run_worker(Path(__file__), ["morphology", "old", str(height), str(width), kernel, str(_band_rows(width))])
        results["band_estimate_check"] = {"case": key, "measured_s": results["morphology"][key]["old_seconds"],
                                          "estimated_from_band_s": round(check["seconds"], 3)}


def _boxes(args, results: dict) -> None:
    for case in args.box_cases:
        case, margin = case.split("@")
        old = run_worker(Path(__file__), ["boxes", "old", case, margin])
        new = run_worker(Path(__file__), ["boxes", "new", case, margin])
        results["boxes"][f"{case} margin {margin}"] = {"old_seconds": round(old["seconds"], 3), "new_seconds": round(new["seconds"], 4),
                                  "old_over_new": round(old["seconds"] / new["seconds"], 1), "boxes": new["boxes"],
                                  "same_boxes": old["digest"] == new["digest"]}
        print(f"[boxes {case} margin {margin}] old {old['seconds']:.2f} s, new {new['seconds']:.3f} s, {new['boxes']} boxes",
              file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("morphology", "boxes"))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="HxW")
    parser.add_argument("--kernels", type=int, nargs="+", default=list(KERNELS))
    parser.add_argument("--rounds", type=int, default=3, help="runs of the new path (the old one runs once)")
    parser.add_argument("--old-full-limit", type=float, default=1e11,
                        help="measure the old morphology in full when kernel^2 x pixels is at most this")
    parser.add_argument("--banded-max-kernel", type=int, default=15)
    parser.add_argument("--box-cases", nargs="+", default=["snake_2048@128", "dots_200@0", "dots_200@128"],
                        help="snake_<side>@<margin> (a one-hole snake, side^2 px) or dots_<n>@<margin> "
                             "(n 6 px dots on 4000x6000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "morphology":
            print(json.dumps(morphology_worker(rest[0], *(int(v) for v in rest[1:]))))
        else:
            print(json.dumps(boxes_worker(*rest)))
        return

    results = {"environment": environment(torch.device("cpu")), "morphology": {}, "boxes": {}}
    if args.only in (None, "morphology"):
        _morphology(args, results)
    if args.only in (None, "boxes"):
        _boxes(args, results)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
