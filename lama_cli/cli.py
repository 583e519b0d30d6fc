"""Argument parsing and the ``main(argv)`` entry point of ``lama-inpaint`` / ``python -m lama_multiscale_refine.lama_cli``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..ffc import CheckpointError, load_generator
from ..ffc.strategies import STRATEGIES
from ..refine import MODES as REFINE_MODES
from ..refine import RefineSettings
from ..refine.settings import MIN_TILE_SIDE

from .device import DEVICES, DTYPES, UsageError, resolve_device, resolve_dtype
from .inpainter import MODES, Inpainter, MaskOptions, PlainOptions
from .io import OUTPUT_FORMATS, InputError, prepare_output_folder, read_mask
from .pairing import DEFAULT_MASK_SUFFIX, IMAGE_SUFFIXES, Job, pair_folder, plan_outputs, single_pair
from .progress import ProgressReporter, Summary
from .ray_runner import (LOCAL, RAY_REQUIREMENT, ClusterError, ClusterOptions, WorkerSettings, import_ray,
                         run_batch_on_ray)
from .runner import run_batch

__all__ = ["build_parser", "main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
PROG = "lama-inpaint"  # also `python -m lama_multiscale_refine.lama_cli` (pyproject.toml)
_REFINE_DEFAULTS = RefineSettings()
_PLAIN_DEFAULTS = PlainOptions()
_RAY_DEFAULTS = ClusterOptions()
_RAY_OPTIONS = ("ray_workers", "ray_gpus_per_worker", "ray_cpus_per_worker", "ray_timeout")  # only with --ray
# Output file extension -> --format value, for a single pair written to a named file.
_FORMAT_OF_EXTENSION = {".png": "png", ".webp": "webp", ".jpg": "jpg", ".jpeg": "jpg", ".tif": "tiff", ".tiff": "tiff"}

EPILOG = f"""\
pairing (--input-dir): a file whose name without extension ends in the mask suffix
  (default "{DEFAULT_MASK_SUFFIX}") is a mask; every other image is an input whose mask is
  <name><suffix>.<ext> in the same folder, e.g. cat.jpg + cat_mask.png (the official LaMa
  convention). Results are written as <name>.png (or the --format extension) in the
  --output folder. Image extensions: {", ".join(sorted(IMAGE_SUFFIXES))}.

masks: read as grey levels at their own precision (colour by luminance); a mask with
  transparency counts as drawn over black (grey x alpha), so white strokes on a transparent
  layer are the hole. A pixel is a hole when its level in [0, 1] > --threshold (default 0: any
  non-black pixel). --erode then --dilate change the hole with disk kernels of that diameter in px.

images: read at their own precision (8-bit, 16-bit, 32-bit float; grey, RGB, CMYK, palette)
  and EXIF orientation. The output keeps the sample type, colour space, alpha, ICC profile and
  EXIF (orientation set to 1) where --format can store them: png 8/16-bit grey or RGB, tiff also
  32-bit float and CMYK, webp and jpg 8-bit. Pixels outside the hole are the input's samples,
  unchanged when kept; everything not kept (depth reduced, CMYK or profile converted, alpha
  dropped, EXIF rotation applied) is a warning on that file's line and in the summary.

files: inputs are never overwritten; an existing output is skipped unless --overwrite. The
  output folder is checked to be writable before the model loads; temporary files left by a
  killed run (.<name>.<host>.<pid>.lama_cli.tmp) are removed by the next run.

ray (--ray): the same batch on Ray workers, one model loaded per worker and one task per
  pair; --ray alone starts a local Ray instance, --ray HOST:PORT joins a cluster (every node
  must see the model, inputs and output folder under the same paths). Needs the optional
  extra: pip install "{RAY_REQUIREMENT}".

exit codes: 0 all files done or skipped, 1 a file, the model or the Ray cluster failed, 2 usage error,
  130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

