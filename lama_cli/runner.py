"""The batch loop: every job is read, inpainted and saved, or reported with its reason.

:func:`process_file` is the whole work on one file (read -> inpaint -> write) and the unit another
runner (a process pool, a cluster) calls; :func:`run_job` adds the per-file error handling and
:func:`run_batch` the progress report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .conversion import compose_output, model_input, plan_output
from .inpainter import Inpainter
from .io import InputError, read_image, read_mask, save_image
from .metadata import exif_for_output
from .pairing import Job, output_exists
from .progress import DONE, FAILED, SKIPPED, Outcome, ProgressReporter, Summary

__all__ = ["FileResult", "process_file", "run_batch", "run_job"]


@dataclass(frozen=True)
class FileResult:
    """What :func:`process_file` did besides writing the output."""

    warnings: tuple[str, ...]  # everything the output does not keep of the input, one line each
    note: str | None  # e.g. "empty mask, image copied unchanged"


def process_file(image_path: Path, mask_path: Path, output_path: Path, inpainter: Inpainter, output_format: str,
                 callback: Callable[[dict], None] | None = None) -> FileResult:
    """Read ``image_path`` and ``mask_path``, inpaint, write ``output_path`` (atomically) in ``output_format``.

    Pixels outside the hole are the input's samples, bit for bit when the output keeps the input's
    sample type and colour space; see :func:`.conversion.plan_output` for what it keeps.

    Raises:
        InputError: an input file is missing, unreadable, unsupported, or the sizes differ.
        ValueError, RuntimeError, MemoryError, OSError: from the core, the device or the write.
    """
    image = read_image(image_path)
    mask = read_mask(mask_path)
    if mask.image.size != image.size:
        hint = ("; masks are matched to the image as viewers show it"
                if image.orientation != 1 or mask.image.orientation != 1 else "")
        raise InputError(f"mask {mask_path.name} is {mask.image.size_text()} but image {image_path.name} "
                         f"is {image.size_text()}{hint}")
    plan = plan_output(image, output_format)
    fill = inpainter.fill(model_input(image), mask.values, callback=callback)
    samples, alpha = compose_output(image, plan, fill.rgb, fill.hole)
    written = save_image(output_path, samples, alpha, plan.space, output_format,
                         icc_profile=plan.profile.data if plan.profile else None,
                         exif=exif_for_output(image.exif), dpi=image.dpi)
    warnings = [*image.warnings, *mask.warnings, *plan.warnings, *written]
    return FileResult(tuple(warnings), fill.note)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_job(job: Job, inpainter: Inpainter | None, reporter: ProgressReporter | None, output_format: str, *,
            overwrite: bool = True) -> Outcome:
    """Process one job; any per-file problem becomes a FAILED outcome instead of an exception.

    ``reporter`` (None: no refinement progress) gets the refinement steps. Without ``overwrite``
    an output that appeared after planning (another run into the same folder) is skipped.
    """
    if job.problem:
        return Outcome(job.name, FAILED, job.problem)
    if job.skip:
        return Outcome(job.name, SKIPPED, job.skip)
    if not overwrite and job.output.exists():
        return Outcome(job.name, SKIPPED, output_exists(job.output, meanwhile=True))
    assert inpainter is not None, "a runnable job needs a loaded model"
    started = time.perf_counter()
    callback = reporter.refine_step if reporter is not None else None
    try:
        result = process_file(job.image, job.mask, job.output, inpainter, output_format, callback=callback)
    except InputError as err:
        return Outcome(job.name, FAILED, str(err))
    except (ValueError, RuntimeError, MemoryError, OSError) as err:
        # Core validation, out of memory, a device error or a failed write: this file fails, the batch goes on.
        return Outcome(job.name, FAILED, f"{type(err).__name__}: {_first_line(err)}")
    return Outcome(job.name, DONE, result.note or "", time.perf_counter() - started, result.warnings)


def run_batch(jobs: list[Job], inpainter: Inpainter | None, reporter: ProgressReporter, summary: Summary,
              output_format: str, *, overwrite: bool = True) -> None:
    """Run ``jobs`` in order, appending to ``summary`` as each finishes (so an interrupt keeps them).

    ``inpainter`` may be None when no job needs the model (all skipped or failed beforehand).
    """
    summary.total = len(jobs)
    for index, job in enumerate(jobs):
        reporter.start(index, len(jobs), job.name)
        outcome = run_job(job, inpainter, reporter, output_format, overwrite=overwrite)
        summary.outcomes.append(outcome)
        reporter.finish(outcome, str(job.output) if job.output else None)
