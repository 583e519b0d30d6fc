"""Command-line LaMa inpainting over :mod:`ffc` and :mod:`refine`, without ComfyUI.

Run ``lama-inpaint --help`` (after ``pip install -e .``, README); :func:`main` is the same entry point
for scripts and tests (it returns the exit code instead of exiting).
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
