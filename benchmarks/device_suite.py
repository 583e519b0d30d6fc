"""One command, any device: plain and refinement time and peak memory, ours beside the official cost.

    python benchmarks/device_suite.py --device cuda --json suite_cuda.json   # the GPU plan (< 5 min on H100/H200)
    python benchmarks/device_suite.py --device cpu --plain 1024 --refine 1024 --n-iters 3 --json suite_cpu.json
    python benchmarks/device_suite.py --smoke                                # seconds: tiny generator (CI)

Everything runs in this one process on one set of random Big-LaMa weights (speed does not
depend on the values), and every case runs the official cost and ours back to back:

* plain: ``ffc.inpaint`` (symmetric pad, no_grad forward, composite: the official predict path)
  with the eager generator (official) and with the BatchNorm-folded one (ours, as the Load LaMa
  Model node loads it). bf16 = weights cast to bf16, as the loader's ``dtype`` does.
* refine: the paper's settings (n_iters 15, lr 0.002, min_side 512, max_scales 3); 1024 px
  with the default px_budget (2 scales), 2048 px with px_budget 4.2M (3 scales, full size).
  Official = :func:`common.official_refine` (frozen weights, eager model, autograd graph where
  refine_predict records one); ours = ``refine()`` with its defaults and the fused model.
  bf16 = autocast for both (the official code has no bf16 mode; its cost is measured under
  the same autocast). Ours is also run with checkpointing at the first refine size.
* speed options (``--options``; all of them by default on CUDA, none on CPU): ours at the first
  refine size in fp32 with one :class:`refine.SpeedOptions` field changed at a time, against
  ours with the defaults, both given the eager model so refine() fuses it itself (channels_last
  applies there). The time ratio and the largest hole-pixel change are the option's effect.

Peak memory is what the case needed above the resident models and inputs: the allocator's
``max_memory_allocated`` on CUDA (its ``max_memory_reserved`` beside it), the resident-set
high-water mark on CPU (freed heap trimmed first). Beside each refinement peak: the memory
estimator's prediction for its finest scale (``refine.estimate_refine_bytes``). On CUDA the
first run of every case shape is a warm-up (cuDNN, cuFFT plans) that is not reported. Our plan
(time profile, memory estimate) is made before the measurement, as a long-running process has it.

The GPU plan (the defaults on CUDA), and why it fits 5 minutes. UNMEASURED: no GPU has run it
yet; these are estimates from the paper's 4.56 s per 1024 px refinement (n_iters 15) on an RTX
A5000 and an H100/H200 being ~3x an A5000 in float32 convolutions.

* start-up: model build and fusion, CUDA context, our CPU-twin memory profiles (5 kinds;
  seconds each on a 16-core host) and time profiles: ~30 s;
* plain: 2 sizes x 2 dtypes x 2 modes = 8 cases, each twice (warm-up): < 10 s;
* refine fp32: 1024 official ~2 s, ours ~1.5 s, ours+checkpointing ~2 s; 2048 at px_budget
  4.2M (3 scales; ~4.2x the pixel-iterations of 1024's 2 scales) official ~8 s, ours ~6.5 s;
  plus warm-ups of 2 iterations (~0.2x): ~25 s. bf16: 4 cases, ~15 s;
* options at 1024 n_iters 15, 6 runs (defaults + 5, with warm-ups): ~12 s, plus the two
  ``torch.compile`` first runs (inductor per shape, 2 shapes each): 1-3 min, the unknown part,
  so they come last;
* total ~2.5-4.5 min. ``--budget-seconds`` (285 on CUDA) skips every case that would start
  later, so a slow compile costs its own rows, never the window.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measure, big_lama, device_from, environment, fused, gib, official_refine, photo, sync  # noqa: E402

from lama_multiscale_refine.ffc import LamaConfig, inpaint, padded_size  # noqa: E402
from lama_multiscale_refine.ffc.plan import inference_bytes  # noqa: E402
from lama_multiscale_refine.refine import RefineSettings, SpeedOptions, available_bytes, budget_size, estimate_refine_bytes, refine  # noqa: E402
from lama_multiscale_refine.refine import plan as make_plan  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
HOLE = 0.16  # a thick square hole in the middle, 16 % of the image
PAPER_N_ITERS = 15
REFINE_BUDGETS = {1024: 1_800_000, 2048: 4_200_000}  # the paper's default; the hires workflow's
OPTIONS = ("cudnn_benchmark", "tf32", "channels_last", "compile", "compile_reduce_overhead")
TINY = LamaConfig(ngf=8, n_blocks=2)


def _speed(option: str, device: torch.device) -> SpeedOptions:
    """The SpeedOptions that differ from the defaults in ``option`` only."""
    if option == "channels_last":  # the layout the device does not get by default
        return SpeedOptions(channels_last="off" if SpeedOptions().channels_last_for(device) else "on")
    return {
        "cudnn_benchmark": SpeedOptions(cudnn_benchmark=True),
        "tf32": SpeedOptions(tf32=True),
        "compile": SpeedOptions(compile="default"),
        "compile_reduce_overhead": SpeedOptions(compile="reduce-overhead"),
    }[option]


class Suite:
    """The models, inputs and results of one run."""

    def __init__(self, device: torch.device, config: LamaConfig, min_side: int, warmup: bool,
                 deadline: float | None = None) -> None:
        self.device, self.min_side, self.warmup, self.deadline = device, min_side, warmup, deadline
        self.eager = big_lama(config).to(device).requires_grad_(False)
        self.fused = fused(self.eager, device)
        self.low: dict[str, torch.nn.Module] = {}  # bf16 copies for plain inference
        self.rows: list[dict] = []
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def inputs(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if size not in self._inputs:
            self._inputs[size] = tuple(t.to(self.device) for t in photo(size, HOLE))
        return self._inputs[size]

    def plain_model(self, mode: str, dtype: str) -> torch.nn.Module:
        model = self.eager if mode == "official" else self.fused
        if dtype == "fp32":
            return model
        if mode not in self.low:
            self.low[mode] = fused(big_lama(self.eager.config).to(self.device), self.device).to(torch.bfloat16) \
                if mode == "ours" else big_lama(self.eager.config).to(self.device, torch.bfloat16).requires_grad_(False)
        return self.low[mode]

    def measure(self, row: dict, prepare: Callable[[int], Callable[[Callable[[dict], None]], torch.Tensor]],
                n_iters: int, estimate: int | None) -> torch.Tensor | None:
        """Time ``prepare(n_iters)(callback)`` (after a warm-up on CUDA) and append its row.

        ``prepare`` does what is not the case's own work (our plan, made once per process in a
        real run) outside the measurement; the callable it returns is what is measured.
        """
        self.rows.append(row)
        if self.deadline is not None and time.perf_counter() > self.deadline:
            row.update(skipped="time budget spent (--budget-seconds)")
            return None
        free = available_bytes(self.device)
        if estimate is not None and free is not None and estimate > 0.95 * free:
            row.update(skipped=f"estimate {gib(estimate)} GiB > free {gib(free)} GiB")
            return None
        try:
            if self.warmup:
                prepare(min(n_iters, 2))(lambda info: None)
            run = prepare(n_iters)
            stamps: list[tuple[int, float]] = []
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            with Measure(self.device) as m:
                result = run(lambda info: stamps.append((info["scale"], time.perf_counter())))
        except torch.cuda.OutOfMemoryError as err:  # recorded, and the suite goes on
            row.update(skipped=f"out of memory: {str(err).splitlines()[0]}")
            torch.cuda.empty_cache()
            return None
        row.update(seconds=round(m.seconds, 3), cpu_seconds=round(m.cpu_seconds, 2), peak_bytes=m.peak_bytes,
                   peak_gib=gib(m.peak_bytes, 3), reserved_gib=gib(m.peak_reserved_bytes, 3))
        if stamps:
            finest = max(s for s, _ in stamps)
            times = [t for s, t in stamps if s == finest]
            start = max([t for s, t in stamps if s < finest], default=m.start)
            row["seconds_per_finest_iteration"] = round((times[-1] - start) / len(times), 3)
        if estimate is not None:
            row["estimate_bytes"], row["estimate_gib"] = estimate, gib(estimate, 3)
            row["estimate_over_peak"] = round(estimate / max(m.peak_bytes, 1), 3)
        return result

    def warm_up(self, dtypes: list[str], size: int) -> None:
        """Run every mode once at a small size, so the first measured case pays no library start-up."""
        rows, warm, min_side, deadline = self.rows, self.warmup, self.min_side, self.deadline
        self.rows, self.warmup, self.min_side, self.deadline = [], False, size // 2, None  # two scales: backward too
        for dtype in dtypes:
            self.plain(size, dtype)
            self.refine(size, dtype, 2, checkpointed=dtype == "fp32")
        self.rows, self.warmup, self.min_side, self.deadline = rows, warm, min_side, deadline

    def plain(self, size: int, dtype: str) -> None:
        image, mask = self.inputs(size)
        results = {}
        for mode in ("official", "ours"):
            model = self.plain_model(mode, dtype)
            row = {"kind": "plain", "size": size, "dtype": dtype, "mode": mode}
            estimate = inference_bytes(model.config, size, size, next(model.parameters()).dtype, fused=mode == "ours")
            results[mode] = self.measure(row, lambda n, model=model: lambda cb: inpaint(model, image, mask), 1, estimate)
        self._compare(results, mask)

    def refine(self, size: int, dtype: str, n_iters: int, checkpointed: bool) -> None:
        image, mask = self.inputs(size)
        budget = REFINE_BUDGETS.get(size, max(REFINE_BUDGETS.values()))
        padded = padded_size(*budget_size(size, size, budget), self.eager.config.multiple)
        autocast = DTYPES[dtype]
        results = {}

        def official(n: int) -> Callable[[Callable[[dict], None]], torch.Tensor]:
            return lambda callback: official_refine(self.eager, image, mask, n_iters=n, px_budget=budget,
                                                    min_side=self.min_side, autocast_dtype=autocast,
                                                    callback=callback)[0]

        def ours(n: int, checkpointing: str = "off") -> Callable[[Callable[[dict], None]], torch.Tensor]:
            settings = RefineSettings(n_iters=n, min_side=self.min_side, px_budget=budget, precision=dtype,
                                      checkpointing=checkpointing, keep_budget_size=True)
            made = make_plan(self.fused, image, mask, settings)  # timed and estimated here, not measured
            return lambda callback: refine(self.fused, image, mask, plan=made, callback=callback)[0]

        base = {"kind": "refine", "size": size, "dtype": dtype, "n_iters": n_iters, "px_budget": budget}
        results["official"] = self.measure({**base, "mode": "official"}, official, n_iters,
                                           estimate_refine_bytes(self.eager, *padded, autocast_dtype=autocast).total)
        results["ours"] = self.measure({**base, "mode": "ours"}, ours, n_iters,
                                       estimate_refine_bytes(self.fused, *padded, autocast_dtype=autocast).total)
        if checkpointed:
            estimate = estimate_refine_bytes(self.fused, *padded, autocast_dtype=autocast, checkpoint_rear=True).total
            results["ours+checkpointing"] = self.measure(
                {**base, "mode": "ours+checkpointing"}, lambda n: ours(n, "on"), n_iters, estimate)
        self._compare(results, mask)

    def options(self, size: int, n_iters: int, options: list[str]) -> None:
        image, mask = self.inputs(size)
        budget = REFINE_BUDGETS.get(size, max(REFINE_BUDGETS.values()))
        results = {}
        for option in ["defaults", *options]:
            speed = SpeedOptions() if option == "defaults" else _speed(option, self.device)
            settings = RefineSettings(n_iters=n_iters, min_side=self.min_side, px_budget=budget, checkpointing="off",
                                      keep_budget_size=True, speed=speed)
            row = {"kind": "option", "size": size, "dtype": "fp32", "n_iters": n_iters, "mode": option,
                   "speed": {k: v for k, v in speed.__dict__.items() if v != getattr(SpeedOptions(), k)}}
            # channels_last needs refine() to fuse the model itself; the others get the fused model
            # (the same one every call, so a compiled rear is reused from the first call on).
            model = self.eager if option == "channels_last" else self.fused
            if option.startswith("compile"):  # the first call compiles: time it apart
                first = time.perf_counter()
                refine(model, image, mask, settings)
                sync(self.device)
                row["first_run_seconds"] = round(time.perf_counter() - first, 2)
            def prepare(n: int, settings: RefineSettings = settings,
                        model: torch.nn.Module = model) -> Callable[[Callable[[dict], None]], torch.Tensor]:
                made = make_plan(model, image, mask, RefineSettings(**{**settings.__dict__, "n_iters": n}))
                return lambda callback: refine(model, image, mask, plan=made, callback=callback)[0]

            results[option] = self.measure(row, prepare, n_iters, None)
        self._compare(results, mask, reference="defaults")

    def _compare(self, results: dict, mask: torch.Tensor, reference: str = "official") -> None:
        """Hole-pixel difference and time/memory ratio of every mode against ``reference``."""
        rows = self.rows[-len(results):]
        base = next(r for r in rows if r["mode"] == reference)
        hole = (mask > 0).expand(-1, 3, -1, -1)
        for row, (mode, result) in zip(rows, results.items()):
            if mode == reference or result is None or results[reference] is None or "seconds" not in base:
                continue
            if result.shape == results[reference].shape:
                diff = (result.float() - results[reference].float()).abs()[hole]
                row[f"hole_diff_vs_{reference}"] = {"max": float(diff.max()), "mean": float(diff.mean())}
            row[f"time_vs_{reference}"] = round(row["seconds"] / base["seconds"], 3)
            if base["peak_bytes"] > 0:
                row[f"memory_vs_{reference}"] = round(row["peak_bytes"] / base["peak_bytes"], 3)


def _goals(rows: list[dict], device: torch.device, weights_bytes: int) -> list[str]:
    """The issue's goal figures, checked against this run (meaningful on an H100/H200-class GPU)."""
    lines = []
    for row in rows:
        if row["kind"] != "refine" or row["mode"] != "ours" or "seconds" not in row:
            continue
        if row["size"] == 1024 and row["n_iters"] == PAPER_N_ITERS:
            ok = row["seconds"] <= 1.0
            lines.append(f"refine 1024 {row['dtype']} paper settings <= 1.0 s: {row['seconds']:.2f} s "
                         f"({'met' if ok else 'not met'})")
        if row["size"] == 2048 and device.type == "cuda":
            total = row["reserved_gib"] * 2**30 + weights_bytes
            lines.append(f"refine 2048 {row['dtype']} within 12 GB of VRAM: {total / 1e9:.1f} GB reserved + weights, "
                         f"CUDA context not counted ({'met' if total <= 12e9 else 'not met'})")
    return lines


