"""Stand-ins for exactly the ``comfy.*`` and ``folder_paths`` functions the nodes call.

``ComfyStubs(models_dir).modules()`` returns fake modules (each with a ``__spec__``, so
``importlib.util.find_spec`` sees them) to put into ``sys.modules``; the stub records what the
nodes did (loads, memory requests, progress and preview images, messages shown on the node,
cache flushes) for the tests to check. ``server`` (``PromptServer.instance.send_progress_text``)
and ``comfy_execution.utils`` (``get_executing_context``) are there unless ``with_server`` is
False (an old ComfyUI, or no server: messages are then only logged).
"""

from __future__ import annotations

import importlib.machinery
import os
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
    total_memory: int = 24 * 2**30  # what get_total_memory answers (the CPU path reads the real RAM)
    with_server: bool = True
    node_id: str = "7"  # the executing node
    texts: list[tuple[str, str]] = field(default_factory=list)  # (node id, text) sent as progress text

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
        mm.get_torch_device = lambda: cpu
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
                patcher.model.to(patcher.load_device)

        def free_memory(memory_required, device, keep_loaded=()):
            self.freed.append(memory_required)

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

    @staticmethod
    def _model_patcher() -> ModuleType:
        mp = _module("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

        mp.ModelPatcher = ModelPatcher
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