examples:
  {PROG} --model big-lama.safetensors --image photo.png --mask photo_mask.png -o out/
  {PROG} --model big-lama.pt --input-dir photos/ -o results/ --mode refine --device cuda
  {PROG} --model big-lama.safetensors --input-dir /shared/photos -o /shared/results --ray 10.0.0.1:6379
  {PROG} --info big-lama.ckpt
  {PROG} --model big-lama.pt --image photo.png --mask photo_mask.png --mode refine --refine-mode auto --plan
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilog kept as written; meaningful defaults (not None, not off) appended to the help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default is not None and action.default is not False \
                and action.default is not argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _float_in(low: float, high: float, *, include_low: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((low <= value if include_low else low < value) and value < high):
            bracket = "[" if include_low else "("
            raise argparse.ArgumentTypeError(f"expected a number in {bracket}{low}, {high}), got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The full command line; every default comes from the core's own defaults."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter, epilog=EPILOG,
        description="LaMa inpainting (plain or with multiscale feature refinement) outside ComfyUI.",
    )
    files = parser.add_argument_group("input and output")
    files.add_argument("--image", type=Path, metavar="FILE", help="one input image (needs --mask)")
    files.add_argument("--mask", type=Path, metavar="FILE", help="the mask of --image (white = fill)")
    files.add_argument("--input-dir", type=Path, metavar="DIR", help="folder of images and masks paired by name (see below)")
    files.add_argument("--mask-suffix", default=DEFAULT_MASK_SUFFIX, metavar="SUFFIX", help="mask name = image name + this suffix")
    files.add_argument("-o", "--output", type=Path, metavar="PATH",
                       help="output folder (created if missing); with --image also a file name ending in .png/.tif/.webp/.jpg")
    files.add_argument("--format", choices=tuple(OUTPUT_FORMATS), default=None,
                       help="output format (default png; tiff keeps float and CMYK; webp is lossless; jpg drops alpha)")
    files.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")

    model = parser.add_argument_group("model and device")
    model.add_argument("--model", type=Path, metavar="FILE", help="LaMa generator: .safetensors, TorchScript .pt, Lightning .ckpt or .pth")
    model.add_argument("--info", type=Path, metavar="MODEL", help="print what the loader detects in MODEL and exit")
    model.add_argument("--plan", action="store_true",
                       help="print what would run for each image (regions, scales, forwards, predicted time and "
                            "memory, decisions) and exit without inpainting; --output is not needed")
    model.add_argument("--json", action="store_true", help="with --plan: print the plans as JSON on stdout")
    model.add_argument("--mode", choices=MODES, default="plain", help="plain inference or multiscale refinement")
    model.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda if available, else mps, else cpu")
    model.add_argument("--dtype", "--precision", dest="dtype", choices=DTYPES, default="fp32",
                       help="compute precision; bf16 on cuda/cpu only, FFTs stay fp32")

    mask = parser.add_argument_group("mask")
    mask.add_argument("--threshold", type=_float_in(0.0, 1.0, include_low=True), default=0.0, metavar="T",
                      help="hole where mask / 255 > threshold")
    mask.add_argument("--erode", type=_int_at_least(0), default=0, metavar="PX", help="shrink the hole (disk diameter)")
    mask.add_argument("--dilate", type=_int_at_least(0), default=0, metavar="PX", help="grow the hole (disk diameter)")

    plain = parser.add_argument_group("plain mode")
    plain.add_argument("--strategy", choices=STRATEGIES, default=_PLAIN_DEFAULTS.strategy,
                       help="original: full resolution; resize_to_limit: work on a downscaled copy; "
                            "crop_around_mask: only boxes around the holes")
    plain.add_argument("--resize-limit", type=_int_at_least(16), default=_PLAIN_DEFAULTS.resize_limit, metavar="PX",
                       help="longest side for resize_to_limit")
    plain.add_argument("--crop-margin", type=_int_at_least(0), default=_PLAIN_DEFAULTS.crop_margin, metavar="PX",
                       help="context around each hole for crop_around_mask and --crop-to-mask")

    refine = parser.add_argument_group("refine mode")
    refine.add_argument("--refine-mode", choices=REFINE_MODES, default=_REFINE_DEFAULTS.mode,
                        help="paper: the settings below as given; auto: choose scales, crops and working size for "
                             "the image and this machine (the ComfyUI node's default)")
    refine.add_argument("--max-seconds", type=_seconds, default=None, metavar="S",
                        help="auto: fit the predicted time into S seconds (fewer iterations, then a smaller size)")
    refine.add_argument("--n-iters", type=_int_at_least(1), default=_REFINE_DEFAULTS.n_iters, metavar="N",
                        help="forward passes per refined scale")
    refine.add_argument("--lr", type=_float_in(0.0, float("inf"), include_low=False), default=_REFINE_DEFAULTS.lr, metavar="LR",
                        help="Adam learning rate on the features")
    refine.add_argument("--min-side", type=_int_at_least(1), default=_REFINE_DEFAULTS.min_side, metavar="PX",
                        help="smallest side of the coarsest scale (sets the number of scales)")
    refine.add_argument("--max-scales", type=_int_at_least(1), default=_REFINE_DEFAULTS.max_scales, metavar="N",
                        help="upper bound on the number of scales")
    refine.add_argument("--n-scales", type=_int_at_least(1), default=_REFINE_DEFAULTS.n_scales, metavar="N",
                        help="exact number of scales (overrides --min-side/--max-scales)")
    refine.add_argument("--px-budget", type=_int_at_least(256), default=_REFINE_DEFAULTS.px_budget, metavar="PIXELS",
                        help="refine larger images at this many pixels, then paste the holes into the full size")
    refine.add_argument("--crop-to-mask", action="store_true", help="refine only boxes around the holes")
    refine.add_argument("--full-resolution", action="store_true", default=_REFINE_DEFAULTS.full_resolution,
                        help="above --px-budget, refine the finer scales up to full size tile by tile "
                             "instead of upscaling the fill")
    refine.add_argument("--tile-size", type=_int_at_least(MIN_TILE_SIDE), default=_REFINE_DEFAULTS.tile_size,
                        metavar="PX", help="with --full-resolution: tile side (default: from --px-budget and free memory)")
    refine.add_argument("--early-stop-tol", type=_float_in(0.0, float("inf"), include_low=True),
                        default=_REFINE_DEFAULTS.early_stop_tol, metavar="TOL", help="stop a scale when the loss improves less (0 = off)")

    cluster = parser.add_argument_group("Ray (optional extra)")
    cluster.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                         help="run the batch on Ray: alone, a new local Ray instance; HOST:PORT, the head of a "
                              "running cluster; auto, the cluster started on this machine with `ray start`")
    cluster.add_argument("--ray-workers", type=_int_at_least(1), metavar="N",
                         help="models loaded at once, one per Ray worker (default: as many as the cluster's GPUs, "
                              "or without GPUs its CPUs, allow)")
    cluster.add_argument("--ray-gpus-per-worker", type=_float_in(0.0, float("inf"), include_low=True), metavar="F",
                         help="GPUs reserved per worker; 0.5 puts two models on each GPU (default: 1 when the "
                              "cluster has GPUs and --device is auto or cuda, else 0)")
    cluster.add_argument("--ray-cpus-per-worker", type=_int_at_least(1), default=_RAY_DEFAULTS.cpus_per_worker, metavar="N",
                         help="CPUs reserved per worker, also its torch threads")
    cluster.add_argument("--ray-timeout", type=_float_in(0.0, float("inf"), include_low=False),
                         default=_RAY_DEFAULTS.timeout_s, metavar="S", help="give up reaching a cluster after this many seconds")

    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary, only warnings and errors")
    return parser


