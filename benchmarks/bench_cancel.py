"""Cancel latency: from the moment the cancel flag is set to the moment the work has stopped.

    flock /tmp/heavy.lock python3 benchmarks/bench_cancel.py            # 1024 x 1024, CPU

Big-LaMa shapes with random weights (fused, as refine() runs it) on a synthetic photo. A timer
thread sets a flag at chosen moments of the finest scale's optimisation (so that the cancel
lands in forward and in backward passes alike) and of a plain full-size forward; ``cancel()``
only reads the flag. Latency = the exception reaching the caller minus the flag being set.
Also reported: the longest gap between two cancel polls during an uncancelled iteration (the
worst case the latency can reach).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import big_lama, environment, photo  # noqa: E402


class _Stop(Exception):
    """Ends a measuring run from the callback."""


def _stop_at(scale: int, iteration: int, stamps: list[float] | None = None):
    def callback(info: dict) -> None:
        if stamps is not None:
            stamps.append(time.perf_counter())
        if info["scale"] == scale and info["iteration"] == iteration:
            raise _Stop

    return callback


def _inside_each_pass(polls: list[tuple[str, float]], finest: float, begin: float) -> list[float]:
    """Delays (from ``begin``) in the middle of the finest scale's forward and backward passes."""
    runs: list[tuple[str, float, float]] = []  # (pass, first poll, last poll)
    for name, at in polls:
        kind = "backward" if name == "on_gradient" else "forward"
        if at < finest:
            continue
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], at)
        else:
            runs.append((kind, at, at))
    chosen = [r for r in runs if r[2] - r[1] > 1.0][:6]
    return [round((first + last) / 2 - begin, 2) for _, first, last in chosen]


def _cancel_after(delay: float, work) -> dict:
    flag = threading.Event()
    stamp: dict = {}

    def fire() -> None:
        stamp["set"] = time.perf_counter()
        flag.set()

    phases: list[str] = []

    def cancel() -> bool:
        if flag.is_set():
            phases.append(sys._getframe(2).f_code.co_name)  # "before" = forward, "on_gradient" = backward
            return True
        return False

    from lama_multiscale_refine.ffc import Cancelled

    timer = threading.Timer(delay, fire)
    timer.start()
    try:
        work(cancel)
        raise RuntimeError("the work finished before the flag was set; use a shorter delay")
    except Cancelled:
        stopped = time.perf_counter()
    timer.cancel()
    return {"delay_s": delay, "latency_s": round(stopped - stamp["set"], 3),
            "stopped_in": {"before": "forward", "on_gradient": "backward"}.get(phases[0], phases[0]) if phases else "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delays", type=float, nargs="+", default=None,
                        help="seconds from the call at which the flag is set (default: the middle of each of the "
                             "finest scale's first forward and backward passes)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from lama_multiscale_refine.ffc import fuse_for_inference, inpaint
    from lama_multiscale_refine.refine import RefineSettings, plan, refine

    model = fuse_for_inference(big_lama(), channels_last=True).eval()
    image, mask = photo(args.size, 0.16)
    settings = RefineSettings(n_iters=15, n_scales=2, px_budget=10**8, checkpointing="off")
    made = plan(model, image, mask, settings)

    # Where the finest scale starts: the coarsest scale's one forward ends with the first callback.
    stamps: list[float] = []
    begin = time.perf_counter()
    try:
        refine(model, image, mask, plan=made, callback=_stop_at(1, 0, stamps))
    except _Stop:
        pass
    finest_start = stamps[0] - begin
    # The polls during two full iterations (forward and backward) of the finest scale: their gaps,
    # and where forward and backward passes run, so that the flag can be set inside each.
    polls: list[tuple[str, float]] = []

    def record() -> bool:
        polls.append((sys._getframe(2).f_code.co_name, time.perf_counter()))
        return False

    begin = time.perf_counter()
    try:
        refine(model, image, mask, plan=made, callback=_stop_at(1, 2), cancel=record)
    except _Stop:
        pass
    gaps = [b - a for (_, a), (_, b) in zip(polls, polls[1:]) if a - begin >= finest_start]
    backward_gaps = [b - a for (_, a), (name, b) in zip(polls, polls[1:])
                     if a - begin >= finest_start and name == "on_gradient"]
    delays = args.delays or _inside_each_pass(polls, begin + finest_start, begin)

    rows = []
    for delay in delays:
        rows.append({"what": "refine", **_cancel_after(delay, lambda c: refine(model, image, mask, plan=made, cancel=c))})
        print(rows[-1], file=sys.stderr)
    with torch.inference_mode():
        for delay in (1.0, 5.0, 9.0):
            rows.append({"what": "plain forward", **_cancel_after(delay, lambda c: inpaint(model, image, mask, cancel=c))})
            print(rows[-1], file=sys.stderr)
    result = {"environment": environment(torch.device("cpu")), "size": args.size, "forwards_planned": made.forwards,
              "finest_scale_starts_s": round(finest_start, 2),
              "longest_gap_between_polls_s": round(max(gaps), 3),
              "longest_gap_in_backward_s": round(max(backward_gaps), 3) if backward_gaps else None, "median_gap_s": round(sorted(gaps)[len(gaps) // 2], 4),
              "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
