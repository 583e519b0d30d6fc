"""``LamaFFC_RemoveObject``: one node from a model name, an image and a mask to the filled image.

What it does is what the pack's other nodes do in a row, so its result is the same as that
chain's with the same settings: **Load LaMa Model** (same name resolution across ``models/lama`` and
``models/inpaint``, same weak cache and ComfyUI model management), **LaMa Mask Preprocess**
(threshold, grow or shrink with a true disk, feather; its defaults except the grow), then **LaMa Inpaint** or
**LaMa Multiscale Refine** (mode auto), chosen by ``method``:

* ``auto``: the refinement planner's auto rules decide (``refine.plan``, mode auto). When its
  plan refines at more than one scale anywhere, that plan is executed; when every hole region
  would run one scale (holes near LaMa's 256 px training size, or ``max_seconds`` too short) the
  refinement would change nothing, and plain LaMa at full resolution runs instead. Either way
  the node says which and why.
* ``plain`` / ``refine``: that one. A model whose variant cannot be refined is inpainted without
  refinement, with a warning on the node.

``mask_grow`` is one signed number, in pixels around the hole, like core ComfyUI's GrowMask
``expand``: ``+n`` dilates with a disk of diameter ``2n + 1``, ``-n`` erodes with it. Its default
``+7`` dilates with Mask Preprocess's 15 px disk where Mask Preprocess erodes with it (``-7``):
a remover's mask is drawn on the object, and eroding it leaves the object's rim behind.

Model names may also be the legacy value ``lama`` (what LayerStyle's LaMa node stores; it means
Big-LaMa): see :data:`LEGACY_MODEL_NAMES`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..refine import RefinePlan
from . import inpaint, loader, masks, refinement
from ._common import (
    InpaintInputs,
    check_interrupt,
    comfy,
    inpaint_inputs,
    interrupted,
    mask_for_image,
    mask_to_comfy,
    split_image,
    unchanged_outputs,
)
from ._spec import NodeSpec, Out, Param
from ._ui import node_message
from .loader import LamaModel

__all__ = ["SPEC", "METHODS", "LEGACY_MODEL_NAMES", "NOT_LAMA_MODEL_NAMES", "resolve_model_name", "grow_to_operation"]

METHODS = ("auto", "plain", "refine")

# Model names other packs store in workflows, and the files they mean (first found wins).
LEGACY_MODEL_NAMES: dict[str, tuple[str, ...]] = {
    "lama": ("big-lama.safetensors", "big-lama.pt", "big-lama.ckpt"),  # LayerStyle's LaMa node (IOPaint's name)
}
# IOPaint model names LayerStyle's LaMa node also offers: other networks, never run as LaMa.
NOT_LAMA_MODEL_NAMES = ("ldm", "zits", "mat", "fcf", "manga", "spread")


def _param(node: NodeSpec, name: str) -> Param:
    return next(p for p in node.inputs if p.name == name)


# LaMa Mask Preprocess's defaults, read from its spec (declared once).
_THRESHOLD = _param(masks.SPEC, "threshold")
_FEATHER = _param(masks.SPEC, "feather")
_KERNEL = _param(masks.SPEC, "kernel_size")
# Grow by Mask Preprocess's disk (15 px: +7) instead of eroding by it: a remover's mask is drawn on
# the object, and eroding it would leave the object's rim and shadow for LaMa to copy back.
DEFAULT_GROW = _KERNEL.default // 2
MAX_GROW = 255


def resolve_model_name(model_name: str) -> str:
    """A model name -> the file's full path; legacy names of other packs are translated.

    Raises:
        ValueError: a name of another network (IOPaint's ``zits``, ``mat`` ...), or not a name.
        FileNotFoundError: nothing found; the message says where it was looked for.
    """
    if isinstance(model_name, str) and model_name in NOT_LAMA_MODEL_NAMES:
        raise ValueError(f"model_name: '{model_name}' is IOPaint's {model_name} model, not LaMa (a workflow from "
                         "LayerStyle's LaMa node chose it); pick a LaMa file, e.g. lama/big-lama.safetensors")
    candidates = LEGACY_MODEL_NAMES.get(model_name) if isinstance(model_name, str) else None
    if candidates is None:
        return loader.resolve_model_path(model_name)
    for candidate in candidates:
        try:
            return loader.resolve_model_path(candidate)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"model_name: '{model_name}' (a name other packs use for Big-LaMa) needs one of "
                            f"{', '.join(candidates)} in models/lama or models/inpaint; none was found")


def validate_model_name(model_name: str) -> bool | str:
    """ComfyUI's pre-run check: True, or why the model cannot be found (see the loader's)."""
    try:
        resolve_model_name(model_name)
    except (OSError, ValueError) as err:
        return str(err)
    return True


def grow_to_operation(grow: int) -> tuple[str, int]:
    """``mask_grow`` -> (LaMa Mask Preprocess operation, disk diameter)."""
    if not isinstance(grow, int) or isinstance(grow, bool) or abs(grow) > MAX_GROW:
        raise ValueError(f"mask_grow: expected an integer from -{MAX_GROW} to {MAX_GROW} px, got {grow!r}")
    if grow == 0:
        return "none", 1
    return ("dilate" if grow > 0 else "erode"), 2 * abs(grow) + 1


def prepared_mask(mask: object, image: object, invert_mask: bool, threshold: float, grow: int,
                  feather: float) -> Tensor:
    """The MASK input made into the hole LaMa fills, (B, 1, H, W) in [0, 1] at the image's size.

    A mask of another size is resized to the image first (with the usual warning), so that
    ``mask_grow`` and ``mask_feather`` are in the image's pixels. Warnings go to the node.
    """
    rgb, _ = split_image(image)
    source = mask_for_image(mask, rgb)
    if invert_mask:
        source = 1 - source
    operation, size = grow_to_operation(grow)
    device = comfy("model_management").get_torch_device()
    made, warnings = masks.prepare_mask(source.to(device), threshold, operation, size, feather,
                                        cancel=interrupted)
    for warning in warnings:
        node_message(warning, level="warning")
    return made.to(source.device)


def _refine_plan(lama: LamaModel, inputs: InpaintInputs, method: str, max_seconds: float) -> RefinePlan | None:
    """The refinement to run, or None for plain LaMa (the decision is said on the node)."""
    if method == "plain":
        node_message("method plain: LaMa at full resolution, no refinement")
        return None
    if not lama.info.refinable:
        node_message(loader.not_refinable_message(lama) + "; inpainting without refinement",
                     level="warning" if method == "refine" else "info")
        return None
    device = torch.device(lama.patcher.load_device)
    settings = refinement.node_settings(mode="auto", max_seconds=max_seconds,
                                        precision=refinement.resolve_precision("auto", lama, device))
    made = refinement.make_plan(lama, inputs, settings, show=False)
    if method == "auto" and all(unit.n_scales == 1 for unit in made.units):
        node_message(f"auto: plain LaMa at full resolution; refining would not help here (its plan: {made.summary()})")
        for note in made.notes:
            if note.level == "warning":
                node_message(f"refinement plan: {note.text}", log_it=False)
        return None
    if method == "auto":
        node_message("auto: multiscale refinement (the holes' regions are large enough for several scales)")
    refinement.show_plan(made)
    return made


def run(model_name: str, image: Tensor, mask: Tensor, method: str = "auto", invert_mask: bool = False,
        mask_threshold: float = _THRESHOLD.default, mask_grow: int = DEFAULT_GROW, mask_feather: float = _FEATHER.default,
        max_seconds: float = 0.0, dtype: str = "auto") -> tuple[Tensor, Tensor]:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if max_seconds != 0 and method == "plain":
        node_message("max_seconds is used when refining (method auto or refine); plain LaMa ignores it")
    path = resolve_model_name(model_name)  # a wrong name fails before any work
    hole = prepared_mask(mask, image, invert_mask, mask_threshold, mask_grow, mask_feather)
    lama = loader.load(model_name, dtype, path=path)
    check_interrupt()
    inputs = inpaint_inputs(image, hole, 0.0)
    if not inputs.any_hole():
        image_out, _ = unchanged_outputs(inputs, SPEC.display_name)
        return image_out, mask_to_comfy(inputs.soft)
    made = _refine_plan(lama, inputs, method, max_seconds)
    if made is None:
        filled, _ = inpaint.run(model=lama, image=image, mask=hole)
    else:
        filled, _ = refinement.refine_with_plan(lama, inputs, made.settings, made)
    return filled, mask_to_comfy(inputs.soft)


def fingerprint(model_name: str, dtype: str = "auto", **_inputs: Any) -> tuple:
    """Changes when the model file is replaced, so ComfyUI runs the node again."""
    return loader.fingerprint(model_name, dtype, resolve=resolve_model_name)


SPEC = NodeSpec(
    node_id="LamaFFC_RemoveObject",
    display_name="LaMa Remove Object",
    category="inpaint/lama",
    description=(
        "One node to remove what the mask covers: loads the LaMa model by name (models/lama or models/inpaint, "
        "through ComfyUI's model management), prepares the mask like LaMa Mask Preprocess (invert, threshold, grow "
        "or shrink with a true disk, soft edge), then fills the hole with plain LaMa or with multiscale refinement. "
        "method auto lets the refinement planner decide: refinement where the holes are large enough for several "
        "scales, plain LaMa at full resolution where it would change nothing; the node says what it chose and why. "
        "The same as Load LaMa Model -> LaMa Mask Preprocess -> LaMa Inpaint / LaMa Multiscale Refine with their "
        "defaults. The output has the input's size; pixels outside the prepared mask are copied bit for bit."
    ),
    inputs=(
        Param.combo("model_name", loader.model_names, tooltip=(
            "LaMa model file, <folder>/<file>, found in models/lama or models/inpaint wherever it is "
            "(as Load LaMa Model). 'lama' (from other packs' workflows) means big-lama.safetensors or big-lama.pt.")),
        Param.socket("image", "IMAGE", tooltip="Images to clean (B, H, W, 3 or 4), any size; alpha passes through."),
        Param.socket("mask", "MASK", tooltip=(
            "What to remove, 1 = remove. Any size (resized to the image with nearest), batch 1 or B.")),
        Param.combo("method", METHODS, default="auto", tooltip=(
            "auto: refine where it helps (holes whose regions are large enough for several scales), plain LaMa "
            "elsewhere; the node says which. plain: LaMa at full resolution, fast. refine: always multiscale "
            "refinement (mode auto), much slower, sharper large fills.")),
        Param.boolean("invert_mask", False, tooltip="Remove where the mask is 0 instead of 1."),
        Param.float("mask_threshold", _THRESHOLD.default, lo=0.0, hi=1.0, step=0.01, tooltip=(
            "Mask values above this are the hole (as LaMa Mask Preprocess's threshold); cleans soft or JPEG masks.")),
        Param.int("mask_grow", DEFAULT_GROW, lo=-MAX_GROW, hi=MAX_GROW, tooltip=(
            "Pixels to grow (+) or shrink (-) the hole by, with a true disk (like GrowMask's expand). Grow it to "
            "cover an object's edge or shadow. The default grows by 7 px (a 15 px disk, Mask Preprocess's kernel, "
            "dilating: an eroded mask would leave the object's rim behind).")),
        Param.float("mask_feather", _FEATHER.default, lo=0.0, hi=256.0, step=0.5, tooltip=(
            "Width in pixels of a soft edge outside the hole where the fill blends into the original (0 = hard).")),
        Param.float("max_seconds", 0.0, lo=0.0, hi=86_400.0, step=10.0, round=1.0, advanced=True, tooltip=(
            "Time budget for a refinement (0 = no limit): the planner lowers iterations, then the working size, "
            "and with auto falls back to plain LaMa when no refinement fits; it says so.")),
        Param.combo("dtype", loader.DTYPES, default="auto", advanced=True, tooltip=(
            "Weight precision, as Load LaMa Model: auto = bf16 where ComfyUI considers it fast and safe, else fp32.")),
    ),
    outputs=(
        Out("IMAGE", "image", "The image with the masked area filled, same size and channels as the input."),
        Out("MASK", "mask", "The mask that was used, after invert, threshold, grow and feather (B, H, W)."),
    ),
    run=run,
    fingerprint=fingerprint,
    validate=validate_model_name,
)
