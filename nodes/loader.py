"""``LamaFFC_LoadModel``: find LaMa files in the ``lama`` and ``inpaint`` model folders and load them.

Every format ``ffc.load_generator`` reads is accepted (safetensors with any key prefix,
TorchScript ``big-lama.pt``, Lightning ``best.ckpt``, plain ``.pth``). The result is a
:class:`LamaModel`: ONE copy of the weights, BatchNorm-folded, in the chosen dtype, wrapped in a
ComfyUI ModelPatcher so that ComfyUI's model management loads, evicts and accounts for it.

Memory is owned by ComfyUI. The pack keeps no model alive by itself: the loader's output lives
in ComfyUI's node output cache, and :class:`ModelCache` only finds a model that is still alive
there (weak references). "Free model and node cache" (``POST /free``) unloads the patcher and
drops the output cache, and the weights go with it. The unfused float32 generator (needed only
to refine a bf16 model in fp32) is read from the file on demand and lives only while the caller
holds it (:meth:`LamaModel.float32_generator`).

Model names are ``<folder>/<file>`` as the combo lists them, but a name is resolved across both
folders (and every path extra_model_paths.yaml adds to them), so a workflow that asks for
``lama/big-lama.pt`` runs when the file is in ``models/inpaint/``. ComfyUI (V1 nodes) rejects a
combo value that is not in the list before the run unless the node validates that input itself
(``execution.validate_inputs`` skips its list check for inputs ``VALIDATE_INPUTS`` names), so
the loader validates ``model_name`` with the same resolution and names what exists when it fails.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..ffc import LamaGenerator, ModelInfo, fuse_for_inference, load_generator
from ._common import comfy
from ._spec import NodeSpec, Out, Param

__all__ = [
    "LamaModel",
    "require_model",
    "SPEC",
    "MODEL_FOLDERS",
    "register_model_folders",
    "model_names",
    "resolve_model_path",
    "validate_model_name",
    "load_model",
    "ModelCache",
]

log = logging.getLogger(__name__)

MODEL_TYPE = "LAMA_FFC_MODEL"
# Our folder first; "inpaint" is where comfyui-inpaint-nodes users already keep big-lama.pt.
MODEL_FOLDERS = ("lama", "inpaint")
MODEL_EXTENSIONS = {".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin"}
DTYPES = ("auto", "fp32", "bf16")
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def file_key(path: str) -> tuple[str, int, int]:
    """(real path, size, mtime in ns): changes when the file is replaced."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True, eq=False)
class LamaModel:
    """What flows through a ``LAMA_FFC_MODEL`` socket: one copy of the weights, in the patcher."""

    name: str
    info: ModelInfo
    dtype: str  # "fp32" or "bf16": the dtype of the patched inference model
    patcher: Any  # comfy ModelPatcher around the BatchNorm-folded model (the only copy of the weights)
    source: tuple[str, int, int]  # file_key() of the file the weights were read from
    _float32: dict = field(default_factory=dict, repr=False)  # {"generator": weakref} while one is alive

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        """Bytes of one float32 copy of the inference (BatchNorm-folded) weights."""
        return sum(p.numel() for p in self.patcher.model.parameters()) * 4

    def float32_generator(self) -> LamaGenerator:
        """The unfused float32 generator on the CPU, in eval mode, read from the file on demand.

        Only a float32 refinement of a bf16 model needs it. It is not kept: it lives while the
        caller holds it (a second call meanwhile returns the same object), so the pack holds one
        copy of the weights at rest. Made outside inference mode, so autograd can use it.

        Raises:
            FileNotFoundError: the file was replaced or removed since the model was loaded (run the
                loader again: ComfyUI does so on the next queue, as the file's fingerprint changed).
        """
        alive = self._float32.get("generator")
        generator = alive() if alive is not None else None
        if generator is not None:
            return generator
        path = self.source[0]
        try:
            unchanged = file_key(path) == self.source
        except OSError:
            unchanged = False
        if not unchanged:
            raise FileNotFoundError(f"model: the LaMa file {path} was replaced or removed after '{self.name}' was "
                                    "loaded; queue the workflow again so the loader reads it anew")
        with torch.inference_mode(False):
            generator, _ = load_generator(path)
        generator.eval()
        self._float32["generator"] = weakref.ref(generator)
        return generator

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


