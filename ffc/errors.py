"""The loader's error type, shared by :mod:`ffc.checkpoint` and :mod:`ffc.variants`."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A file that cannot be read as a LaMa generator; the message names the file."""
