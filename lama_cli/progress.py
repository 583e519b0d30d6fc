"""Progress lines and the final summary, written to stderr (stdout stays free for ``--info``).

On a terminal the current image's line is rewritten in place at every refinement iteration;
otherwise (logs, pipes) one line is written per finished scale and per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Outcome", "Summary", "ProgressReporter", "DONE", "SKIPPED", "FAILED"]

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
_CLEAR_LINE = "\r\x1b[K"


@dataclass
class Outcome:
    """What happened to one job."""

    name: str
    status: str  # DONE, SKIPPED or FAILED
    detail: str = ""  # the reason (skipped, failed) or a note (done)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # what the output does not keep of the input (done)


@dataclass
class Summary:
    """Outcomes so far, in job order."""

    total: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def with_status(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def any_failed(self) -> bool:
        return bool(self.with_status(FAILED))

    def seconds_per_image(self) -> float:
        done = self.with_status(DONE)
        return sum(o.seconds for o in done) / len(done) if done else 0.0


def _step_text(info: dict) -> str:
    parts = []
    if info.get("n_regions", 1) > 1:
        parts.append(f"region {info['region'] + 1}/{info['n_regions']}")
    parts.append(f"scale {info['scale'] + 1}/{info['n_scales']}")
    parts.append(f"iteration {info['iteration'] + 1}/{info['n_iters']}")
    loss = info.get("loss", math.nan)
    if math.isfinite(loss):  # NaN on the coarsest scale, which is a plain forward
        parts.append(f"loss {loss:.4f}")
    return ", ".join(parts)


class ProgressReporter:
    """Writes progress for a batch; ``quiet`` keeps only warnings, failures and interruptions."""

    def __init__(self, stream: TextIO, *, quiet: bool = False, live: bool | None = None) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = (not quiet) and (stream.isatty() if live is None else live)
        self._prefix = ""
        self._pending_step: dict | None = None  # last refinement step not yet written (line mode)

    def _write_line(self, text: str) -> None:
        self.stream.write((_CLEAR_LINE if self.live else "") + text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A general line (model loaded, settings)."""
        if not self.quiet:
            self._write_line(text)

    def start(self, index: int, total: int, name: str) -> None:
        self._prefix = f"[{index + 1}/{total}] {name}"
        self._pending_step = None
        if self.live:
            self.stream.write(f"{_CLEAR_LINE}{self._prefix} ...")
            self.stream.flush()

    def refine_step(self, info: dict) -> None:
        """Refinement callback: every forward of every scale."""
        if self.quiet:
            return
        if self.live:
            self.stream.write(f"{_CLEAR_LINE}{self._prefix}: {_step_text(info)}")
            self.stream.flush()
            return
        pending = self._pending_step
        if pending is not None and (pending.get("region"), pending["scale"]) != (info.get("region"), info["scale"]):
            self._flush_step()
        self._pending_step = info

    def _flush_step(self) -> None:
        if self._pending_step is not None:
            self._write_line(f"{self._prefix}: {_step_text(self._pending_step)}")
            self._pending_step = None

    def finish(self, outcome: Outcome, output: str | None = None) -> None:
        """The job's result line, then one line per warning; failures and warnings are written even when quiet."""
        if outcome.status == FAILED:
            self._pending_step = None
            self._write_line(f"{self._prefix}: FAILED: {outcome.detail}")
            return
        if not self.quiet:
            self._flush_step()
            if outcome.status == SKIPPED:
                self._write_line(f"{self._prefix}: skipped: {outcome.detail}")
            else:
                note = f" ({outcome.detail})" if outcome.detail else ""
                self._write_line(f"{self._prefix}: done in {outcome.seconds:.2f} s -> {output}{note}")
        self._pending_step = None
        for warning in outcome.warnings:
            self._write_line(f"{self._prefix}: warning: {warning}")

    def summary(self, summary: Summary, elapsed: float) -> None:
        """Counts, time per image, every warning, and every skipped and failed file with its reason."""
        if self.quiet:
            return
        done, skipped, failed = (summary.with_status(s) for s in (DONE, SKIPPED, FAILED))
        lines = [
            f"Summary: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed "
            f"in {elapsed:.1f} s ({summary.seconds_per_image():.2f} s per image)"
        ]
        warned = [(o.name, w) for o in done for w in o.warnings]
        if warned:
            lines.append("warnings:")
            lines += [f"  {name}: {warning}" for name, warning in warned]
        for title, outcomes in (("skipped", skipped), ("failed", failed)):
            if outcomes:
                lines.append(f"{title}:")
                lines += [f"  {o.name}: {o.detail}" for o in outcomes]
        self._write_line("\n".join(lines))

    def interrupted(self, summary: Summary, cause: str = "Interrupted") -> None:
        """``cause``: "Interrupted" (Ctrl-C) or "Terminated (SIGTERM)"."""
        finished = len(summary.outcomes)
        self._write_line(
            f"{cause} after {finished} of {summary.total} files ({len(summary.with_status(DONE))} done). "
            "Written outputs are complete; run again to continue (existing outputs are skipped)."
        )