def _split_model_name(model_name: object) -> tuple[str | None, str]:
    """``"lama/a/b.pt"`` -> ("lama", "a/b.pt"); a name without a known folder -> (None, name)."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name: expected a model file name such as 'lama/big-lama.safetensors', got {model_name!r}")
    parts = model_name.replace("\\", "/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"model_name: expected '<folder>/<file>' inside the model folders, got {model_name!r}")
    if len(parts) > 1 and parts[0] in MODEL_FOLDERS:
        return parts[0], "/".join(parts[1:])
    return None, "/".join(parts)


def _not_found(model_name: str, candidates: list[str]) -> FileNotFoundError:
    import folder_paths

    searched = "; ".join(f"{folder}: {', '.join(folder_paths.get_folder_paths(folder)) or '(no folder)'}"
                         for folder in MODEL_FOLDERS)
    available = model_names()
    if candidates:
        found = f"several files are called that: {', '.join(candidates)}; pick one"
    elif available:
        shown = ", ".join(available[:12]) + (f", ... ({len(available)} in all)" if len(available) > 12 else "")
        found = f"available: {shown}"
    else:
        found = "no LaMa model files there; put big-lama.pt or a .safetensors file into one of these folders"
    return FileNotFoundError(f"model_name: LaMa model {model_name!r} not found (searched {searched}); {found}")


def resolve_model_path(model_name: str) -> str:
    """A model name -> the file's full path, looked up across ``lama`` and ``inpaint``.

    ``lama/x.pt`` is looked for as ``x.pt`` in the ``lama`` folders, then in the ``inpaint``
    folders (and the other way round), so workflows work wherever the user keeps the file; a
    name without a folder is looked for in both. Failing that, a file of the same name in a
    subfolder is used when there is exactly one.

    Raises:
        ValueError: not a model name (empty, or leaving the model folders with ``..``).
        FileNotFoundError: nothing found; the message lists the folders searched and what exists.
    """
    folder, relative = _split_model_name(model_name)
    import folder_paths

    register_model_folders()
    order = [folder] + [f for f in MODEL_FOLDERS if f != folder] if folder else list(MODEL_FOLDERS)
    for candidate in order:
        path = folder_paths.get_full_path(candidate, relative)
        if path is not None:
            if candidate != folder:
                log.info("LaMa: model %r found as %s/%s (%s)", model_name, candidate, relative, path)
            return path
    basename = relative.rsplit("/", 1)[-1]
    same_name = [name for name in model_names() if name.rsplit("/", 1)[-1] == basename]
    if len(same_name) == 1:
        found_folder, found = same_name[0].split("/", 1)
        path = folder_paths.get_full_path(found_folder, found)
        if path is not None:
            log.info("LaMa: model %r found as %s (%s)", model_name, same_name[0], path)
            return path
    raise _not_found(model_name, same_name if len(same_name) > 1 else [])


def validate_model_name(model_name: str) -> bool | str:
    """ComfyUI's pre-run check of ``model_name``: True, or why it cannot be loaded.

    Declaring it makes ComfyUI skip its own "value not in list" check for this input only, so a
    workflow's ``lama/big-lama.pt`` is accepted when the file is in ``models/inpaint``.
    """
    try:
        resolve_model_path(model_name)
    except (OSError, ValueError) as err:
        return str(err)
    return True


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> bf16 only where ComfyUI says bf16 is good on ``device``; never fp16 (FFTs)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bf16" if comfy("model_management").should_use_bf16(device) else "fp32"


def patcher_class() -> type:
    """The classic ``comfy.model_patcher.ModelPatcher``, chosen explicitly, on every ComfyUI version.

    Newer ComfyUI rebinds ``CoreModelPatcher`` to ``ModelPatcherDynamic`` when comfy-aimdo
    (DynamicVRAM) is active. That patcher streams the weights of ``comfy.ops`` layers on demand;
    our network is plain torch, so it would force-load every weight anyway (keeping a backup of
    each), ignore the activation estimate we pass to ``load_models_gpu`` when it is the only
    model loaded (it then frees nothing for dynamic models), and assert on full loads. The
    classic patcher makes ComfyUI free room for weights plus activations, which LaMa needs; being a
    real ``ModelPatcher`` subclass instance, it also lets newer ComfyUI's RAM-pressure output cache
    recognise our output as a model (``is_model_patcher_output``) and evict it first.
    """
    return comfy("model_patcher").ModelPatcher


def load_model(model_name: str, path: str, dtype: str) -> LamaModel:
    """Read ``path`` and wrap it for ComfyUI; ``dtype`` is already resolved (fp32 / bf16)."""
    mm = comfy("model_management")
    source = file_key(path)
    # ComfyUI runs nodes under inference_mode; tensors made there could never enter autograd,
    # which the refinement needs.
    with torch.inference_mode(False):
        generator, info = load_generator(path)
        fused: nn.Module = fuse_for_inference(generator).eval().to(_TORCH_DTYPES[dtype])
    del generator  # the fused copy is the only one kept
    patcher = patcher_class()(fused, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    log.info("LaMa model %s (%s): %s", model_name, dtype, info.describe())
    return LamaModel(name=model_name, info=info, dtype=dtype, patcher=patcher, source=source)


class ModelCache:
    """Finds a loaded model that is still alive, keyed on (path, size, mtime, dtype); keeps none alive.

    ComfyUI re-executes the loader while its previous output may still be cached elsewhere (two
    loader nodes for one file, a prompt queued while another holds the model); this returns that
    same model instead of a second copy. The references are weak: what ComfyUI drops (its output
    cache on "Free model and node cache", or a new model picked) is freed, and a replaced file
    (new size or mtime) is read again.
    """

    def __init__(self) -> None:
        self._models: weakref.WeakValueDictionary[tuple, LamaModel] = weakref.WeakValueDictionary()

    @staticmethod
    def key(path: str, dtype: str) -> tuple:
        return (*file_key(path), dtype)

    def get_or_load(self, model_name: str, path: str, dtype: str) -> LamaModel:
        key = self.key(path, dtype)
        model = self._models.get(key)
        if model is None:
            model = load_model(model_name, path, dtype)
            self._models[key] = model
        return model

    def alive(self) -> list[LamaModel]:
        """The models that something (ComfyUI's caches, a running node) still holds."""
        return list(self._models.values())

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
        "TorchScript big-lama.pt, Lightning best.ckpt or a plain .pth. A name is found in either folder, so a "
        "workflow asking for lama/big-lama.pt runs with the file in models/inpaint. ComfyUI's model management "
        "moves it to the GPU when a LaMa node runs, frees it when other models need the memory, and "
        "'Free model and node cache' releases it."
    ),
    inputs=(
        Param.combo("model_name", model_names, tooltip=(
            "Model file, shown as <folder>/<file>. Put files into models/lama (or models/inpaint, where "
            "comfyui-inpaint-nodes keeps big-lama.pt); extra_model_paths.yaml may add 'lama:' or 'inpaint:' folders. "
            "A name is looked up in both folders, so workflows work wherever the file is.")),
        Param.combo("dtype", DTYPES, default="auto", tooltip=(
            "Weight precision for inference. auto = bf16 where ComfyUI considers bf16 fast and safe on this GPU, "
            "else fp32. fp16 is not offered: LaMa's FFTs fail or overflow in half precision.")),
    ),
    outputs=(Out(MODEL_TYPE, "model", "The loaded LaMa model, for LaMa Inpaint and LaMa Multiscale Refine."),),
    run=run,
    fingerprint=fingerprint,
    validate=validate_model_name,
)
