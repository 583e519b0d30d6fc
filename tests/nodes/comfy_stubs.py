"""Stand-ins for exactly the ``comfy.*`` and ``folder_paths`` functions the nodes call.

``ComfyStubs(models_dir).modules()`` returns fake modules (each with a ``__spec__``, so
``importlib.util.find_spec`` sees them) to put into ``sys.modules``; the stub records what the
nodes did (loads, memory requests, progress and preview images, messages shown on the node,
cache flushes) for the tests to check. ``server`` (``PromptServer.instance.send_progress_text``)
and ``comfy_execution.utils`` (``get_executing_context``) are there unless ``with_server`` is
False (an old ComfyUI, or no server: messages are then only logged).

Two generations of ComfyUI are mirrored where the pack must cope with both:

* memory: like ``comfy.model_management`` the stub keeps loaded patchers only through weak
  references (``LoadedModel._model``), and ``unload_all_models()`` is what ``POST /free`` calls;
* patchers: 0.3.64 has only ``ModelPatcher``; newer ComfyUI (``dynamic_vram=True``) also has
  ``ModelPatcherDynamic`` and binds ``CoreModelPatcher`` to it when comfy-aimdo is active
  (``main.py``), with its rules (a CPU load device gets a plain ``ModelPatcher``; ``load`` asserts
  on full loads; non-``comfy.ops`` weights are force-loaded next to a backup of each), and
  ``is_model_patcher_output``, by which its RAM-pressure cache finds model outputs;
* validation: :func:`validate_like_comfyui` applies ``execution.validate_inputs``' rule that a
  V1 combo value must be in the list unless ``VALIDATE_INPUTS`` names that input.
"""

from __future__ import annotations

import importlib.machinery
import inspect
import os
import weakref
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch


class StubOOM(Exception):
    """What ``comfy.model_management.OOM_EXCEPTION`` is on a CUDA build (torch.cuda.OutOfMemoryError)."""


class StubInterrupt(Exception):
    """``comfy.model_management.InterruptProcessingException``."""


def _module(name: str, package: bool = False) -> ModuleType:
    module = ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=package)
    if package:
        module.__path__ = []
    return module


@dataclass
class ProgressRecord:
    total: int
    updates: list[tuple[int, int]] = field(default_factory=list)
    previews: list[tuple[int, Any]] = field(default_factory=list)  # (value, ("JPEG", PIL image, max size))


@dataclass(frozen=True)
class ExecutionContext:
    """``comfy_execution.utils.ExecutionContext``."""

    prompt_id: str
    node_id: str
    list_index: int | None = None