@dataclass(frozen=True)
class _Plan:
    jobs: list[Job]
    folder: Path  # where outputs go; created before the first job runs
    output_format: str


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")


def _output_target(args: argparse.Namespace) -> tuple[Path, Path | None, str]:
    """(output folder, output file or None, format) from --output/--format."""
    output: Path = args.output
    suffix = output.suffix.lower()
    # Any image extension names a file (never a folder that would be created as "x.gif").
    names_a_file = (suffix in IMAGE_SUFFIXES or suffix in Image.registered_extensions()) and not output.is_dir()
    if names_a_file and args.input_dir is not None:
        raise UsageError(f"--output {output}: with --input-dir the output is a folder; name one without an image extension")
    if not names_a_file:
        if output.exists() and not output.is_dir():
            raise UsageError(f"--output {output}: exists and is not a folder")
        return output, None, args.format or "png"
    implied = _FORMAT_OF_EXTENSION.get(suffix)
    if implied is None:
        raise UsageError(f"--output {output}: cannot write {output.suffix} files; use .png, .tif, .webp or .jpg")
    if args.format and args.format != implied:
        raise UsageError(f"--format {args.format} contradicts the output file name {output.name}")
    return output.parent, output, implied


def _plan(args: argparse.Namespace) -> _Plan:
    """Jobs with output paths, or UsageError for a command line that cannot work."""
    if args.model is None:
        raise UsageError("--model is required (or use --info MODEL)")
    if args.output is None:
        raise UsageError("--output is required")
    if args.input_dir is not None and (args.image or args.mask):
        raise UsageError("use either --input-dir or --image/--mask, not both")
    if args.input_dir is None and (args.image is None or args.mask is None):
        raise UsageError("give --image and --mask, or --input-dir")
    if not args.mask_suffix:
        raise UsageError("--mask-suffix must not be empty")
    folder, output_file, output_format = _output_target(args)

    if args.input_dir is not None:
        if not args.input_dir.is_dir():
            raise UsageError(f"--input-dir {args.input_dir}: not a folder")
        if folder.resolve() == args.input_dir.resolve():
            raise UsageError("--output must differ from --input-dir (results would mix with the inputs)")
        jobs = pair_folder(args.input_dir, args.mask_suffix)
        if not jobs:
            raise UsageError(f"--input-dir {args.input_dir}: no images found")
    else:
        jobs = single_pair(args.image, args.mask)
        jobs[0].output = output_file
    protected = [p for job in jobs for p in (job.image, job.mask) if p is not None] + [args.model]
    plan_outputs(jobs, folder, output_format, overwrite=args.overwrite, protected=protected)
    return _Plan(jobs, folder, output_format)


