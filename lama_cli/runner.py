"""The batch loop: every job is read, inpainted and saved, or reported with its reason."""

from __future__ import annotations

import time

from .inpainter import Inpainter
from .io import InputError, read_image, read_mask, save_image
from .pairing import Job
from .progress import DONE, FAILED, SKIPPED, Outcome, ProgressReporter, Summary

__all__ = ["run_batch", "run_job"]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_job(job: Job, inpainter: Inpainter | None, reporter: ProgressReporter, output_format: str) -> Outcome:
    """Process one job; any per-file problem becomes a FAILED outcome instead of an exception."""
    if job.problem:
        return Outcome(job.name, FAILED, job.problem)
    if job.skip:
        return Outcome(job.name, SKIPPED, job.skip)
    assert inpainter is not None, "a runnable job needs a loaded model"
    started = time.perf_counter()
    try:
        image = read_image(job.image)
        mask = read_mask(job.mask)
        if mask.shape != image.size:
            (mh, mw), (ih, iw) = mask.shape, image.size
            raise InputError(f"mask {job.mask.name} is {mw}x{mh} px but image {job.image.name} is {iw}x{ih} px")
        result, note = inpainter.run(image.rgb, mask, callback=reporter.refine_step)
        kept_alpha = save_image(job.output, result, image.alpha, image.icc_profile, output_format)
    except InputError as err:
        return Outcome(job.name, FAILED, str(err))
    except (ValueError, RuntimeError, MemoryError, OSError) as err:
        # Core validation, out of memory, a device error or a failed write: this file fails, the batch goes on.
        return Outcome(job.name, FAILED, f"{type(err).__name__}: {_first_line(err)}")
    notes = [note] if note else []
    if not kept_alpha:
        notes.append(f"alpha channel dropped, {output_format} cannot store it")
    return Outcome(job.name, DONE, "; ".join(notes), time.perf_counter() - started)


def run_batch(jobs: list[Job], inpainter: Inpainter | None, reporter: ProgressReporter, summary: Summary,
              output_format: str) -> None:
    """Run ``jobs`` in order, appending to ``summary`` as each finishes (so an interrupt keeps them).

    ``inpainter`` may be None when no job needs the model (all skipped or failed beforehand).
    """
    summary.total = len(jobs)
    for index, job in enumerate(jobs):
        reporter.start(index, len(jobs), job.name)
        outcome = run_job(job, inpainter, reporter, output_format)
        summary.outcomes.append(outcome)
        reporter.finish(outcome, str(job.output) if job.output else None)
