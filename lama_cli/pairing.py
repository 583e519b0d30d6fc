"""Which files to process: image/mask pairs, and where each result goes.

Pairing rule (official LaMa convention): in a folder, a file whose name without extension ends
in the mask suffix (default ``_mask``) is a mask; every other image file is an input whose mask
is ``<name><suffix>.<any image extension>`` beside it, e.g. ``cat.jpg`` + ``cat_mask.png``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .io import OUTPUT_FORMATS

__all__ = ["IMAGE_SUFFIXES", "DEFAULT_MASK_SUFFIX", "Job", "pair_folder", "single_pair", "plan_outputs", "output_exists"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MASK_SUFFIX = "_mask"


@dataclass
class Job:
    """One unit of work; ``problem`` or ``skip`` set means it is reported without running."""

    name: str  # shown in progress lines and the summary
    image: Path | None
    mask: Path | None
    output: Path | None = None
    problem: str | None = None  # counts as failed
    skip: str | None = None  # counts as skipped


def _is_image_file(path: Path) -> bool:
    # Hidden files include our own temporary outputs.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def pair_folder(folder: Path, mask_suffix: str = DEFAULT_MASK_SUFFIX) -> list[Job]:
    """One job per image in ``folder`` (not recursive), then one skipped job per orphan mask."""
    masks: dict[str, list[Path]] = {}
    images: list[Path] = []
    for path in sorted(p for p in folder.iterdir() if _is_image_file(p)):
        if path.stem.endswith(mask_suffix) and len(path.stem) > len(mask_suffix):
            masks.setdefault(path.stem[: -len(mask_suffix)], []).append(path)
        else:
            images.append(path)

    jobs = []
    for image in images:
        candidates = masks.get(image.stem, [])
        job = Job(image.name, image, candidates[0] if len(candidates) == 1 else None)
        if not candidates:
            job.problem = f"no mask found (expected {image.stem}{mask_suffix}.png or another image extension)"
        elif len(candidates) > 1:
            job.problem = f"several masks match, keep one: {', '.join(p.name for p in candidates)}"
        jobs.append(job)
    image_stems = {image.stem for image in images}
    for stem, paths in masks.items():
        if stem not in image_stems:
            jobs += [Job(p.name, None, p, skip=f"mask without an image (expected {stem}.<ext>)") for p in paths]
    return jobs


def single_pair(image: Path, mask: Path) -> list[Job]:
    """The job for ``--image``/``--mask``; missing files are reported like any per-file error."""
    job = Job(image.name, image, mask)
    missing = [f"{what} {path} does not exist" for what, path in (("image", image), ("mask", mask)) if not path.is_file()]
    if missing:
        job.problem = "; ".join(missing)
    return [job]


def _same_file(target: Path, other: Path) -> bool:
    if target == other.resolve():
        return True
    # Hard links and case-insensitive file systems: ask the OS when both exist.
    return target.exists() and other.exists() and os.path.samefile(target, other)


def output_exists(output: Path, *, meanwhile: bool = False) -> str:
    """The reason a job is skipped because ``output`` exists; ``meanwhile``: it appeared after planning."""
    when = "written meanwhile by another run; " if meanwhile else ""
    return f"output exists: {output} ({when}use --overwrite to replace it)"


def plan_outputs(jobs: list[Job], folder: Path, output_format: str, *, overwrite: bool,
                 protected: Iterable[Path]) -> None:
    """Give each runnable job an output path (``<image name>.<format>`` in ``folder`` unless set).

    Never an input file (``protected``: every image, mask and the model), never the output of
    another job; an existing output is skipped unless ``overwrite``.
    """
    protected = list(protected)
    extension = OUTPUT_FORMATS[output_format].extension
    claimed: dict[Path, str] = {}
    for job in jobs:
        if job.problem or job.skip or job.image is None:
            continue
        if job.output is None:
            job.output = folder / (job.image.stem + extension)
        target = job.output.resolve()
        clash = next((p for p in protected if _same_file(target, p)), None)
        if clash is not None:
            job.problem = f"refusing to overwrite input file {clash}"
        elif target in claimed:
            job.problem = f"{job.output} is already the output of {claimed[target]}"
        elif job.output.exists() and not overwrite:
            job.skip = output_exists(job.output)
        else:
            claimed[target] = job.name
