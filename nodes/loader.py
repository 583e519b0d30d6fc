"""``LamaFFC_LoadModel``: find LaMa files in the ``lama`` and ``inpaint`` model folders and load them.

Every format ``ffc.load_generator`` reads is accepted (safetensors with any key prefix,
TorchScript ``big-lama.pt``, Lightning ``best.ckpt``, plain ``.pth``). The result is a
:class:`LamaModel`: the float32 generator on the CPU (source of truth, used for fp32
refinement and memory estimates) plus a BatchNorm-folded copy in the chosen dtype, wrapped in a
ComfyUI ModelPatcher so that ComfyUI's model management loads, evicts and accounts for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..ffc import LamaGenerator, ModelInfo, fuse_for_inference, load_generator
from ._common import comfy
from ._spec import NodeSpec, Out, Param

__all__ = ["LamaModel", "require_model", "SPEC", "MODEL_FOLDERS", "register_model_folders", "model_names", "load_model", "ModelCache"]

log = logging.getLogger(__name__)

MODEL_TYPE = "LAMA_FFC_MODEL"
# Our folder first; "inpaint" is where comfyui-inpaint-nodes users already keep big-lama.pt.
MODEL_FOLDERS = ("lama", "inpaint")
MODEL_EXTENSIONS = {".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin"}
DTYPES = ("auto", "fp32", "bf16")
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class LamaModel:
    """What flows through a ``LAMA_FFC_MODEL`` socket."""

    name: str
    generator: LamaGenerator  # float32, CPU, never moved: fp32 refinement and estimates use it
    info: ModelInfo
    dtype: str  # "fp32" or "bf16": the dtype of the patched inference model
    patcher: Any  # comfy ModelPatcher around the BatchNorm-folded model

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        """Bytes of one float32 copy of the weights."""
        return sum(t.numel() * t.element_size() for t in self.generator.state_dict().values())

    def __repr__(self) -> str:
        return f"LamaModel({self.name!r}, {self.info.variant}, {self.dtype})"


def require_model(model: object) -> LamaModel:
    """The ``model`` input, or a TypeError that says where a LaMa model comes from."""
    if not isinstance(model, LamaModel):
        raise TypeError(f"model: expected a {MODEL_TYPE} from the 'Load LaMa Model' node, got {type(model).__name__}")
    return model


def _comfyui_present() -> bool:
    return importlib.util.find_spec("folder_paths") is not None


def register_model_folders() -> None:
    """Register ``models/lama`` and ``models/inpaint`` without clobbering what is already there.

    extra_model_paths.yaml entries (registered before packs load, with an empty extension set)
    and other packs' registrations keep their paths; extension sets are merged.
    """
    import folder_paths

    for name in MODEL_FOLDERS:
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, extensions = folder_paths.folder_names_and_paths[name]
            paths = list(paths) + ([default] if default not in paths else [])
            folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | MODEL_EXTENSIONS)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(MODEL_EXTENSIONS))


def model_names() -> list[str]:
    """Combo entries ``<folder>/<file>`` for every model file; empty without ComfyUI."""
    if not _comfyui_present():
        return []
    import folder_paths

    register_model_folders()
    names = []
    for folder in MODEL_FOLDERS:
        names += [f"{folder}/{name.replace(os.sep, '/')}" for name in folder_paths.get_filename_list(folder)]
    return names


def resolve_model_path(model_name: str) -> str:
    """``"lama/big-lama.safetensors"`` -> the file's full path (FileNotFoundError naming it)."""
    folder, _, name = model_name.partition("/")
    if folder not in MODEL_FOLDERS or not name:
        raise ValueError(f"model_name: expected '<folder>/<file>' with folder one of {MODEL_FOLDERS}, got {model_name!r}")
    import folder_paths

    register_model_folders()
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(f"model_name: LaMa model {model_name!r} not found (searched {searched})")
    return path


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> bf16 only where ComfyUI says bf16 is good on ``device``; never fp16 (FFTs)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bf16" if comfy("model_management").should_use_bf16(device) else "fp32"


def _patcher_class() -> type:
    model_patcher = comfy("model_patcher")
    return getattr(model_patcher, "CoreModelPatcher", model_patcher.ModelPatcher)


def load_model(model_name: str, path: str, dtype: str) -> LamaModel:
    """Read ``path`` and wrap it for ComfyUI; ``dtype`` is already resolved (fp32 / bf16)."""
    mm = comfy("model_management")
    # ComfyUI runs nodes under inference_mode; tensors made there could never enter autograd,
    # which the refinement needs.
    with torch.inference_mode(False):
        generator, info = load_generator(path)
        fused: nn.Module = fuse_for_inference(generator).eval().to(_TORCH_DTYPES[dtype])
    patcher = _patcher_class()(fused, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    log.info("LaMa model %s (%s): %s", model_name, dtype, info.describe())
    return LamaModel(name=model_name, generator=generator, info=info, dtype=dtype, patcher=patcher)


class ModelCache:
    """The last few loaded models, keyed on (path, size, mtime, dtype).

    ComfyUI re-executes the loader whenever its cached output is dropped (another model name
    picked and back, a changed file fingerprint); this keeps re-runs from reading the file again
    while a replaced file (new size or mtime) is still picked up.
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple, LamaModel] = OrderedDict()

    @staticmethod
    def key(path: str, dtype: str) -> tuple:
        stat = os.stat(path)
        return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, dtype

    def get_or_load(self, model_name: str, path: str, dtype: str) -> LamaModel:
        key = self.key(path, dtype)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_model(model_name, path, dtype)
        self._models[key] = model
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        self._models.clear()


CACHE = ModelCache()


def run(model_name: str, dtype: str = "auto") -> tuple[LamaModel]:
    path = resolve_model_path(model_name)
    resolved = resolve_dtype(dtype, comfy("model_management").get_torch_device())
    return (CACHE.get_or_load(model_name, path, resolved),)


def fingerprint(model_name: str, dtype: str = "auto") -> tuple:
    """Changes when the file is replaced, so ComfyUI re-runs the loader."""
    try:
        return ModelCache.key(resolve_model_path(model_name), dtype)
    except (OSError, ValueError):
        return (model_name, dtype)  # let run() report the problem


SPEC = NodeSpec(
    node_id="LamaFFC_LoadModel",
    display_name="Load LaMa Model",
    category="inpaint/lama",
    description=(
        "Loads a LaMa inpainting model from models/lama or models/inpaint: safetensors (any key prefix), "
        "TorchScript big-lama.pt, Lightning best.ckpt or a plain .pth. ComfyUI's model management moves it "
        "to the GPU when a LaMa node runs and frees it when other models need the memory."
    ),
    inputs=(
        Param.combo("model_name", model_names, tooltip=(
            "Model file, shown as <folder>/<file>. Put files into models/lama (or models/inpaint, where "
            "comfyui-inpaint-nodes keeps big-lama.pt); extra_model_paths.yaml may add 'lama:' or 'inpaint:' folders.")),
        Param.combo("dtype", DTYPES, default="auto", tooltip=(
            "Weight precision for inference. auto = bf16 where ComfyUI considers bf16 fast and safe on this GPU, "
            "else fp32. fp16 is not offered: LaMa's FFTs fail or overflow in half precision.")),
    ),
    outputs=(Out(MODEL_TYPE, "model", "The loaded LaMa model, for LaMa Inpaint and LaMa Multiscale Refine."),),
    run=run,
    fingerprint=fingerprint,
)
