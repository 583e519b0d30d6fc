"""Declared schemas (V1 classes, /object_info rendering, V3 build) and pack registration."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.machinery
import inspect
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pack_import import import_pack

REPO = Path(__file__).resolve().parents[2]
NODE_IDS = ["LamaFFC_LoadModel", "LamaFFC_PrepareMask", "LamaFFC_Inpaint", "LamaFFC_Refine"]
REAL_OBJECT_INFO = REPO.parent / "shared" / "comfyui" / "object_info-0.3.64.json"


def test_registers_v1_classes_without_v3_api(pack):
    assert sorted(pack.NODE_CLASS_MAPPINGS) == sorted(NODE_IDS)
    assert not hasattr(pack, "comfy_entrypoint")
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {
        "LamaFFC_LoadModel": "Load LaMa Model",
        "LamaFFC_PrepareMask": "LaMa Mask Preprocess",
        "LamaFFC_Inpaint": "LaMa Inpaint",
        "LamaFFC_Refine": "LaMa Multiscale Refine",
    }


def test_without_comfyui_the_pack_imports_and_exports_nothing(install_modules):
    with install_modules({"folder_paths": None}):
        module = import_pack("lama_ffc_pack_no_comfyui")
    try:
        assert not hasattr(module, "NODE_CLASS_MAPPINGS") and not hasattr(module, "comfy_entrypoint")
        assert module.__all__ == []
    finally:
        sys.modules.pop("lama_ffc_pack_no_comfyui", None)


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_class_is_a_complete_v1_node(pack, comfy, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY == "inpaint/lama" and cls.DESCRIPTION and cls.FUNCTION == "execute"
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(cls.OUTPUT_TOOLTIPS)
    inputs = cls.INPUT_TYPES()
    assert list(inputs) == ["required"]
    for name, (kind, options) in inputs["required"].items():
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if isinstance(kind, list) and "default" in options:
            assert options["default"] in kind, name
        elif kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], name


def _inputs(pack, node_id: str) -> dict:
    return pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]


def test_loader_schema(pack, comfy):
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_LoadModel"]
    inputs = _inputs(pack, "LamaFFC_LoadModel")
    assert list(inputs) == ["model_name", "dtype"]
    assert inputs["model_name"][0] == [
        "lama/not-lama.safetensors", "lama/tiny-prefixed.safetensors", "lama/tiny.safetensors",
        "inpaint/sub/big-lama.pt", "inpaint/tiny.pth",
    ]
    assert inputs["dtype"] == (["auto", "fp32", "bf16"], inputs["dtype"][1]) and inputs["dtype"][1]["default"] == "auto"
    assert cls.RETURN_TYPES == ("LAMA_FFC_MODEL",)


def test_prepare_mask_schema(pack, comfy):
    inputs = _inputs(pack, "LamaFFC_PrepareMask")
    assert list(inputs) == ["mask", "threshold", "operation", "kernel_size", "feather"]
    assert inputs["mask"][0] == "MASK"
    assert (inputs["threshold"][0], inputs["threshold"][1]["default"]) == ("FLOAT", 0.5)
    assert inputs["operation"][0] == ["erode", "dilate", "none"] and inputs["operation"][1]["default"] == "erode"
    assert (inputs["kernel_size"][0], inputs["kernel_size"][1]["default"], inputs["kernel_size"][1]["min"]) == ("INT", 15, 1)
    assert (inputs["feather"][0], inputs["feather"][1]["default"]) == ("FLOAT", 0.0)
    assert pack.NODE_CLASS_MAPPINGS["LamaFFC_PrepareMask"].RETURN_TYPES == ("MASK",)


def test_inpaint_schema(pack, comfy):
    inputs = _inputs(pack, "LamaFFC_Inpaint")
    assert list(inputs) == ["model", "image", "mask", "strategy", "resize_limit", "crop_margin", "mask_threshold"]
    assert [inputs[n][0] for n in ("model", "image", "mask")] == ["LAMA_FFC_MODEL", "IMAGE", "MASK"]
    assert inputs["strategy"][0] == ["original", "resize_to_limit", "crop_around_mask"]
    assert inputs["strategy"][1]["default"] == "original"
    assert inputs["resize_limit"][1]["default"] == 1280 and inputs["crop_margin"][1]["default"] == 128
    assert inputs["mask_threshold"][1]["default"] == 0.0
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_Inpaint"]
    assert cls.RETURN_TYPES == ("IMAGE", "MASK") and cls.RETURN_NAMES == ("image", "mask")
    assert "soft mask" in cls.DESCRIPTION


def test_refine_schema(pack, comfy):
    inputs = _inputs(pack, "LamaFFC_Refine")
    # Saved workflows store widget values by position: new inputs only ever go at the end.
    assert list(inputs) == ["model", "image", "mask", "n_iters", "lr", "min_side", "max_scales", "px_budget",
                            "crop_to_mask", "crop_margin", "early_stop_tol", "precision", "mask_threshold",
                            "mode", "max_seconds"]
    defaults = {name: options.get("default") for name, (_, options) in inputs.items()}
    assert defaults == {"model": None, "image": None, "mask": None, "n_iters": 15, "lr": 0.002, "min_side": 512,
                        "max_scales": 3, "px_budget": 1_800_000, "crop_to_mask": False, "crop_margin": 128,
                        "early_stop_tol": 0.0, "precision": "auto", "mask_threshold": 0.0, "mode": "auto",
                        "max_seconds": 0.0}
    assert inputs["crop_to_mask"][0] == "BOOLEAN"
    assert inputs["precision"][0] == ["auto", "fp32", "bf16"] and inputs["mode"][0] == ["paper", "auto"]
    assert not any("advanced" in options for _, options in inputs.values())  # V1: ordinary inputs
    assert inputs["n_iters"][1]["min"] == 1 and inputs["px_budget"][1]["min"] >= 256


def test_defaults_are_the_libraries(pack_module, comfy):
    """One source of defaults: the node's widgets show the library's RefineSettings defaults."""
    from lama_multiscale_refine.refine import PRECISIONS, RefineSettings

    spec = pack_module("nodes.refinement").SPEC
    defaults = RefineSettings()
    by_name = {p.name: p for p in spec.inputs}
    for name in ("n_iters", "lr", "min_side", "max_scales", "px_budget", "crop_to_mask", "crop_margin", "early_stop_tol"):
        assert by_name[name].default == getattr(defaults, name), name
    assert by_name["precision"].options == ("auto", *PRECISIONS)
    assert {p.name for p in spec.inputs if p.advanced} == {"lr", "min_side", "max_scales", "crop_margin",
                                                           "early_stop_tol", "precision", "mask_threshold"}


@pytest.mark.parametrize("style", ["v1", "v3"])
def test_object_info_matches_the_server_format(pack_module, comfy, style):
    info = pack_module("nodes._spec").object_info(style=style)
    assert sorted(info) == sorted(NODE_IDS)
    json.dumps(info)  # JSON-ready
    if REAL_OBJECT_INFO.is_file():
        real = json.loads(REAL_OBJECT_INFO.read_text())
        reference = real["ImageUpscaleWithModel" if style == "v3" else "CheckpointLoaderSimple"]
        assert set(info["LamaFFC_Inpaint"]) == set(reference)
    inpaint = info["LamaFFC_Inpaint"]
    assert inpaint["output"] == ["IMAGE", "MASK"] and inpaint["output_name"] == ["image", "mask"]
    assert inpaint["input_order"]["required"][:3] == ["model", "image", "mask"]
    strategy = inpaint["input"]["required"]["strategy"]
    if style == "v1":
        assert strategy[0] == ["original", "resize_to_limit", "crop_around_mask"]
    else:
        assert strategy[0] == "COMBO" and strategy[1]["options"][0] == "original"
    assert inpaint["input"]["required"]["resize_limit"] == ["INT", {
        "tooltip": inpaint["input"]["required"]["resize_limit"][1]["tooltip"],
        "default": 1280, "min": 64, "max": 8192, "step": 8}]
    assert info["LamaFFC_LoadModel"]["python_module"].startswith("custom_nodes.")


def test_python_m_nodes_dumps_object_info(tmp_path):
    out = tmp_path / "object_info.json"
    # `python -m lama_multiscale_refine.nodes`, on this checkout
    subprocess.run([sys.executable, str(REPO / "tests" / "pack_import.py"), "nodes", "--out", str(out)], cwd=REPO, check=True, timeout=120)
    info = json.loads(out.read_text())
    assert sorted(info) == sorted(NODE_IDS)
    assert info["LamaFFC_LoadModel"]["input"]["required"]["model_name"][0] == []  # no ComfyUI, no model list


# --- V3 path, against a minimal stand-in of comfy_api.latest ----------------------------------------


@dataclass
class _Socket:
    io_type: str
    id: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _fake_io(module_name: str) -> ModuleType:
    def socket_type(io_type: str) -> type:
        class Type:
            class Input(_Socket):
                def __init__(self, id, **kwargs):
                    super().__init__(io_type, id, kwargs)

            class Output(_Socket):
                def __init__(self, id=None, **kwargs):
                    super().__init__(io_type, id, kwargs)

        return Type

    io = ModuleType(module_name)
    for name, io_type in [("Int", "INT"), ("Float", "FLOAT"), ("Boolean", "BOOLEAN"), ("Combo", "COMBO"),
                          ("Image", "IMAGE"), ("Mask", "MASK")]:
        setattr(io, name, socket_type(io_type))
    io.Custom = socket_type

    @dataclass
    class Schema:
        node_id: str
        display_name: str = None
        category: str = "sd"
        inputs: list = None
        outputs: list = None
        description: str = ""

    class ComfyNode:
        pass

    class NodeOutput:
        def __init__(self, *args):
            self.args = args

    class ComfyExtension:
        pass

    io.Schema, io.ComfyNode, io.NodeOutput, io.ComfyExtension = Schema, ComfyNode, NodeOutput, ComfyExtension
    return io


def _package(name: str, **attributes: Any) -> ModuleType:
    module = ModuleType(name)
    module.__path__ = []
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _fake_comfy_api(*versions: str) -> dict[str, ModuleType]:
    """``comfy_api`` with the given submodules (``latest``, ``v0_0_2``, ...), each with its own io.

    As in ComfyUI (0.3.48 ... 0.38+), a versioned module exports ``io``, ``ui`` and ``ComfyExtension``;
    here each gets a distinct ``io`` so a test can tell which one the pack used.
    """
    modules = {"comfy_api": _package("comfy_api")}
    for version in versions:
        io = _fake_io(f"comfy_api.{version}.io")
        modules[f"comfy_api.{version}"] = _package(f"comfy_api.{version}", io=io, ui=ModuleType("ui"),
                                                   ComfyExtension=io.ComfyExtension)
    return modules


@pytest.fixture()
def import_v3_pack(install_modules, stubs_factory, tmp_path):
    """``import_v3_pack(*versions)`` -> the pack imported under a comfy_api with those versions."""
    names: list[str] = []
    with contextlib.ExitStack() as stack:

        def run(*versions: str) -> ModuleType:
            stack.enter_context(install_modules({**stubs_factory(str(tmp_path)).modules(), **_fake_comfy_api(*versions)}))
            names.append(f"lama_ffc_pack_v3_{len(names)}")
            return import_pack(names[-1])

        yield run
        for module in [n for n in sys.modules if any(n == name or n.startswith(name + ".") for name in names)]:
            del sys.modules[module]


@pytest.mark.parametrize(("versions", "used"), [
    (("latest", "v0_0_1", "v0_0_2", "v0_0_3"), "v0_0_2"),  # ComfyUI 0.38+: v0_0_2 is still there
    (("latest", "v0_0_1", "v0_0_2"), "v0_0_2"),  # 0.3.48 ... 0.3.64
    (("latest",), "latest"),  # a ComfyUI without the frozen version: the unstable one
])
def test_v3_classes_come_from_the_versioned_api(import_v3_pack, versions, used):
    module = import_v3_pack(*versions)
    api = sys.modules[f"comfy_api.{used}"]
    extension = asyncio.run(module.comfy_entrypoint())
    assert isinstance(extension, api.ComfyExtension)
    classes = asyncio.run(extension.get_node_list())
    assert classes and all(issubclass(cls, api.io.ComfyNode) for cls in classes)


def test_a_broken_v3_api_is_reported_not_hidden(import_v3_pack):
    module = import_v3_pack("v0_0_2")
    del sys.modules["comfy_api.v0_0_2"].io
    with pytest.raises(ImportError, match=r"comfy_api.v0_0_2 lacks \['io'\]"):
        asyncio.run(module.comfy_entrypoint())


def test_v3_api_gives_an_entrypoint_and_no_mappings(import_v3_pack):
    module = import_v3_pack("latest", "v0_0_2")
    assert hasattr(module, "comfy_entrypoint") and not hasattr(module, "NODE_CLASS_MAPPINGS")
    extension = asyncio.run(module.comfy_entrypoint())
    classes = asyncio.run(extension.get_node_list())
    schemas = {cls.define_schema().node_id: cls.define_schema() for cls in classes}
    assert sorted(schemas) == sorted(NODE_IDS)
    refine = schemas["LamaFFC_Refine"]
    assert refine.category == "inpaint/lama" and refine.description
    by_id = {socket.id: socket for socket in refine.inputs}
    assert by_id["model"].io_type == "LAMA_FFC_MODEL" and by_id["image"].io_type == "IMAGE"
    assert by_id["n_iters"].io_type == "INT" and by_id["n_iters"].kwargs["default"] == 15
    assert by_id["precision"].kwargs["options"] == ["auto", "fp32", "bf16"]
    assert by_id["lr"].kwargs["round"] == 0.0001
    # 0.3.64-style inputs have no advanced keyword: the flag travels in extra_dict.
    assert by_id["lr"].kwargs["extra_dict"] == {"advanced": True}
    assert "extra_dict" not in by_id["n_iters"].kwargs and "advanced" not in by_id["n_iters"].kwargs
    assert all(socket.kwargs["tooltip"] for socket in refine.inputs + refine.outputs)
    assert [o.kwargs["display_name"] for o in refine.outputs] == ["image", "mask"]
    mask_node = next(cls for cls in classes if cls.SPEC.node_id == "LamaFFC_PrepareMask")
    out = mask_node.execute(mask=__import__("torch").ones(1, 8, 8), threshold=0.5, operation="none",
                            kernel_size=1, feather=0.0)
    assert out.args[0].shape == (1, 8, 8)
    # ComfyUI reads these names to decide which inputs it leaves to the node's own check.
    loader_node = next(cls for cls in classes if cls.SPEC.node_id == "LamaFFC_LoadModel")
    assert inspect.getfullargspec(loader_node.validate_inputs).args == ["cls", "model_name"]


def test_v3_advanced_keyword_where_the_api_has_it(pack_module, comfy):
    spec_module = pack_module("nodes._spec")

    class Int:
        class Input:
            def __init__(self, id, default=None, min=None, max=None, step=None, tooltip=None, advanced=None):
                self.kwargs = {"advanced": advanced, "tooltip": tooltip}

    io = ModuleType("io")
    io.Int = Int
    param = spec_module.Param.int("steps", 3, lo=1, hi=9, tooltip="t", advanced=True)
    assert spec_module._v3_input(io, param).kwargs == {"advanced": True, "tooltip": "t"}
    info = spec_module.object_info(style="v3")["LamaFFC_Refine"]["input"]["required"]
    assert info["lr"][1]["advanced"] is True and "advanced" not in info["n_iters"][1]
