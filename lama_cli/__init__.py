"""Command-line LaMa inpainting over :mod:`ffc` and :mod:`refine`, without ComfyUI.

Run ``python -m lama_cli --help`` from the repository root; :func:`main` is the same entry point
for scripts and tests (it returns the exit code instead of exiting).
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
