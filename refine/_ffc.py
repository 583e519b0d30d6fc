"""The sibling ``ffc`` package, whether ``refine`` is imported top-level or inside the node pack.

From the repository root (library, command line, tests) both are top-level packages; inside
ComfyUI they are subpackages of the pack, which ComfyUI imports under a path-derived name. This
resolves the right one explicitly instead of guessing with try/except.
"""

from __future__ import annotations

import importlib

_parent = __package__.rpartition(".")[0]  # "" when refine is top-level
ffc = importlib.import_module(f"{_parent}.ffc" if _parent else "ffc")

__all__ = ["ffc"]
