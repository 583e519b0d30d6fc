"""Other packs' LaMa nodes replaced by ours: registration (guarded), the mappings, their workflows run."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

stubs_module = sys.modules["lama_node_test_stubs"]
WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "replacements"
OURS = ["LamaFFC_LoadModel", "LamaFFC_PrepareMask", "LamaFFC_Inpaint", "LamaFFC_Refine", "LamaFFC_RemoveObject"]
CORE = ["LoadImage", "SaveImage", "PreviewImage"]


def _workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def _registered(install_modules, pack_module, extra: dict) -> list[str]:
    with install_modules(extra):
        return asyncio.run(pack_module("nodes.replacements").register_replacements())


@pytest.fixture()
def manager(install_modules, pack_module, comfy):
    """A newer ComfyUI's replacement manager with our replacements registered (core + our nodes installed)."""
    made = stubs_module.NodeReplaceManager(OURS + CORE)
    registered = _registered(install_modules, pack_module, stubs_module.newer_comfy_api(made))
    assert registered == [r.old_node_id for r in pack_module("nodes.replacements").REPLACEMENTS]
    return made


def test_nothing_is_registered_where_comfyui_has_no_replacement_api(install_modules, pack_module, comfy):
    assert _registered(install_modules, pack_module, stubs_module.comfy_api_0_3_64()) == []
    assert _registered(install_modules, pack_module, {"comfy_api": None}) == []


def test_the_extension_registers_them_on_load(install_modules, pack_module, comfy, monkeypatch):
    catalog = pack_module("nodes.catalog")
    made = stubs_module.NodeReplaceManager(OURS)

    class ComfyExtension:
        pass

    monkeypatch.setattr(catalog, "v3_api", lambda: type("Api", (), {"ComfyExtension": ComfyExtension}))
    monkeypatch.setattr(catalog, "node_classes", lambda: [])
    with install_modules(stubs_module.newer_comfy_api(made)):
        extension = asyncio.run(catalog.comfy_entrypoint())
        asyncio.run(extension.on_load())
    assert sorted(made.replacements) == sorted(["INPAINT_LoadInpaintLaMaModel", "INPAINT_InpaintWithLaMaRefinerModel",
                                                "LaMaInpaint", "LayerUtility: LaMa", "LamaRemover"])


def test_registering_twice_keeps_one_entry_each(install_modules, pack_module, manager):
    _registered(install_modules, pack_module, stubs_module.newer_comfy_api(manager))
    assert all(len(entries) == 1 for entries in manager.replacements.values())


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_every_mapping_is_complete_and_safe(pack_module, comfy, manager, name):
    """Every input of our node is given (an API prompt missing one fails validation); an old input is
    copied only if the old node requires it (the server reads inputs[old_id] unguarded); every old
    output is mapped; old_widget_ids are the old widgets in schema order."""
    workflow = _workflow(name)
    specs = {spec.node_id: spec for spec in pack_module("nodes.catalog").SPECS}
    for old_id, schema in workflow["schemas"].items():
        ((entry),) = manager.as_dict()[old_id]
        target = specs[entry["new_node_id"]]
        assert [m["new_id"] for m in entry["input_mapping"]] == [p.name for p in target.inputs]
        copied = [m["old_id"] for m in entry["input_mapping"] if "old_id" in m]
        assert set(copied) <= set(schema["required"]), f"{old_id}: copies an optional input"
        for m in entry["input_mapping"]:
            if "old_id" in m:
                ours = next(p for p in target.inputs if p.name == m["new_id"])
                theirs = schema["required"][m["old_id"]]
                assert ours.type == theirs or ours.type in ("INT", "FLOAT") and theirs == "INT" or \
                    ours.type == "LAMA_FFC_MODEL" and theirs == "INPAINT_LAMA_MODEL" or \
                    ours.type == "COMBO" and theirs == "COMBO", f"{old_id}.{m['old_id']} -> {m['new_id']}"
        if entry["output_mapping"] is not None:
            assert [m["old_idx"] for m in entry["output_mapping"]] == list(range(len(schema["outputs"])))
        else:  # only a node whose output feeds another replaced node (see nodes/replacements.py)
            assert old_id == "INPAINT_LoadInpaintLaMaModel"
        widgets = [n for n, kind in {**schema["required"], **schema["optional"]}.items()
                   if kind in ("INT", "FLOAT", "BOOLEAN", "COMBO", "STRING")]
        assert [w for w in entry["old_widget_ids"] if not w.endswith("_control_after_generate")] == widgets


def _replaced(manager, name: str) -> dict:
    prompt = copy.deepcopy(_workflow(name)["prompt"])
    manager.apply_replacements(prompt)
    return prompt


def _check_against_our_schema(pack, prompt: dict) -> None:
    """What execution.validate_prompt checks of our nodes: required inputs present, widgets valid."""
    for number, node in prompt.items():
        if not node["class_type"].startswith("LamaFFC_"):
            continue
        cls = pack.NODE_CLASS_MAPPINGS[node["class_type"]]
        assert set(node["inputs"]) == set(cls.INPUT_TYPES()["required"]), number
        widgets = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        assert stubs_module.validate_like_comfyui(cls, widgets) == [], number


def _execute(call, prompt: dict, image: torch.Tensor, mask: torch.Tensor) -> dict:
    """Run the prompt's nodes in order with our nodes; LoadImage gives ``image`` and ``mask``."""
    results = {}
    for number in sorted(prompt, key=int):
        node = prompt[number]
        if node["class_type"] == "LoadImage":
            results[number] = (image, mask)
        elif node["class_type"].startswith("LamaFFC_"):
            inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            results[number] = call(node["class_type"], **inputs)
    return results


