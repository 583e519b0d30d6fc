"""Import this checkout's pack by path, the way ComfyUI imports a custom node folder.

The pack's root folder is one package (``lama_multiscale_refine``, see pyproject.toml); its modules
import each other relatively. Tests and benchmarks import *this checkout* under that name (not
whatever ``pip install -e`` points to), and the node tests import further fresh copies under other
names, with ComfyUI stand-ins installed. This module imports nothing of the pack itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["PACK_NAME", "PACK_ROOT", "import_pack", "import_pack_module"]

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "lama_multiscale_refine"


def import_pack(name: str = PACK_NAME, root: Path = PACK_ROOT) -> ModuleType:
    """Import ``root/__init__.py`` as package ``name`` (reused when already imported from ``root``)."""
    module = sys.modules.get(name)
    if module is not None:
        if Path(module.__file__).resolve().parent != root.resolve():
            raise ImportError(f"{name} is already imported from {module.__file__}, not from {root}")
        return module
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


def import_pack_module(relative: str, name: str = PACK_NAME, root: Path = PACK_ROOT) -> ModuleType:
    """``import_pack_module("nodes._spec")`` -> that submodule of the pack."""
    import_pack(name, root)
    return importlib.import_module(f"{name}.{relative}")


def run_module(argv: list[str]) -> None:
    """``python tests/pack_import.py lama_cli ARGS...``: run ``python -m`` on a module of this checkout."""
    import runpy

    import_pack()
    sys.argv = [f"{PACK_NAME}.{argv[0]}", *argv[1:]]
    runpy.run_module(f"{PACK_NAME}.{argv[0]}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run_module(sys.argv[1:])
