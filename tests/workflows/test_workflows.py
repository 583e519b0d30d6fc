"""The shipped workflows are valid for ComfyUI 0.3.64 plus this pack, and the validator catches breakage.

Core nodes are checked against a real server's ``/object_info`` (``../shared/comfyui`` next to the
repository, or ``$LAMA_OBJECT_INFO``), our nodes against the pack's own schema export.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image


def _load_validator():
    # tests/workflows is not a package: load the module by path (also runnable with python -m).
    spec = importlib.util.spec_from_file_location("lama_workflow_validate", Path(__file__).with_name("validate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


validate = _load_validator()

WORKFLOWS = validate.REPO / "workflows"
SHIPPED = ["lama_inpaint", "lama_refine_hires", "lama_then_flux_fill", "lama_then_sdxl"]
UI_FILES = sorted(WORKFLOWS.glob("*.json"))  # exactly what the template browser lists
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
HYBRIDS = [WORKFLOWS / "lama_then_sdxl.json", WORKFLOWS / "lama_then_flux_fill.json"]


@pytest.fixture(scope="session")
def all_schemas() -> dict[str, dict[str, dict]]:
    """Schemas with the pack's combos in either layout: v1 ``[[...], {}]`` and v3 ``["COMBO", {"options"}]``."""
    path = validate.CORE_OBJECT_INFO
    if not path.is_file():
        message = f"reference /object_info not found at {path} (set LAMA_OBJECT_INFO)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must check the workflows")
        pytest.skip(message)
    return {style: validate.load_schemas(path, style) for style in ("v1", "v3")}


@pytest.fixture(scope="session")
def schemas(all_schemas) -> dict[str, dict]:
    return all_schemas["v1"]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def node_of(workflow: dict, class_type: str) -> dict:
    (node,) = [n for n in workflow["nodes"] if n["type"] == class_type]
    return node


def link_into(workflow: dict, node: dict, name: str) -> list | None:
    """The ``links`` entry that ends at ``node``'s input ``name``, or None."""
    link_id = next(inp["link"] for inp in node["inputs"] if inp["name"] == name)
    return next((link for link in workflow["links"] if link[0] == link_id), None)


def source_type(workflow: dict, node: dict, name: str) -> tuple[str, int]:
    link = link_into(workflow, node, name)
    assert link is not None, f"{node['type']}.{name} is not connected"
    (source,) = [n for n in workflow["nodes"] if n["id"] == link[1]]
    return source["type"], link[2]


def set_widget(workflow: dict, node: dict, name: str, value, schemas: dict) -> None:
    slots = validate.widget_slots(schemas[node["type"]])
    index = next(i for i, (kind, spec) in enumerate(slots) if kind == validate.VALUE and spec.name == name)
    node["widgets_values"][index] = value


def unlink(workflow: dict, link: list) -> None:
    """Remove a link from ``links`` and from both of its ends."""
    workflow["links"].remove(link)
    for node in workflow["nodes"]:
        for out in node.get("outputs") or []:
            if link[0] in (out.get("links") or []):
                out["links"].remove(link[0])
        for inp in node.get("inputs") or []:
            if inp.get("link") == link[0]:
                inp["link"] = None


# -- the shipped files ---------------------------------------------------------------------------


def test_template_browser_sees_exactly_the_ui_workflows():
    # app/custom_node_manager.py lists <pack>/workflows/*.json, not subfolders, as templates, and
    # the front end shows <name>.jpg as each one's thumbnail.
    assert [path.stem for path in UI_FILES] == SHIPPED
    assert all(validate.is_ui_format(load(path)) for path in UI_FILES)
    assert API_FILES and not any(validate.is_ui_format(load(path)) for path in API_FILES)


@pytest.mark.parametrize("style", ["v1", "v3"])
@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_is_valid(path, style, all_schemas):
    problems = validate.check_file(path, all_schemas[style])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid(path, schemas):
    problems = validate.check_file(path, schemas)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_the_export_of_its_ui_workflow(path, schemas):
    ui_path = WORKFLOWS / path.name
    assert load(path) == validate.ui_to_api(load(ui_path), schemas), (
        f"{path} is out of date: python3 -m tests.workflows.validate --to-api {ui_path.relative_to(validate.REPO)}")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_workflow_has_a_jpg_thumbnail(path):
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"{thumbnail} missing: python3 -m tests.workflows.thumbnails {path.relative_to(validate.REPO)}"
    with Image.open(thumbnail) as image:
        image.load()
        assert image.format == "JPEG" and min(image.size) >= 256