def _photo(random_image):
    image = random_image(1, 48, 64)
    mask = torch.zeros(1, 48, 64)
    mask[:, 10:30, 12:36] = 1
    return image, mask


def test_art_venture_lama_inpaint(pack, call, comfy, manager, random_image):
    prompt = _replaced(manager, "art_venture_lama.json")
    node = prompt["2"]
    assert node["class_type"] == "LamaFFC_RemoveObject" and node["_meta"] == {"title": "LaMa Remove Object"}
    assert node["inputs"] | {} == {**node["inputs"], "image": ["1", 0], "mask": ["1", 1], "mask_grow": 6,
                                   "model_name": "lama/big-lama.pt", "method": "plain", "mask_threshold": 0.0}
    assert prompt["3"]["inputs"]["images"] == ["2", 0]
    _check_against_our_schema(pack, prompt)
    image, mask = _photo(random_image)
    out, used = _execute(call, prompt, image, mask)["2"]
    (grown,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.0, operation="dilate", kernel_size=13, feather=0.0)
    assert torch.equal(used, grown) and out.shape == image.shape
    keep = (grown == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep]) and not torch.equal(out, image)
    assert "lama/big-lama.pt (fp32): FFC generator" in comfy.node_text  # found as inpaint/sub/big-lama.pt


def test_layerstyle_lama(pack, call, comfy, manager, random_image):
    prompt = _replaced(manager, "layerstyle_lama.json")
    inputs = prompt["2"]["inputs"]
    assert prompt["2"]["class_type"] == "LamaFFC_RemoveObject"
    assert (inputs["model_name"], inputs["invert_mask"], inputs["mask_grow"], inputs["mask_feather"]) == ("lama", False, 4, 2)
    assert "device" not in inputs
    _check_against_our_schema(pack, prompt)
    image, mask = _photo(random_image)
    out, used = _execute(call, prompt, image, mask)["2"]
    assert float(used.max()) == 1 and 0 < float(((used > 0) & (used < 1)).sum())  # grown by 4, 2 px soft edge
    keep = (used == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep])
    # LayerStyle's other IOPaint models are not LaMa: refused by name before anything runs.
    other = copy.deepcopy(_workflow("layerstyle_lama.json")["prompt"])
    other["2"]["inputs"]["lama_model"] = "zits"
    manager.apply_replacements(other)
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_RemoveObject"]
    (error,) = stubs_module.validate_like_comfyui(cls, {"model_name": other["2"]["inputs"]["model_name"]})
    assert "'zits' is IOPaint's zits model, not LaMa" in error


def test_lama_remover(pack, call, comfy, manager, random_image):
    prompt = _replaced(manager, "lama_remover.json")
    inputs = prompt["2"]["inputs"]
    assert prompt["2"]["class_type"] == "LamaFFC_RemoveObject"
    assert (inputs["image"], inputs["mask"], inputs["mask_grow"], inputs["mask_threshold"]) == (["1", 0], ["1", 1], 3, 0.02)
    _check_against_our_schema(pack, prompt)
    image, mask = _photo(random_image)
    out, used = _execute(call, prompt, image, mask)["2"]
    (grown,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.02, operation="dilate", kernel_size=7, feather=0.0)
    assert torch.equal(used, grown)


@pytest.mark.parametrize("reverse", [False, True])
def test_fplu_loader_and_refiner(pack, call, comfy, manager, random_image, reverse):
    manager.reverse = reverse  # the refiner replaced before the loader, or after: both work
    prompt = _replaced(manager, "fplu_lama_with_refiner.json")
    assert prompt["2"] == {"class_type": "LamaFFC_LoadModel", "inputs": {"model_name": "big-lama.pt", "dtype": "fp32"},
                           "_meta": {}}
    refine = prompt["3"]["inputs"]
    assert prompt["3"]["class_type"] == "LamaFFC_Refine" and refine["model"] == ["2", 0]
    assert (refine["px_budget"], refine["mode"], refine["max_scales"], refine["min_side"], refine["n_iters"]) == \
        (600000, "paper", 5, 512, 15)
    assert "seed" not in refine
    _check_against_our_schema(pack, prompt)
    image, mask = _photo(random_image)
    results = _execute(call, prompt, image, mask)
    out, used = results["3"]
    keep = (mask == 0)[..., None].expand_as(image)
    assert out.shape == image.shape and torch.equal(out[keep], image[keep]) and torch.equal(used, mask)
    assert "1 scale for 64x48 with min_side 512: no refinement (plain LaMa)" in comfy.node_text  # as fplu did


def test_installed_packs_keep_their_own_nodes(pack_module, comfy, manager):
    manager.installed.add("LaMaInpaint")  # ArtVenture is installed: its node is not touched
    prompt = _replaced(manager, "art_venture_lama.json")
    assert prompt["2"]["class_type"] == "LaMaInpaint"


def test_why_the_fplu_loader_has_no_output_mapping(pack_module, comfy):
    """With one, the server's re-indexing reads the refiner's old input name after the refiner was replaced."""
    replacements = pack_module("nodes.replacements")
    made = stubs_module.NodeReplaceManager(OURS + CORE, reverse=True)
    loader, refiner = replacements.REPLACEMENTS[:2]
    made.register(replacements.Replacement(**{**loader.__dict__, "outputs": ((0, 0),)}).node_replace(stubs_module))
    made.register(refiner.node_replace(stubs_module))
    with pytest.raises(KeyError, match="inpaint_model"):
        made.apply_replacements(copy.deepcopy(_workflow("fplu_lama_with_refiner.json")["prompt"]))
