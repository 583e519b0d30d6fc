"""Other packs' LaMa nodes, replaced by ours when a workflow uses them and their pack is not installed.

Newer ComfyUI (the V3 API's node replacement, late 2025 on) lets a pack register
``io.NodeReplace(new_node_id, old_node_id, old_widget_ids, input_mapping, output_mapping)``
through ``ComfyAPI().node_replacement.register(...)`` from its extension's ``on_load``. The
server applies it to every queued prompt (``NodeReplaceManager.apply_replacements``: only for
nodes whose class is NOT installed, so another pack's node is never hijacked); the front end gets
the same table from ``GET /node_replacements`` and offers it for UI workflows, where
``old_widget_ids`` names the old node's positional ``widgets_values``. A mapping entry either
copies an old input (``{"new_id", "old_id"}``) or sets a value (``{"new_id", "set_value"}``);
there is no transformation. So:

* a value is copied only where it means the same thing on our input (a link, a pixel budget, a
  file name, a boolean, a radius in pixels); otherwise our input is set to the value that
  reproduces the old node's behaviour (documented per entry in :data:`REPLACEMENTS`);
* every input of our node is listed: inputs missing from an API prompt would fail validation
  (``set_value`` our default where nothing else applies), and an old input that is copied must be
  a required one, since the server indexes ``inputs[old_id]`` directly;
* every old output is mapped (an unlisted output loses its links in the front end), except on a
  node whose outputs feed another replaced node: the server re-indexes a replaced node's output
  links through the consumer's *old* input name, which is gone (KeyError) when the consumer was
  replaced first (the order is a set's); identical indices need no re-indexing, so such a node
  (fplu's loader) has no output mapping, and the newer front end keeps its links by slot.

0.3.x (no ``node_replacement`` on the API, no ``NodeReplace`` in ``io``, ``on_load`` never called)
registers nothing and raises nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

from . import loader, refinement, remover
from ._spec import WIDGET_TYPES, NodeSpec

__all__ = ["Replacement", "REPLACEMENTS", "replacement_api", "register_replacements"]

log = logging.getLogger(__name__)

# The module that has ``NodeReplace`` and ``ComfyAPI().node_replacement``: only the unstable latest API.
REPLACEMENT_API_MODULE = "comfy_api.latest"


@dataclass(frozen=True)
class Replacement:
    """One other pack's node mapped onto one of ours.

    ``copied``: our input <- the old input of the same meaning. ``values``: our input <- a fixed
    value (what the old node did). Our other widgets get their defaults.
    """

    old_node_id: str
    pack: str  # where the old node comes from (repository, commit read)
    target: NodeSpec
    old_widget_ids: tuple[str, ...]  # the old node's widgets, in saved-workflow order
    copied: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    # (old index, our index); None = no output mapping (the links keep their indices).
    outputs: tuple[tuple[int, int], ...] | None = ((0, 0),)
    notes: str = ""  # what does not carry over, for the README and the tests

    def __post_init__(self) -> None:
        ours = {p.name: p for p in self.target.inputs}
        unknown = sorted((set(self.copied) | set(self.values)) - set(ours))
        both = sorted(set(self.copied) & set(self.values))
        sockets = [p.name for p in self.target.inputs if p.type not in WIDGET_TYPES and p.name not in self.copied]
        if unknown or both or sockets:
            raise ValueError(f"{self.old_node_id} -> {self.target.node_id}: unknown inputs {unknown}, set twice {both}, "
                             f"sockets without a source {sockets}")

    def input_mapping(self) -> list[dict[str, Any]]:
        """Every input of our node: copied, set, or our default (in our schema's order)."""
        mapping: list[dict[str, Any]] = []
        for param in self.target.inputs:
            if param.name in self.copied:
                mapping.append({"new_id": param.name, "old_id": self.copied[param.name]})
            else:
                mapping.append({"new_id": param.name, "set_value": self.values.get(param.name, param.default)})
        return mapping

    def output_mapping(self) -> list[dict[str, int]] | None:
        if self.outputs is None:
            return None
        return [{"new_idx": new, "old_idx": old} for old, new in self.outputs]

    def as_dict(self) -> dict[str, Any]:
        """What ``io.NodeReplace(...).as_dict()`` serves at ``GET /node_replacements``."""
        return {"new_node_id": self.target.node_id, "old_node_id": self.old_node_id,
                "old_widget_ids": list(self.old_widget_ids), "input_mapping": self.input_mapping(),
                "output_mapping": self.output_mapping()}

    def node_replace(self, io: Any) -> Any:
        """This replacement as the running ComfyUI's ``io.NodeReplace``."""
        return io.NodeReplace(new_node_id=self.target.node_id, old_node_id=self.old_node_id,
                              old_widget_ids=list(self.old_widget_ids), input_mapping=self.input_mapping(),
                              output_mapping=self.output_mapping())


REPLACEMENTS: tuple[Replacement, ...] = (
    # fplu/comfyui_lama_with_refiner (nodes.py, refine.py at 6e18a41): a loader of TorchScript files in
    # models/inpaint, and refine_predict with n_iters 15, lr 0.002, min_side 512, max_scales 5 and the
    # node's px_budget. Our loader finds the same file name in models/inpaint (and reads more formats).
    Replacement(
        old_node_id="INPAINT_LoadInpaintLaMaModel",
        pack="fplu/comfyui_lama_with_refiner",
        target=loader.SPEC,
        old_widget_ids=("model_name",),
        copied={"model_name": "model_name"},
        values={"dtype": "fp32"},  # fplu refines in fp32
        outputs=None,  # it feeds the replaced refiner (see the module docstring)
    ),
    Replacement(
        old_node_id="INPAINT_InpaintWithLaMaRefinerModel",
        pack="fplu/comfyui_lama_with_refiner",
        target=refinement.SPEC,
        # seed is an INT named "seed": the front end adds a control_after_generate value after it.
        old_widget_ids=("seed", "seed_control_after_generate", "px_budget"),
        copied={"model": "inpaint_model", "image": "image", "mask": "mask", "px_budget": "px_budget"},
        values={"mode": "paper", "n_iters": 15, "lr": 0.002, "min_side": 512, "max_scales": 5, "crop_to_mask": False,
                "early_stop_tol": 0.0, "mask_threshold": 0.0},
        notes="seed is dropped (the refinement is deterministic); the output keeps the input's size where fplu "
              "shrank it to px_budget",
    ),
    # sipherxyz/comfyui-art-venture modules/inpaint/lama/nodes.py (4f98452): big-lama.pt downloaded to
    # models/lama, the mask dilated with a square mask_dialation x mask_dialation kernel, plain LaMa.
    Replacement(
        old_node_id="LaMaInpaint",
        pack="sipherxyz/comfyui-art-venture",
        target=remover.SPEC,
        old_widget_ids=("mask_dialation", "device_mode"),
        copied={"image": "image", "mask": "mask", "mask_grow": "mask_dialation"},
        values={"model_name": "lama/big-lama.pt", "method": "plain", "mask_threshold": 0.0, "mask_feather": 0.0},
        notes="mask_dialation is a kernel size; copied as our radius it grows the hole up to twice as far "
              "(0, its default, is exact); device_mode is dropped (ComfyUI's model management places the model)",
    ),
    # chflame163/ComfyUI_LayerStyle(_Advance) "LayerUtility: LaMa": IOPaint's cli with lama_model; the mask
    # grown by mask_grow px (negative shrinks), blurred by mask_blur, optionally inverted; IOPaint's LaMa then
    # fills every pixel the blur reached (mask > 0).
    Replacement(
        old_node_id="LayerUtility: LaMa",
        pack="chflame163/ComfyUI_LayerStyle_Advance",
        target=remover.SPEC,
        old_widget_ids=("lama_model", "device", "invert_mask", "mask_grow", "mask_blur"),
        copied={"image": "image", "mask": "mask", "model_name": "lama_model", "invert_mask": "invert_mask",
                "mask_grow": "mask_grow", "mask_feather": "mask_blur"},
        values={"method": "plain", "mask_threshold": 0.0},
        notes="lama_model 'lama' means Big-LaMa, its other models (zits, mat, ...) are refused with a clear error; "
              "mask_grow is the same signed radius; mask_blur becomes the soft edge, which LaMa fills too (the "
              "blur's reach under IOPaint's mask > 0 rule is about 3 x mask_blur, so the hole is a little "
              "smaller); device is dropped",
    ),
    # Layer-norm/comfyui-lama-remover nodes/remover.py (2f61414): Big-LaMa from its own ckpts folder; the
    # mask is blurred by gaussblur_radius and thresholded at mask_threshold/255 (inverted), which grows the
    # hole by about twice the blur radius.
    Replacement(
        old_node_id="LamaRemover",
        pack="Layer-norm/comfyui-lama-remover",
        target=remover.SPEC,
        old_widget_ids=("mask_threshold", "gaussblur_radius", "invert_mask"),
        copied={"image": "images", "mask": "masks", "invert_mask": "invert_mask", "mask_grow": "gaussblur_radius"},
        values={"model_name": "big-lama.pt", "method": "plain", "mask_threshold": 0.02, "mask_feather": 0.0},
        notes="its 0-255 mask_threshold (default 250: a hole where the blurred mask is above ~5/255) becomes "
              "mask_threshold 0.02 whatever it was; gaussblur_radius becomes the grow radius; big-lama.pt must be in "
              "models/lama or models/inpaint (its own ckpts folder is not searched)",
    ),
)


def replacement_api() -> tuple[Any, Any] | None:
    """(``io`` module, ``ComfyAPI`` instance) where this ComfyUI offers node replacement, else None."""
    if importlib.util.find_spec("comfy_api") is None or importlib.util.find_spec(REPLACEMENT_API_MODULE) is None:
        return None
    api = importlib.import_module(REPLACEMENT_API_MODULE)
    io, comfy_api = getattr(api, "io", None), getattr(api, "ComfyAPI", None)
    if io is None or comfy_api is None or not hasattr(io, "NodeReplace"):
        return None  # 0.3.x: the V3 API without node replacement
    if not hasattr(comfy_api, "NodeReplacement"):
        return None
    instance = comfy_api()
    return (io, instance) if hasattr(instance, "node_replacement") else None


async def register_replacements() -> list[str]:
    """Register :data:`REPLACEMENTS` where the API exists; returns the old node ids registered."""
    found = replacement_api()
    if found is None:
        log.debug("LaMa: this ComfyUI has no node replacement API; other packs' LaMa nodes are not replaced")
        return []
    io, api = found
    registered = []
    for replacement in REPLACEMENTS:
        await api.node_replacement.register(replacement.node_replace(io))
        registered.append(replacement.old_node_id)
    log.info("LaMa: registered replacements for %s", ", ".join(registered))
    return registered