def _refine_settings(args: argparse.Namespace) -> RefineSettings:
    settings = RefineSettings(
        n_iters=args.n_iters, lr=args.lr, min_side=args.min_side, max_scales=args.max_scales,
        n_scales=args.n_scales, px_budget=args.px_budget, crop_to_mask=args.crop_to_mask,
        crop_margin=args.crop_margin, early_stop_tol=args.early_stop_tol, precision=args.dtype,
        mode=args.refine_mode, max_seconds=args.max_seconds, full_resolution=args.full_resolution,
        tile_size=args.tile_size,
    )
    try:
        settings.validate()
    except ValueError as err:
        raise UsageError(str(err)) from err
    return settings


def _listing(names: tuple[str, ...], shown: int = 10) -> str:
    if not names:
        return "none"
    more = f" ... and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)}: " + ", ".join(names[:shown]) + more


def show_info(path: Path) -> int:
    """``--info``: the loader's findings on stdout; 1 with the reason for a file it cannot use."""
    try:
        _, info = load_generator(path)
    except CheckpointError as err:
        _error(str(err))
        return EXIT_FAILED
    rows = [
        ("file", str(path)),
        ("format", info.source_format),
        ("variant", info.variant),
        ("variant id", info.variant_id),
        ("refinable", "yes" if info.refinable else "no (plain inpainting only)"),
        ("parameters", f"{info.parameters:,}"),
        ("key prefix", repr(info.key_prefix)),
        *((f"{part} prefix", repr(prefix)) for part, prefix in info.part_prefixes.items() if part != "generator"),
        ("residual blocks", str(info.config.n_blocks)),
        ("ignored tensors", f"{info.ignored_keys} (training state: discriminator, evaluator, optimizer)"
         if info.ignored_keys else "0"),
        ("unused tensors", _listing(info.unused_keys)),
        ("summary", info.describe()),
    ]
    width = max(len(name) for name, _ in rows)
    sys.stdout.write("".join(f"{name:<{width}}  {value}\n" for name, value in rows))
    return EXIT_OK


def _mask_options(args: argparse.Namespace) -> MaskOptions:
    return MaskOptions(args.threshold, args.erode, args.dilate)


def _plain_options(args: argparse.Namespace) -> PlainOptions:
    return PlainOptions(args.strategy, args.resize_limit, args.crop_margin)


def _prepare_folder(plan: _Plan, reporter: ProgressReporter) -> bool:
    """Create and check the output folder; False (reported) when it cannot be written."""
    try:
        removed = prepare_output_folder(plan.folder)
    except OSError as err:
        _error(f"cannot write to the output folder {plan.folder}: {err.strerror or err}")
        return False
    for name in removed:
        reporter.note(f"removed {name}: a temporary file left by an interrupted run")
    return True


def _has_work(plan: _Plan) -> bool:
    # Nothing to load or create when every job already failed or is skipped (e.g. a finished rerun).
    return any(job.problem is None and job.skip is None for job in plan.jobs)


def _inpainter(args: argparse.Namespace, generator, device, dtype: str) -> Inpainter:
    return Inpainter(
        generator, device=device, dtype=dtype, mode=args.mode,
        mask_options=_mask_options(args), plain_options=_plain_options(args), refine_settings=_refine_settings(args),
    )


def show_plans(args: argparse.Namespace) -> int:
    """``--plan``: each image's plan on stdout (``--json``: as JSON), nothing inpainted."""
    if args.model is None:
        raise UsageError("--plan needs --model (plans are made for a model and a device)")
    if args.input_dir is not None:
        if not args.input_dir.is_dir():
            raise UsageError(f"--input-dir {args.input_dir}: not a folder")
        jobs = pair_folder(args.input_dir, args.mask_suffix)
    elif args.image is not None and args.mask is not None:
        jobs = single_pair(args.image, args.mask)
    else:
        raise UsageError("give --image and --mask, or --input-dir")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, device_was_auto=args.device == "auto")
    _refine_settings(args)  # usage errors before the model is loaded
    try:
        generator, _ = load_generator(args.model)
    except CheckpointError as err:
        _error(str(err))
        return EXIT_FAILED
    inpainter = _inpainter(args, generator, device, dtype)
    plans, code = [], EXIT_OK
    for job in jobs:
        entry: dict = {"name": job.name}
        try:
            if job.problem:
                raise InputError(job.problem)
            made = inpainter.plan(read_mask(job.mask).values)
            entry["plan"] = made.to_dict()
        except (InputError, ValueError, MemoryError) as err:
            entry["error"] = str(err)
            code = EXIT_FAILED
        plans.append(entry)
        if not args.json:
            sys.stdout.write(_plan_text(entry))
    if args.json:
        sys.stdout.write(json.dumps(plans, indent=2) + "\n")
    return code


