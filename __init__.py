"""ComfyUI node pack: LaMa inpainting with multiscale feature refinement.

Inside ComfyUI this registers the nodes, through ``comfy_entrypoint`` where the V3 node API
exists and through ``NODE_CLASS_MAPPINGS`` otherwise (never both: the mappings would win).
Without ComfyUI (no ``folder_paths`` module, e.g. pytest importing this package, or using
``ffc``/``refine`` as libraries) it imports nothing and exports nothing.
"""

from __future__ import annotations

import importlib.util

__all__: list[str] = []

if importlib.util.find_spec("folder_paths") is not None:
    from .nodes import catalog as _catalog
    from .nodes._spec import uses_v3 as _uses_v3

    if _uses_v3():
        comfy_entrypoint = _catalog.comfy_entrypoint
        __all__ = ["comfy_entrypoint"]
    else:
        NODE_CLASS_MAPPINGS = _catalog.node_class_mappings()
        NODE_DISPLAY_NAME_MAPPINGS = _catalog.display_name_mappings()
        __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
