"""Fixtures for the node tests: ComfyUI stand-ins, the pack imported as ComfyUI does, model files."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict
from lama_testing import use_fixed_time_rates
from pack_import import import_pack

PACK_NAME = "lama_ffc_pack_under_test"


def _load_stubs() -> ModuleType:
    # tests/nodes is not a package (and "nodes" is the pack's own package): load by path.
    name = "lama_node_test_stubs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("comfy_stubs.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


stubs_module = _load_stubs()
ComfyStubs = stubs_module.ComfyStubs


@contextlib.contextmanager
def installed(modules: dict[str, ModuleType | None]) -> Iterator[None]:
    """Temporarily put ``modules`` into sys.modules (None hides a module from find_spec)."""
    saved = {name: sys.modules.get(name, ...) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is ...:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="session")
def stubs_factory() -> type:
    """The ``ComfyStubs`` class, for tests that build their own ComfyUI stand-ins."""
    return ComfyStubs


@pytest.fixture(scope="session")
def install_modules() -> Callable:
    """The ``installed(modules)`` context manager."""
    return installed


@pytest.fixture(scope="session")
def pack(tmp_path_factory) -> ModuleType:
    """The pack root imported under ComfyUI stand-ins without the V3 API (V1 classes)."""
    stubs = ComfyStubs(str(tmp_path_factory.mktemp("registration")))
    with installed({**stubs.modules(), "comfy_api": None}):
        return import_pack(PACK_NAME)


@pytest.fixture()
def pack_module(pack) -> Callable[[str], ModuleType]:
    """``pack_module("nodes.loader")`` -> that module of the pack under test."""
    return lambda relative: sys.modules[f"{PACK_NAME}.{relative}"]


@pytest.fixture(autouse=True)
def pack_fixed_time_rates(pack, monkeypatch):
    """The pack's own copy of refine.timing also uses fixed time rates (see tests/conftest.py)."""
    use_fixed_time_rates(monkeypatch, sys.modules[f"{PACK_NAME}.refine.timing"])


class _TracedWrapper(nn.Module):
    """Tensors under ``generator.`` as in lama-cleaner's big-lama.pt."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, tiny_state) -> Path:
    """ComfyUI's models folder with the tiny weights in every format users have."""
    root = tmp_path_factory.mktemp("models")
    (root / "lama").mkdir()
    (root / "inpaint" / "sub").mkdir(parents=True)
    save_file(tiny_state, root / "lama" / "tiny.safetensors")
    save_file({"generator.model." + k.removeprefix("model."): v for k, v in tiny_state.items()},
              root / "lama" / "tiny-prefixed.safetensors")
    torch.save(dict(tiny_state), root / "inpaint" / "tiny.pth")
    generator = generator_from_state_dict(tiny_state)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: fine here
        traced = torch.jit.trace(_TracedWrapper(generator).eval(), torch.rand(1, 4, 32, 32))
    traced.save(str(root / "inpaint" / "sub" / "big-lama.pt"))
    save_file({"encoder.weight": torch.zeros(4, 4)}, root / "lama" / "not-lama.safetensors")
    (root / "inpaint" / "notes.txt").write_text("not a model")
    return root


@pytest.fixture()
def comfy(monkeypatch, models_dir, pack, pack_module):
    """Fresh ComfyUI stand-ins for one test; the loader cache starts empty."""
    stubs = ComfyStubs(str(models_dir))
    for name, module in stubs.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    pack_module("nodes.loader").CACHE.clear()
    return stubs


@pytest.fixture()
def call(pack, comfy) -> Callable[..., tuple]:
    """Run a node as ComfyUI's executor does: V1 class, FUNCTION, under inference mode."""

    def run(node_id: str, **inputs) -> tuple:
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        with torch.inference_mode():
            return getattr(cls(), cls.FUNCTION)(**inputs)

    return run


@pytest.fixture(scope="session")
def session_lama(pack, models_dir):
    """The tiny model as the loader node makes it (fp32), loaded once for all tests."""
    stubs = ComfyStubs(str(models_dir))
    with installed(stubs.modules()), torch.inference_mode():
        loader = sys.modules[f"{PACK_NAME}.nodes.loader"]
        return loader.load_model("lama/tiny.safetensors", str(models_dir / "lama" / "tiny.safetensors"), "fp32")


@pytest.fixture()
def lama(comfy, session_lama):
    """The shared tiny fp32 model, for tests of the nodes that use a model."""
    return session_lama


def _box_mask(batch: int, height: int, width: int, top: int = 8, left: int = 10, size: int = 14) -> torch.Tensor:
    mask = torch.zeros(batch, height, width)
    mask[:, top : top + size, left : left + size] = 1
    return mask


def _random_image(batch: int, height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def box_mask() -> Callable[..., torch.Tensor]:
    """``box_mask(B, H, W)`` -> (B, H, W) zeros with a 14 px square hole."""
    return _box_mask


@pytest.fixture()
def random_image() -> Callable[..., torch.Tensor]:
    """``random_image(B, H, W, C=3)`` -> a seeded IMAGE."""
    return _random_image