def _plan_text(entry: dict) -> str:
    if "error" in entry:
        return f"{entry['name']}: cannot plan: {entry['error']}\n"
    made = entry["plan"]
    lines = [f"{entry['name']}: {made['summary']}"]
    lines += [f"  {note['level']}: {note['text']}" for note in made["notes"]]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace, plan: _Plan, reporter: ProgressReporter, summary: Summary) -> int:
    if args.ray is not None:
        return _run_on_ray(args, plan, reporter, summary)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, device_was_auto=args.device == "auto")
    _refine_settings(args)
    summary.total = len(plan.jobs)
    inpainter = None
    if _has_work(plan):
        # The folder first: an unwritable one is found before the model loads, not after each image.
        if not _prepare_folder(plan, reporter):
            return EXIT_FAILED
        try:
            generator, info = load_generator(args.model)
        except CheckpointError as err:
            _error(str(err))
            return EXIT_FAILED
        reporter.note(f"model: {info.describe()}")
        reporter.note(f"{args.mode} on {device} ({dtype})")
        inpainter = _inpainter(args, generator, device, dtype)
    run_batch(plan.jobs, inpainter, reporter, summary, plan.output_format, overwrite=args.overwrite)
    return EXIT_FAILED if summary.any_failed else EXIT_OK


def _check_ray_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.ray is None:
        for dest in _RAY_OPTIONS:
            if getattr(args, dest) != parser.get_default(dest):
                raise UsageError(f"--{dest.replace('_', '-')} needs --ray")


def _run_on_ray(args: argparse.Namespace, plan: _Plan, reporter: ProgressReporter, summary: Summary) -> int:
    """The batch on Ray workers (:mod:`.ray_runner`): same jobs, outputs and exit codes as :func:`_run`."""
    import_ray()  # a missing extra is a usage error, before anything is created
    settings = WorkerSettings(
        model=args.model, device=args.device, dtype=args.dtype, mode=args.mode, mask_options=_mask_options(args),
        plain_options=_plain_options(args), refine_settings=_refine_settings(args), output_folder=plan.folder,
        output_format=plan.output_format, overwrite=args.overwrite, device_was_auto=args.device == "auto",
    )
    options = ClusterOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker,
                             gpus_per_worker=args.ray_gpus_per_worker, timeout_s=args.ray_timeout)
    if _has_work(plan) and not _prepare_folder(plan, reporter):
        return EXIT_FAILED
    try:
        run_batch_on_ray(plan.jobs, settings, options, reporter, summary)
    except ClusterError as err:
        _error(str(err))
        return EXIT_FAILED
    return EXIT_FAILED if summary.any_failed else EXIT_OK


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that a file being written is cleaned up."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    # Only the main thread may set signal handlers; elsewhere (a caller's thread) SIGTERM keeps its handler.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 a file failed, 2 usage, 130 Ctrl-C, 143 SIGTERM)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and usage errors (2), returned so callers get a code
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.info is not None:
        return show_info(args.info)
    if args.json and not args.plan:
        parser.print_usage(sys.stderr)
        _error("--json is for --plan")
        return EXIT_USAGE
    if args.plan:
        try:
            if args.ray is not None:
                raise UsageError("--plan prints the plans on this machine; drop --ray")
            return show_plans(args)
        except UsageError as err:
            parser.print_usage(sys.stderr)
            _error(str(err))
            return EXIT_USAGE

    reporter = ProgressReporter(sys.stderr, quiet=args.quiet)
    summary = Summary()
    started = time.perf_counter()
    try:
        with _sigterm_as_exception():
            _check_ray_options(parser, args)
            plan = _plan(args)
            code = _run(args, plan, reporter, summary)
    except UsageError as err:
        parser.print_usage(sys.stderr)
        _error(str(err))
        return EXIT_USAGE
    except Terminated:
        reporter.interrupted(summary, "Terminated (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        reporter.interrupted(summary)
        return EXIT_INTERRUPTED
    if summary.total:
        reporter.summary(summary, time.perf_counter() - started)
    return code
