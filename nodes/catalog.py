"""Every node of the pack, and what ComfyUI needs to register them (V3 entrypoint or V1 mappings)."""

from __future__ import annotations

from typing import Any

from . import inpaint, loader, masks, refinement
from ._spec import NodeSpec, build_node_class, v3_api

__all__ = ["SPECS", "node_classes", "node_class_mappings", "display_name_mappings", "comfy_entrypoint"]

SPECS: tuple[NodeSpec, ...] = (loader.SPEC, masks.SPEC, inpaint.SPEC, refinement.SPEC)


def node_classes() -> list[type]:
    """One class per spec, V3 or V1 depending on the running ComfyUI."""
    return [build_node_class(spec) for spec in SPECS]


def node_class_mappings() -> dict[str, type]:
    return {cls.SPEC.node_id: cls for cls in node_classes()}


def display_name_mappings() -> dict[str, str]:
    return {spec.node_id: spec.display_name for spec in SPECS}


async def comfy_entrypoint() -> Any:
    """V3 registration: a ComfyExtension (from the versioned V3 API) listing our nodes."""
    api = v3_api()
    if api is None:
        raise ImportError("comfy_entrypoint: this ComfyUI has no V3 node API; the pack registers V1 classes instead")
    classes = node_classes()

    class LamaFFCExtension(api.ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return classes

    return LamaFFCExtension()