@dataclass
class ComfyStubs:
    """Configurable fakes plus what the nodes did with them."""

    models_dir: str
    bf16: bool = False  # what should_use_bf16 answers
    interrupt_after: int | None = None  # raise StubInterrupt on this many-th interrupt check
    with_raise_non_oom: bool = True  # newer ComfyUI has raise_non_oom
    oom_exception: type = StubOOM  # Exception on CPU-only builds
    loads: list[dict[str, Any]] = field(default_factory=list)
    freed: list[int] = field(default_factory=list)
    cache_flushes: int = 0
    interrupt_checks: int = 0
    progress: list[ProgressRecord] = field(default_factory=list)
    folder_names_and_paths: dict[str, tuple[list[str], Any]] = field(default_factory=dict)
    dynamic_vram: bool = False  # newer ComfyUI with comfy-aimdo: CoreModelPatcher = ModelPatcherDynamic
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # get_torch_device()
    # What comfy.model_management.current_loaded_models holds: weak references to patchers.
    loaded: list[weakref.ref] = field(default_factory=list)
    total_memory: int = 24 * 2**30  # what get_total_memory answers (the CPU path reads the real RAM)
    with_server: bool = True
    node_id: str = "7"  # the executing node
    texts: list[tuple[str, str]] = field(default_factory=list)  # (node id, text) sent as progress text

    def loaded_patchers(self) -> list[Any]:
        """The patchers ComfyUI counts as loaded and that are still alive."""
        return [patcher for ref in self.loaded if (patcher := ref()) is not None]

    @property
    def node_text(self) -> str:
        """The text the front end would now show on the node (the latest progress text)."""
        return self.texts[-1][1] if self.texts else ""

    # -- folder_paths ------------------------------------------------------------------------

    def _folder_paths(self) -> ModuleType:
        fp = _module("folder_paths")
        fp.models_dir = self.models_dir
        fp.folder_names_and_paths = self.folder_names_and_paths

        def get_folder_paths(name: str) -> list[str]:
            return list(fp.folder_names_and_paths[name][0])

        def get_filename_list(name: str) -> list[str]:
            paths, extensions = fp.folder_names_and_paths[name]
            found = []
            for root in paths:
                for folder, _, files in os.walk(root):
                    for file in files:
                        if not extensions or os.path.splitext(file)[1].lower() in extensions:
                            found.append(os.path.relpath(os.path.join(folder, file), root))
            return sorted(set(found))

        def get_full_path(name: str, filename: str) -> str | None:
            for root in fp.folder_names_and_paths[name][0]:
                path = os.path.join(root, filename)
                if os.path.isfile(path):
                    return path
            return None

        fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
        return fp

    # -- comfy.model_management --------------------------------------------------------------

    def _model_management(self) -> ModuleType:
        mm = _module("comfy.model_management")
        cpu = torch.device("cpu")
        mm.get_torch_device = lambda: self.device
        mm.unet_offload_device = lambda: cpu
        mm.intermediate_device = lambda: cpu
        mm.should_use_bf16 = lambda device=None, **kw: self.bf16
        mm.OOM_EXCEPTION = self.oom_exception
        mm.InterruptProcessingException = StubInterrupt

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            self.loads.append({"models": list(models), "memory_required": memory_required,
                               "force_full_load": force_full_load})
            for patcher in models:
                if patcher.is_dynamic():
                    patcher.load(patcher.load_device, full_load=False)  # newer ComfyUI: never a full load
                else:
                    patcher.model.to(patcher.load_device)
                if patcher not in self.loaded_patchers():
                    self.loaded.insert(0, weakref.ref(patcher))

        def free_memory(memory_required, device, keep_loaded=()):
            self.freed.append(memory_required)

        def unload_all_models():
            # free_memory(1e30, get_torch_device()): every loaded patcher goes to its offload device
            # and leaves current_loaded_models (ComfyUI never held it strongly).
            for patcher in self.loaded_patchers():
                patcher.detach()
            self.loaded.clear()

        def soft_empty_cache(force=False):
            self.cache_flushes += 1

        def throw_exception_if_processing_interrupted():
            self.interrupt_checks += 1
            if self.interrupt_after is not None and self.interrupt_checks >= self.interrupt_after:
                raise StubInterrupt("Processing interrupted")

        def raise_non_oom(err):
            if not isinstance(err, StubOOM):
                raise err

        mm.get_total_memory = lambda dev=None, torch_total_too=False: self.total_memory
        mm.extra_reserved_memory = lambda: 400 * 2**20
        mm.load_models_gpu, mm.free_memory, mm.soft_empty_cache = load_models_gpu, free_memory, soft_empty_cache
        mm.unload_all_models = unload_all_models
        mm.is_device_cpu = lambda device: torch.device(device).type == "cpu"
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        if self.with_raise_non_oom:
            mm.raise_non_oom = raise_non_oom
        return mm

    # -- comfy.utils / comfy.model_patcher ---------------------------------------------------

    def _utils(self) -> ModuleType:
        utils = _module("comfy.utils")
        stubs = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.record = ProgressRecord(total)
                stubs.progress.append(self.record)

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.record.total = total
                self.record.updates.append((value, self.record.total))
                if preview is not None:
                    self.record.previews.append((value, preview))

        utils.ProgressBar = ProgressBar
        return utils

    def _model_patcher(self) -> ModuleType:
        mp = _module("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False,
                         fast_disk=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

            def is_dynamic(self):
                return False

            def detach(self, unpatch_all=True):
                self.model.to(self.offload_device)

        mp.ModelPatcher = ModelPatcher
        if not self.dynamic_vram:
            return mp  # 0.3.64: no CoreModelPatcher, no ModelPatcherDynamic

        def is_model_patcher_output(output):
            # Newer ComfyUI's RAM-pressure output cache evicts stale outputs this recognises first.
            return isinstance(output, ModelPatcher) or isinstance(getattr(output, "patcher", None), ModelPatcher)

        mp.is_model_patcher_output = is_model_patcher_output

        class ModelPatcherDynamic(ModelPatcher):
            """Newer ComfyUI's DynamicVRAM patcher, reduced to what it does with plain torch modules."""

            def __new__(cls, model=None, load_device=None, offload_device=None, *args, **kwargs):
                if load_device is not None and torch.device(load_device).type == "cpu":
                    return ModelPatcher(model, load_device, offload_device, *args, **kwargs)  # rerouted, as upstream
                return super().__new__(cls)

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.backup = {}

            def is_dynamic(self):
                return True

            def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
                assert not force_patch_weights and not full_load  # upstream asserts both
                # Modules without comfy_cast_weights (not comfy.ops): every weight is cast onto the
                # device as a new Parameter; the original stays in self.backup.
                for name, param in list(self.model.named_parameters()):
                    module_name, _, attr = name.rpartition(".")
                    module = self.model.get_submodule(module_name)
                    self.backup.setdefault(name, param)
                    setattr(module, attr, torch.nn.Parameter(param.to(device_to), requires_grad=False))

        mp.ModelPatcherDynamic = ModelPatcherDynamic
        mp.CoreModelPatcher = ModelPatcherDynamic  # what main.py does when comfy-aimdo initialises
        return mp

    # -- server / comfy_execution.utils ------------------------------------------------------

    def _server(self) -> ModuleType:
        server = _module("server")
        stubs = self

        class PromptServer:
            instance = None
            last_node_id = None

            def send_progress_text(self, text, node_id, sid=None):
                stubs.texts.append((str(node_id), text if isinstance(text, str) else text.decode()))

        PromptServer.instance = PromptServer()
        server.PromptServer = PromptServer
        return server

    def _execution_utils(self) -> tuple[ModuleType, ModuleType]:
        package = _module("comfy_execution", package=True)
        utils = _module("comfy_execution.utils")
        utils.ExecutionContext = ExecutionContext
        utils.get_executing_context = lambda: ExecutionContext("prompt-1", self.node_id)
        package.utils = utils
        return package, utils

    def modules(self) -> dict[str, ModuleType | None]:
        comfy = _module("comfy", package=True)
        mm, utils, mp = self._model_management(), self._utils(), self._model_patcher()
        comfy.model_management, comfy.utils, comfy.model_patcher = mm, utils, mp
        modules: dict[str, ModuleType | None] = {
            "folder_paths": self._folder_paths(), "comfy": comfy, "comfy.model_management": mm,
            "comfy.utils": utils, "comfy.model_patcher": mp}
        if self.with_server:
            execution, execution_utils = self._execution_utils()
            modules.update({"server": self._server(), "comfy_execution": execution,
                            "comfy_execution.utils": execution_utils})
        else:
            modules.update({"server": None, "comfy_execution": None, "comfy_execution.utils": None})
        return modules


def validate_like_comfyui(node_class: type, inputs: dict[str, Any]) -> list[str]:
    """The widget checks of ``execution.validate_inputs`` (0.3.64 and newer) for a V1 class.

    A V1 combo value must be in the option list and numbers within min/max, except for inputs
    that ``VALIDATE_INPUTS`` names (found with ``inspect.getfullargspec``; ``**kwargs`` covers
    all): those are left to it, and it is called with just them. Returns the error details.
    """
    validate = getattr(node_class, "VALIDATE_INPUTS", None)
    named, has_kwargs = [], False
    if validate is not None:
        argspec = inspect.getfullargspec(validate)
        named, has_kwargs = argspec.args, argspec.varkw is not None
    errors = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if name not in inputs or name in named or has_kwargs:
            continue
        value = inputs[name]
        if isinstance(kind, list) and value not in kind:
            errors.append(f"{name}: '{value}' not in {kind}")
        elif "min" in options and value < options["min"] or "max" in options and value > options["max"]:
            errors.append(f"{name}: {value} outside [{options.get('min')}, {options.get('max')}]")
    if validate is not None:
        chosen = {k: v for k, v in inputs.items() if k in named or has_kwargs}
        result = validate(**chosen)
        if result is not True:
            errors.append(f"{', '.join(chosen)} - {result}")
    return errors