@pytest.mark.parametrize("path", HYBRIDS, ids=lambda p: p.name)
def test_hybrid_refines_the_prefill_and_keeps_unmasked_pixels(path):
    workflow = load(path)
    types = {node["type"] for node in workflow["nodes"]}
    assert "VAEEncodeForInpaint" not in types, "VAEEncodeForInpaint greys the LaMa pre-fill out"
    encoder = node_of(workflow, "VAEEncode" if "VAEEncode" in types else "InpaintModelConditioning")
    assert source_type(workflow, encoder, "pixels") == ("LamaFFC_Inpaint", 0)
    sampler = node_of(workflow, "KSampler")
    assert sampler["widgets_values"][-1] < 1.0, "denoise 1 would discard the pre-fill"
    composite = node_of(workflow, "ImageCompositeMasked")
    assert source_type(workflow, composite, "destination") == ("LoadImage", 0)
    assert source_type(workflow, composite, "source") == ("VAEDecode", 0)
    assert source_type(workflow, composite, "mask")[0] == "LamaFFC_PrepareMask"
    assert source_type(workflow, node_of(workflow, "SaveImage"), "images") == ("ImageCompositeMasked", 0)


# -- the validator rejects broken copies ---------------------------------------------------------


@pytest.fixture()
def inpaint() -> dict:
    return load(WORKFLOWS / "lama_inpaint.json")


