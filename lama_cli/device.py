"""Device and precision choice for the command line (the core never picks a device itself)."""

from __future__ import annotations

import logging

import torch

__all__ = ["DEVICES", "DTYPES", "UsageError", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("fp32", "bf16")


class UsageError(ValueError):
    """A command-line choice that cannot work here; exits with code 2 like argparse errors."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else Apple MPS, else the CPU; an explicit choice must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name == "mps" and not _mps_available():
        raise UsageError("--device mps: Apple MPS is not available (use --device auto or cpu)")
    if name not in DEVICES:
        raise UsageError(f"--device: expected one of {DEVICES}, got {name!r}")
    return torch.device(name)


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # The refinement's bf16 autocast exists for CUDA and CPU only; MPS bf16 depends on the macOS version.
    return device.type == "cpu"


def resolve_dtype(name: str, device: torch.device, *, device_was_auto: bool) -> str:
    """``bf16`` where the device supports it; on an automatically chosen device that does not,
    fall back to ``fp32`` with a warning, on an explicitly chosen one refuse."""
    if name not in DTYPES:
        raise UsageError(f"--dtype: expected one of {DTYPES}, got {name!r}")
    if name == "fp32" or _bf16_supported(device):
        return name
    if device_was_auto:
        log.warning("bf16 is not supported on %s; using fp32", device)
        return "fp32"
    raise UsageError(f"--dtype bf16 is not supported on {device.type} (use --dtype fp32)")