def table(rows: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = f"{'case':<22}{'dtype':<6}{'mode':<24}{'time s':>9}{'s/iter':>8}{'peak GiB':>10}{'est GiB':>9}" \
           f"{'est/peak':>9}{'x ref time':>11}{'x ref mem':>10}{'max|diff|':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        case = f"{r['kind']} {r['size']}" + (f" n{r['n_iters']}" if "n_iters" in r else "")
        if "skipped" in r:
            lines.append(f"{case:<22}{r['dtype']:<6}{r['mode']:<24}  skipped: {r['skipped']}")
            continue
        ref = "official" if r["kind"] != "option" else "defaults"

        def fmt(value, spec):
            return format(value, spec) if value is not None else "-"

        diff = r.get(f"hole_diff_vs_{ref}", {}).get("max")
        lines.append(
            f"{case:<22}{r['dtype']:<6}{r['mode']:<24}{fmt(r['seconds'], '9.2f')}"
            f"{fmt(r.get('seconds_per_finest_iteration'), '8.2f'):>8}{fmt(r['peak_gib'], '10.3f')}"
            f"{fmt(r.get('estimate_gib'), '9.3f'):>9}{fmt(r.get('estimate_over_peak'), '9.2f'):>9}"
            f"{fmt(r.get(f'time_vs_{ref}'), '11.3f'):>11}{fmt(r.get(f'memory_vs_{ref}'), '10.3f'):>10}"
            f"{fmt(diff, '11.1e'):>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plain", type=int, nargs="*", default=[1024, 2048], help="plain sizes (px, square)")
    parser.add_argument("--refine", type=int, nargs="*", default=[1024, 2048], help="refinement sizes (px, square)")
    parser.add_argument("--n-iters", type=int, default=PAPER_N_ITERS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--options", nargs="*", choices=OPTIONS,
                        help="speed options to measure (default: all on CUDA, none elsewhere)")
    parser.add_argument("--no-checkpointing", action="store_true", help="skip the checkpointed refinement row")
    parser.add_argument("--smoke", action="store_true", help="tiny generator and sizes: a few seconds, for CI")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--budget-seconds", type=float,
                        help="skip the cases that would start after this many seconds (default: 285 on CUDA, "
                             "no limit elsewhere): the suite then fits a 5-minute GPU window whatever happens")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:

    device = device_from(args.device)
    config, min_side = LamaConfig(), 512
    if args.smoke:
        config, min_side = TINY, 32
        args.plain, args.refine, args.n_iters = [64], [64], 2
        args.options = ["channels_last"] if args.options is None else args.options
    options = args.options if args.options is not None else (list(OPTIONS) if device.type == "cuda" else [])
    started = time.perf_counter()
    torch.manual_seed(0)
    budget = args.budget_seconds if args.budget_seconds is not None else (285.0 if device.type == "cuda" else None)
    suite = Suite(device, config, min_side, warmup=device.type == "cuda",
                  deadline=None if budget is None else started + budget)
    suite.warm_up(args.dtypes, 64 if args.smoke else 128)
    for dtype in args.dtypes:
        for size in args.plain:
            suite.plain(size, dtype)
    for dtype in args.dtypes:
        for index, size in enumerate(args.refine):
            suite.refine(size, dtype, args.n_iters, checkpointed=index == 0 and dtype == "fp32" and not args.no_checkpointing)
    if options and args.refine:
        suite.options(args.refine[0], args.n_iters, options)
    weights = sum(p.numel() * p.element_size() for p in suite.fused.parameters())
    results = {"environment": {**environment(device), "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None},
               "config": {"ngf": config.ngf, "n_blocks": config.n_blocks, "min_side": min_side},
               "seconds_total": round(time.perf_counter() - started, 1), "rows": suite.rows,
               "goals": _goals(suite.rows, device, weights)}
    print(f"device suite on {results['environment'].get('gpu') or results['environment'].get('cpu')}, "
          f"torch {torch.__version__}, {results['seconds_total']} s")
    print(table(suite.rows))
    for line in results["goals"]:
        print("goal:", line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