def test_unknown_node_class(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_Inpaint")
    node["type"] = "LamaFFC_NoSuchNode"
    assert f"node {node['id']} (LamaFFC_NoSuchNode): unknown node class 'LamaFFC_NoSuchNode' " \
           "(neither a core node of the reference ComfyUI nor one of this pack's)" in validate.check_ui(inpaint, schemas)


def test_link_of_the_wrong_type(inpaint, schemas):
    # Rewire LoadImage's MASK output (slot 1) into LaMa Inpaint's image input, consistently.
    loader, node = node_of(inpaint, "LoadImage"), node_of(inpaint, "LamaFFC_Inpaint")
    link = link_into(inpaint, node, "image")
    loader["outputs"][0]["links"].remove(link[0])
    loader["outputs"][1]["links"].append(link[0])
    link[2], link[5] = 1, "MASK"
    assert validate.check_ui(inpaint, schemas) == [
        f"node {node['id']} (LamaFFC_Inpaint) input 'image': expects IMAGE, linked to MASK from node {loader['id']} (LoadImage) output 1"]


def test_link_whose_declared_type_is_wrong(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_Inpaint")
    link_into(inpaint, node, "image")[5] = "LATENT"
    assert validate.check_ui(inpaint, schemas) == [
        f"node {node['id']} (LamaFFC_Inpaint) input 'image': the link says type LATENT, its source gives IMAGE"]


@pytest.mark.parametrize(("given", "expected", "match"), [
    ("IMAGE", "IMAGE", True), ("MASK", "IMAGE", False), ("*", "LATENT", True), ("MODEL", "*", True),
    ("IMAGE,MASK", "MASK", True), ("MASK", "IMAGE, MASK", True), ("LATENT,MASK", "IMAGE", False),
])
def test_types_match_like_comfyui(given, expected, match):
    assert validate.types_match(given, expected) is match


def test_combo_options_are_enforced_in_the_v3_layout(inpaint, all_schemas):
    schemas = all_schemas["v3"]
    node = node_of(inpaint, "LamaFFC_Inpaint")
    assert schemas[node["type"]]["input"]["required"]["strategy"][0] == "COMBO"
    set_widget(inpaint, node, "strategy", "bogus", schemas)
    assert validate.check_ui(inpaint, schemas) == [f"node {node['id']} (LamaFFC_Inpaint) input 'strategy': "
                                                    "'bogus' is not among the options ['original', 'resize_to_limit', 'crop_around_mask']"]


@pytest.mark.parametrize(("class_type", "name", "value", "message"), [
    ("LamaFFC_Inpaint", "resize_limit", 10, "10 is below the minimum 64"),
    ("LamaFFC_Inpaint", "mask_threshold", 1.5, "1.5 is above the maximum 1.0"),
    ("LamaFFC_Inpaint", "strategy", "bogus", "'bogus' is not among the options ['original', 'resize_to_limit', 'crop_around_mask']"),
    ("LamaFFC_PrepareMask", "kernel_size", 2.5, "2.5 is not an integer"),
    ("LamaFFC_PrepareMask", "feather", "wide", "'wide' is not a number"),
    ("LamaFFC_LoadModel", "dtype", "fp16", "'fp16' is not among the options ['auto', 'fp32', 'bf16']"),
    ("LoadImage", "image", "missing.png", "'missing.png' is not among the options"),
    ("SaveImage", "filename_prefix", 7, "7 is not a string"),
])
def test_widget_value_out_of_its_limits(inpaint, schemas, class_type, name, value, message):
    node = node_of(inpaint, class_type)
    set_widget(inpaint, node, name, value, schemas)
    (problem,) = validate.check_ui(inpaint, schemas)
    assert problem.startswith(f"node {node['id']} ({class_type}) input '{name}': {message}")


def test_required_input_not_connected(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_Inpaint")
    unlink(inpaint, link_into(inpaint, node, "mask"))
    assert validate.check_ui(inpaint, schemas) == [
        f"node {node['id']} (LamaFFC_Inpaint) input 'mask': required input is not connected"]


def test_widget_values_of_the_wrong_length(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_PrepareMask")
    node["widgets_values"].pop()
    assert validate.check_ui(inpaint, schemas) == [
        f"node {node['id']} (LamaFFC_PrepareMask): widgets_values has 3 values, expected 4 "
        "(threshold, operation, kernel_size, feather)"]


def test_load_image_without_the_upload_value_is_accepted(inpaint, schemas):
    # Files saved before the upload button existed store only the file name.
    node_of(inpaint, "LoadImage")["widgets_values"].pop()
    assert validate.check_ui(inpaint, schemas) == []


def test_links_and_node_slots_must_agree(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_Inpaint")
    image_input = next(inp for inp in node["inputs"] if inp["name"] == "image")
    real_link, image_input["link"] = image_input["link"], 999
    problems = validate.check_ui(inpaint, schemas)
    assert f"link {real_link}: node {node['id']} input 'image' names link 999" in problems
    assert f"node {node['id']} input 'image': link 999 does not end at this input in 'links'" in problems


def test_no_output_node(inpaint, schemas):
    save = node_of(inpaint, "SaveImage")
    unlink(inpaint, link_into(inpaint, save, "images"))
    inpaint["nodes"].remove(save)
    assert validate.check_ui(inpaint, schemas) == [
        "no output node (such as SaveImage or PreviewImage): ComfyUI would not run anything"]


def test_overlapping_nodes(inpaint, schemas):
    node, save = node_of(inpaint, "LamaFFC_Inpaint"), node_of(inpaint, "SaveImage")
    save["pos"] = [node["pos"][0] + 10, node["pos"][1] + 10]
    assert validate.check_ui(inpaint, schemas) == [f"nodes {node['id']} and {save['id']} overlap on the canvas"]


def test_missing_model_files_are_allowed_unless_strict(inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_LoadModel")
    set_widget(inpaint, node, "model_name", "lama/another.safetensors", schemas)
    assert validate.check_ui(inpaint, schemas) == []
    (problem,) = validate.check_ui(inpaint, schemas, allow_missing_models=False)
    assert problem.startswith(f"node {node['id']} (LamaFFC_LoadModel) input 'model_name': 'lama/another.safetensors' is not among")


def test_seed_widget_carries_a_control_value(schemas):
    workflow = load(WORKFLOWS / "lama_then_sdxl.json")
    sampler = node_of(workflow, "KSampler")
    where = f"node {sampler['id']} (KSampler)"
    # The values after seed are shifted by its control value: denoise is still found by name.
    set_widget(workflow, sampler, "denoise", 1.5, schemas)
    assert validate.check_ui(workflow, schemas) == [f"{where} input 'denoise': 1.5 is above the maximum 1.0"]
    sampler["widgets_values"][1] = "sometimes"
    assert f"{where} input 'seed': control_after_generate value 'sometimes' is not one of " \
           "['decrement', 'fixed', 'increment', 'randomize']" in validate.check_ui(workflow, schemas)
    del sampler["widgets_values"][1]
    (problem,) = validate.check_ui(workflow, schemas)
    assert problem.startswith(f"{where}: widgets_values has 6 values, expected 7 (seed, control_after_generate, steps")


# -- the API format ------------------------------------------------------------------------------


@pytest.fixture()
def prompt() -> dict:
    return load(WORKFLOWS / "api" / "lama_inpaint.json")


def api_node(prompt: dict, class_type: str) -> tuple[str, dict]:
    (entry,) = [(node_id, node) for node_id, node in prompt.items() if node["class_type"] == class_type]
    return entry


def test_api_unknown_node_class(prompt, schemas):
    node_id, node = api_node(prompt, "LamaFFC_Inpaint")
    node["class_type"] = "LamaFFC_NoSuchNode"
    assert validate.check_api(prompt, schemas)[0].startswith(f"node {node_id} (LamaFFC_NoSuchNode): unknown node class")


def test_api_link_type_and_slot(prompt, schemas):
    node_id, node = api_node(prompt, "LamaFFC_Inpaint")
    loader_id, _ = api_node(prompt, "LoadImage")
    node["inputs"]["image"] = [loader_id, 1]
    node["inputs"]["mask"][1] = 5
    assert validate.check_api(prompt, schemas) == [
        f"node {node_id} (LamaFFC_Inpaint) input 'image': expects IMAGE, linked to MASK from node {loader_id} (LoadImage) output 1",
        f"node {node_id} (LamaFFC_Inpaint) input 'mask': node {node['inputs']['mask'][0]} (LamaFFC_PrepareMask) has no output slot 5",
    ]


def test_api_missing_input_and_bad_value(prompt, schemas):
    node_id, node = api_node(prompt, "LamaFFC_Inpaint")
    del node["inputs"]["model"], node["inputs"]["strategy"]
    node["inputs"]["crop_margin"] = -8
    node["inputs"]["typo"] = 1
    assert validate.check_api(prompt, schemas) == [
        f"node {node_id} (LamaFFC_Inpaint): has no input named 'typo'",
        f"node {node_id} (LamaFFC_Inpaint) input 'model': required input is not connected",
        f"node {node_id} (LamaFFC_Inpaint) input 'strategy': required input has no value",
        f"node {node_id} (LamaFFC_Inpaint) input 'crop_margin': -8 is below the minimum 0",
    ]


def test_api_front_end_only_node(prompt, schemas):
    prompt["99"] = {"class_type": "Note", "inputs": {"text": "hello"}}
    assert validate.check_api(prompt, schemas) == ["node 99 (Note): front-end-only nodes cannot appear in an API prompt"]


# -- files and the command line ------------------------------------------------------------------


def test_problems_name_the_file(tmp_path, inpaint, schemas):
    node = node_of(inpaint, "LamaFFC_Inpaint")
    set_widget(inpaint, node, "resize_limit", 10, schemas)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(inpaint), encoding="utf-8")
    assert validate.check_file(path, schemas) == [
        f"{path}: node {node['id']} (LamaFFC_Inpaint) input 'resize_limit': 10 is below the minimum 64"]
    path.write_text("{}", encoding="utf-8")
    assert validate.check_file(path, schemas)[0].startswith(f"{path}: neither a UI workflow")


def test_command_line(tmp_path, inpaint, schemas, capsys):
    node_of(inpaint, "SaveImage")["type"] = "SaveImageNowhere"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(inpaint), encoding="utf-8")
    good = WORKFLOWS / "lama_inpaint.json"
    core = ["--object-info", str(validate.CORE_OBJECT_INFO)]
    assert validate.main([str(good), *core]) == 0
    assert validate.main([str(good), str(broken), *core]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok\n" in out and f"{broken}: node " in out and "unknown node class 'SaveImageNowhere'" in out


def test_conversion_refuses_bypassed_nodes(inpaint, schemas):
    node_of(inpaint, "LamaFFC_PrepareMask")["mode"] = 4
    with pytest.raises(ValueError, match="muted or bypassed nodes are not converted"):
        validate.ui_to_api(inpaint, schemas)


# -- the workflows name their pack -----------------------------------------------------------------


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_our_nodes_carry_the_registry_name_and_version(path):
    name, version = validate.pack_identity()
    workflow = load(path)
    ours = [node for node in workflow["nodes"] if node["type"].startswith("LamaFFC_")]
    assert ours and all(node["properties"]["cnr_id"] == name and node["properties"]["ver"] == version for node in ours)
    core = [node for node in workflow["nodes"] if node not in ours and node["type"] not in validate.FRONTEND_ONLY]
    assert all(node["properties"]["cnr_id"] == "comfy-core" for node in core)
    (note,) = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    assert f"(`{name}`)" in note["widgets_values"][0].split("\n\n")[1]  # right under the heading


def test_pack_properties_are_checked(inpaint, schemas):
    name, version = validate.pack_identity()
    node, loader, save = node_of(inpaint, "LamaFFC_Inpaint"), node_of(inpaint, "LamaFFC_LoadModel"), node_of(inpaint, "SaveImage")
    del node["properties"]["cnr_id"]
    loader["properties"]["ver"] = "0.0.9"
    save["properties"]["cnr_id"] = name
    assert validate.check_ui(inpaint, schemas) == [
        f"node {loader['id']} (LamaFFC_LoadModel): properties.ver is '0.0.9', expected {version!r} (pyproject's [project] version)",
        f"node {node['id']} (LamaFFC_Inpaint): properties.cnr_id is None, expected {name!r} (pyproject's [project] name), "
        "which the missing-nodes dialog and ComfyUI-Manager use to find the pack",
        f"node {save['id']} (SaveImage): a core node with properties.cnr_id {name!r}, expected 'comfy-core'",
    ]


def test_a_note_must_name_the_pack(inpaint, schemas):
    note = node_of(inpaint, "MarkdownNote")
    name, _ = validate.pack_identity()
    note["widgets_values"] = [note["widgets_values"][0].replace(name, "this pack")]
    assert validate.check_ui(inpaint, schemas) == [
        f"no note names the pack {name!r}: without it installed, users only see missing node classes"]
