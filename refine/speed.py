"""Speed options of the refinement, each explicit, with its numerical effect (CUDA mostly).

One frozen :class:`SpeedOptions` (``RefineSettings.speed``) and the code that applies it:
:func:`backend_flags` sets the process-wide backend flags for the duration of a run and restores
them afterwards (also on error), and :func:`compile_rear` wraps the model so its rear runs
through ``torch.compile``. The defaults keep fidelity to the official code (see
``../shared/fixtures/tolerances.json``: "on CUDA disable TF32"); anything faster is opt-in.

========================  =======  ==========================================================
option                    default  effect
========================  =======  ==========================================================
``cudnn_benchmark``       False    CUDA: cuDNN times its convolution algorithms once per input
                                   shape and keeps the fastest. The refinement repeats every
                                   shape ``n_iters`` times, so the search pays back. Numbers:
                                   another algorithm sums in another order (float round-off,
                                   ~1e-6 relative), and the choice may differ between runs.
``tf32``                  False    CUDA (Ampere and newer): convolutions and matmuls round
                                   their float32 inputs to TF32 (10-bit mantissa), ~1e-3
                                   relative per convolution: far outside the fixtures' 1e-6
                                   loss tolerance, hence off. False also switches off the
                                   TF32 that PyTorch allows cuDNN convolutions by default.
``channels_last``         "auto"   Memory format of a model that ``refine()`` fuses itself:
                                   ``"auto"`` = on for CPU (faster oneDNN convolutions), off
                                   elsewhere; ``"on"`` / ``"off"`` force it. Same arithmetic,
                                   other summation order (round-off). A model passed in
                                   already fused keeps its own layout.
``compile``               "off"    ``"default"``: the rear (residual blocks and decoder) runs
                                   through ``torch.compile`` (inductor fuses the elementwise
                                   work around the convolutions); ``"reduce-overhead"``: the
                                   same plus CUDA graphs (the compiled default elsewhere).
                                   Only calls that record gradients are compiled (each scale's
                                   optimised iterations); every new shape compiles again, which
                                   takes tens of seconds, so it pays only for long runs on few
                                   shapes. Numbers: fused kernels round differently (~1e-7).
========================  =======  ==========================================================

bf16 autocast is ``RefineSettings.precision`` and stays there (convolution inputs rounded to 8
mantissa bits, ~4e-3 relative each, FFTs in float32: outside the fixtures' tolerances, so
opt-in; the suite's bf16 rows show its effect against the official fp32 cost). On a
CPU or MPS device the CUDA flags are left alone (they would do nothing): ``cudnn_benchmark`` and
``tf32`` are ignored there, and the plan says so in an info note (shown on the node).
``channels_last`` and ``compile`` apply on every device. The numerical effects above are what
the arithmetic implies; ``benchmarks/device_suite.py`` measures each option's largest hole-pixel
change against the defaults on the device it runs on (no GPU has run it yet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["SpeedOptions", "validate_speed", "backend_flags", "compile_rear", "CompiledRear", "CHANNELS_LAST", "COMPILE"]

CHANNELS_LAST = ("auto", "on", "off")
COMPILE = ("off", "default", "reduce-overhead")


@dataclass(frozen=True)
class SpeedOptions:
    """How the refinement may trade bit-faithfulness for speed; the defaults keep fidelity."""

    cudnn_benchmark: bool = False
    tf32: bool = False
    channels_last: str = "auto"
    compile: str = "off"

    def cuda_only_set(self) -> list[str]:
        """The names of the CUDA-only options switched on (other devices ignore them)."""
        return [name for name in ("cudnn_benchmark", "tf32") if getattr(self, name)]

    def channels_last_for(self, device: torch.device) -> bool:
        """Whether a model fused for ``device`` is converted to channels_last."""
        if self.channels_last == "auto":
            return device.type == "cpu"
        return self.channels_last == "on"


def validate_speed(options: object) -> None:
    """Raise ``ValueError`` naming the field when ``options`` is not a valid :class:`SpeedOptions`."""
    if not isinstance(options, SpeedOptions):
        raise ValueError(f"speed: expected a refine.SpeedOptions, got {type(options).__name__}")
    for name in ("cudnn_benchmark", "tf32"):
        value = getattr(options, name)
        if not isinstance(value, bool):
            raise ValueError(f"speed.{name}: expected True or False, got {value!r}")
    if options.channels_last not in CHANNELS_LAST:
        raise ValueError(f"speed.channels_last: expected one of {CHANNELS_LAST}, got {options.channels_last!r}")
    if options.compile not in COMPILE:
        raise ValueError(f"speed.compile: expected one of {COMPILE}, got {options.compile!r}")


def _has_precision_api() -> bool:
    # torch >= 2.9 has per-backend ``fp32_precision`` ("ieee" / "tf32" / "none"); reading the
    # legacy ``allow_tf32`` after the new API was used raises, so use the new one where it exists.
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _read_flags() -> tuple:
    b = torch.backends
    if _has_precision_api():
        return (b.cudnn.benchmark, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision)
    return b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32


def _write_flags(flags: tuple) -> None:
    b = torch.backends
    if _has_precision_api():
        b.cudnn.benchmark, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision = flags
    else:
        b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = flags


def _wanted_flags(options: SpeedOptions) -> tuple:
    if _has_precision_api():
        precision = "tf32" if options.tf32 else "ieee"
        return options.cudnn_benchmark, precision, precision, precision
    return options.cudnn_benchmark, options.tf32, options.tf32


@contextlib.contextmanager
def backend_flags(options: SpeedOptions, device: torch.device) -> Iterator[None]:
    """Set cuDNN benchmark and TF32 as ``options`` say while the block runs on ``device``.

    The flags are process-wide; they are restored to their previous values when the block
    exits, also on an exception. Devices other than CUDA leave them untouched.
    """
    if device.type != "cuda":
        yield
        return
    saved = _read_flags()
    try:
        _write_flags(_wanted_flags(options))
        yield
    finally:
        _write_flags(saved)


class CompiledRear(nn.Module):
    """``model`` with its rear run through ``torch.compile`` when gradients are recorded.

    The wrapped model is not changed. ``front``, ``config``, the layers (for checkpointing) and
    the parameters are the model's own; calls without gradients (the coarsest scale, each
    scale's last forward) run eagerly, so they cost no compilation.
    """

    def __init__(self, model: nn.Module, mode: str, backend: str = "inductor") -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        # Per-scale shapes are static: compile each one for its shape rather than dynamically.
        self._compiled = torch.compile(model.rear, mode=None if backend != "inductor" else mode, backend=backend,
                                       dynamic=False)

    @property
    def body(self) -> nn.Sequential:
        return self.inner.body if hasattr(self.inner, "body") else self.inner.model

    def front(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.front(x)

    def rear(self, features: tuple[Tensor, Tensor]) -> Tensor:
        if torch.is_grad_enabled():
            return self._compiled(features)
        return self.inner.rear(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.rear(self.front(x))


def compile_rear(model: nn.Module, options: SpeedOptions) -> nn.Module:
    """``model`` itself when ``options.compile`` is "off", else a :class:`CompiledRear` around it."""
    if options.compile == "off":
        return model
    return CompiledRear(model, options.compile)
