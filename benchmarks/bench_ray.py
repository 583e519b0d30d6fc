"""The command line's batch: local vs Ray workers, same images, same run.

    python benchmarks/bench_ray.py                                  # tiny + Big-LaMa, 512 px, 2 workers, CPU
    python benchmarks/bench_ray.py --weights tiny --images 200 --modes local local_1thread ray
    python benchmarks/bench_ray.py --weights big --images 4 --size 256 --mode refine --min-side 128 \
        --modes local_1thread ray                                   # refinement: same bytes on Ray
    python benchmarks/bench_ray.py --ray HEAD:6379 --device cuda --workers 8 --images 2000 \\
        --weights big --data /shared/lama-bench --json ray.json     # a multi-GPU cluster

Modes (each in its own fresh process, one after the other, on the same generated pairs):
  local          lama_cli's local batch (run_batch), torch's default threads
  local_1thread  the same with one torch thread: what each Ray worker uses (--ray-cpus-per-worker 1),
                 so its outputs must be byte-identical to the Ray run's
  ray            run_batch_on_ray: a new local Ray instance (or --ray ADDRESS), --workers workers
Weights: "tiny" is the golden fixture generator (ngf 16, 3 blocks); "big" is a Big-LaMa-shaped
generator with random weights (speed does not depend on the values) saved as safetensors.

Reported per mode: wall time from the start (Ray: start or join, workers up, models loaded) to the
last output; steady images/s, measured from the w-th finished image to the last (w = workers, 1
locally) so that start-up is left out; per-image compute (the workers' own time in read -> inpaint
-> write, averaged over those same images); overhead per image = steady wall x workers / images -
compute (scheduling, transfers, idle workers); peak resident memory of each process (the local
process; each Ray worker and the Ray driver). Also how many outputs are byte-identical to
local_1thread's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, big_lama, environment, device_from, peak_rss_bytes, run_worker  # noqa: E402

MODES = ("local", "local_1thread", "ray")
FIXTURES = Path(os.environ.get("LAMA_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def make_pairs(folder: Path, count: int, size: int) -> None:
    """``count`` smooth, slightly noisy images of ``size`` px with a centred box hole (25%)."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, 0.5 + 0.5 * np.sin(12 * x) * np.cos(9 * y)], axis=-1)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    for index in range(count):
        noise = np.random.default_rng(index).normal(0.0, 0.03, base.shape)
        pixels = (np.clip(base + noise, 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:05d}.png")
        Image.fromarray(mask).save(folder / f"img{index:05d}_mask.png")


def make_weights(which: str, folder: Path) -> Path:
    if which == "tiny":
        path = FIXTURES / "tiny_lama.safetensors"
        if not path.is_file():
            raise SystemExit(f"tiny weights not found at {path} (set LAMA_FIXTURES)")
        return path
    from safetensors.torch import save_file

    path = folder / "big_lama_random.safetensors"
    if not path.is_file():
        save_file({k: v.contiguous() for k, v in big_lama().state_dict().items()}, str(path))
    return path


class _Clock:
    """A silent progress reporter that notes when each image finishes, and its compute time."""

    def __init__(self) -> None:
        from lama_multiscale_refine.lama_cli.progress import ProgressReporter

        self.reporter = ProgressReporter(io.StringIO(), quiet=True)
        self.finished: list[float] = []
        self.compute: list[float] = []
        finish = self.reporter.finish

        def timed(outcome, output=None) -> None:
            self.finished.append(time.perf_counter())
            self.compute.append(outcome.seconds)
            finish(outcome, output)

        self.reporter.finish = timed


def _steady(clock: _Clock, workers: int) -> tuple[float, int, float]:
    """(seconds, images, mean compute seconds of those images) from the ``workers``-th finished
    image to the last."""
    first = min(workers, len(clock.finished)) - 1
    return (clock.finished[-1] - clock.finished[first], len(clock.finished) - 1 - first,
            statistics.fmean(clock.compute[first + 1:]))


def worker(mode: str, model: str, inputs: str, output: str, device_name: str, workers: int, address: str,
           inpaint_mode: str, n_iters: int, min_side: int) -> dict:
    """One mode in this (fresh) process; the measurements as a dict."""
    import torch

    from lama_multiscale_refine.lama_cli.inpainter import Inpainter
    from lama_multiscale_refine.lama_cli.pairing import pair_folder, plan_outputs
    from lama_multiscale_refine.lama_cli.progress import DONE, Summary
    from lama_multiscale_refine.refine import RefineSettings

    refine_settings = RefineSettings(n_iters=n_iters, min_side=min_side)
    started = time.perf_counter()
    jobs = pair_folder(Path(inputs))
    plan_outputs(jobs, Path(output), "png", overwrite=True, protected=[])
    Path(output).mkdir(parents=True, exist_ok=True)
    clock, summary = _Clock(), Summary()
    result: dict = {"mode": mode}
    if mode.startswith("local"):
        from lama_multiscale_refine.ffc import load_generator
        from lama_multiscale_refine.lama_cli.runner import run_batch

        if mode == "local_1thread":
            torch.set_num_threads(1)
        device = device_from(device_name)
        generator, _ = load_generator(model)
        inpainter = Inpainter(generator, device=device, dtype="fp32", mode=inpaint_mode,
                              refine_settings=refine_settings)
        result["startup_s"] = time.perf_counter() - started
        run_batch(jobs, inpainter, clock.reporter, summary, "png")
        result["threads"] = torch.get_num_threads()
        result["peak_rss_mib"] = {"local process": peak_rss_bytes() / 2**20}
        workers = 1
    else:
        from lama_multiscale_refine.lama_cli.inpainter import MaskOptions, PlainOptions
        from lama_multiscale_refine.lama_cli.ray_runner import LOCAL, ClusterOptions, WorkerSettings, run_batch_on_ray

        settings = WorkerSettings(
            model=Path(model), device=device_name, dtype="fp32", mode=inpaint_mode, mask_options=MaskOptions(),
            plain_options=PlainOptions(), refine_settings=refine_settings, output_folder=Path(output),
            output_format="png", overwrite=True, device_was_auto=device_name == "auto",
        )
        options = ClusterOptions(address=address or LOCAL, workers=workers, cpus_per_worker=1)
        infos = run_batch_on_ray(jobs, settings, options, clock.reporter, summary)
        result["threads"] = 1
        result["peak_rss_mib"] = {f"worker {i.host}:{i.pid} ({i.files} files)": i.peak_rss_bytes / 2**20 for i in infos}
        result["peak_rss_mib"]["driver"] = peak_rss_bytes() / 2**20
        workers = len(infos) or workers
    wall = clock.finished[-1] - started
    done = summary.with_status(DONE)
    assert len(done) == len(jobs), f"{mode}: {len(jobs) - len(done)} files not done"
    steady_s, steady_n, compute = _steady(clock, workers)
    result.update(
        images=len(done), workers=workers, wall_s=wall, images_per_s_total=len(done) / wall,
        images_per_s_steady=steady_n / steady_s, compute_s_per_image=compute,
        overhead_s_per_image=steady_s * workers / steady_n - compute,
    )
    return result


def _identical(a: Path, b: Path) -> int:
    return sum((a / p.name).read_bytes() == p.read_bytes() for p in b.iterdir() if (a / p.name).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", choices=("tiny", "big"), default=["tiny", "big"])
    parser.add_argument("--images", type=int, nargs="+", default=None,
                        help="images per weights, in --weights order (default: 200 tiny, 50 big)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--mode", choices=("plain", "refine"), default="plain", help="what each image gets")
    parser.add_argument("--n-iters", type=int, default=15, help="refine: forwards per refined scale")
    parser.add_argument("--min-side", type=int, default=512, help="refine: the coarsest level's smaller side")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers")
    parser.add_argument("--ray", default="", metavar="ADDRESS", help="join this cluster instead of a new local instance")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (Ray: the workers' device)")
    parser.add_argument("--data", type=Path, help="folder for the pairs and outputs (on a cluster: shared by all "
                                                  "nodes); default a temporary folder, removed afterwards")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, model, inputs, output, device, workers, address, inpaint_mode, n_iters, min_side = args.worker
        print(json.dumps(worker(mode, model, inputs, output, device, int(workers), address, inpaint_mode,
                                int(n_iters), int(min_side))))
        return

    counts = args.images or [200 if w == "tiny" else 50 for w in args.weights]
    if len(counts) != len(args.weights):
        raise SystemExit("--images: give one count per --weights entry")
    data = args.data or Path(tempfile.mkdtemp(prefix="lama_bench_ray_"))
    results = {"environment": environment(device_from(args.device)), "size": args.size, "mode": args.mode,
               "refine": {"n_iters": args.n_iters, "min_side": args.min_side} if args.mode == "refine" else None,
               "runs": {}}
    try:
        for which, count in zip(args.weights, counts):
            model = make_weights(which, data)
            inputs = data / f"pairs_{count}_{args.size}"
            if not inputs.is_dir():
                make_pairs(inputs, count, args.size)
            rows = {}
            for mode in args.modes:
                output = data / f"out_{which}_{mode}"
                shutil.rmtree(output, ignore_errors=True)
                print(f"[{which}, {count} images] {mode} ...", file=sys.stderr, flush=True)
                rows[mode] = run_worker(Path(__file__), [mode, str(model), str(inputs), str(output), args.device,
                                                         str(args.workers), args.ray, args.mode,
                                                         str(args.n_iters), str(args.min_side)])
            if "local_1thread" in rows:
                for mode in rows:
                    rows[mode]["identical_to_local_1thread"] = _identical(data / f"out_{which}_local_1thread",
                                                                          data / f"out_{which}_{mode}")
            results["runs"][f"{which} x{count}"] = rows
    finally:
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)

    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\n{results['environment']}, {args.size} px, {args.mode}", file=sys.stderr)
    print("run            mode            workers  threads  wall s  img/s total  img/s steady  compute s/img  "
          "overhead s/img  identical  peak RSS MiB", file=sys.stderr)
    for name, rows in results["runs"].items():
        for mode, r in rows.items():
            rss = ", ".join(f"{v:.0f}" for v in r["peak_rss_mib"].values())
            print(f"{name:<14} {mode:<15} {r['workers']:>7} {r['threads']:>8} {r['wall_s']:>7.1f} "
                  f"{r['images_per_s_total']:>12.2f} {r['images_per_s_steady']:>13.2f} {r['compute_s_per_image']:>14.3f} "
                  f"{r['overhead_s_per_image']:>15.3f} {r.get('identical_to_local_1thread', '-'):>10}  {rss}",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
