"""Import the pack outside ComfyUI, the way ComfyUI does: its root folder as a package.

The node modules use relative imports (``..ffc``), so they only work below the pack root's
package. This module itself has no relative imports: it may be imported as ``nodes.standalone``
from the repository root (tests, ``python -m nodes``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["PACK_ROOT", "import_pack", "import_pack_module"]

PACK_ROOT = Path(__file__).resolve().parents[1]


def import_pack(name: str = "lama_ffc_pack", root: Path = PACK_ROOT) -> ModuleType:
    """Import ``root/__init__.py`` as package ``name`` (reused when already imported)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the pack from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_pack_module(relative: str, name: str = "lama_ffc_pack", root: Path = PACK_ROOT) -> ModuleType:
    """``import_pack_module("nodes._spec")`` -> that submodule of the pack."""
    import_pack(name, root)
    return importlib.import_module(f"{name}.{relative}")
