"""LamaFFC_LoadModel: model folders, every file format, dtype rule, cache, errors."""

from __future__ import annotations

import logging
import os
import sys

import pytest
import torch


@pytest.mark.parametrize("model_name", [
    "lama/tiny.safetensors", "lama/tiny-prefixed.safetensors", "inpaint/sub/big-lama.pt", "inpaint/tiny.pth",
])
def test_every_format_loads_the_same_weights(call, comfy, tiny_state, model_name):
    (model,) = call("LamaFFC_LoadModel", model_name=model_name, dtype="auto")
    assert model.dtype == "fp32" and model.name == model_name
    state = model.generator.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tiny_state.items())
    patcher = model.patcher
    assert patcher.load_device == torch.device("cpu") and patcher.offload_device == torch.device("cpu")
    assert not patcher.model.training and next(patcher.model.parameters()).dtype == torch.float32
    # Made outside inference mode although the node ran inside it: refinement needs autograd.
    assert not any(p.is_inference() for p in model.generator.parameters())


def test_folder_registration_merges_with_existing_entries(call, comfy, models_dir, tmp_path):
    extra = str(tmp_path / "from_yaml")
    # extra_model_paths.yaml registers unknown keys with an empty set; another pack used a list.
    comfy.folder_names_and_paths["lama"] = ([extra], set())
    comfy.folder_names_and_paths["inpaint"] = ([str(models_dir / "inpaint")], [".patch"])
    call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")
    call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")  # idempotent
    lama_paths, lama_exts = comfy.folder_names_and_paths["lama"]
    assert lama_paths == [extra, str(models_dir / "lama")]
    assert {".safetensors", ".pt", ".pth", ".ckpt"} <= lama_exts
    inpaint_paths, inpaint_exts = comfy.folder_names_and_paths["inpaint"]
    assert inpaint_paths == [str(models_dir / "inpaint")] and ".patch" in inpaint_exts and ".pt" in inpaint_exts


def test_dtype_auto_follows_should_use_bf16(call, comfy):
    comfy.bf16 = True
    (auto,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="auto")
    assert auto.dtype == "bf16" and next(auto.patcher.model.parameters()).dtype == torch.bfloat16
    assert next(auto.generator.parameters()).dtype == torch.float32  # the fp32 source stays
    comfy.bf16 = False
    (forced,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    assert forced.dtype == "bf16"
    (plain,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="auto")
    assert plain.dtype == "fp32"


def test_cache_does_not_read_the_file_again(call, comfy, pack_module, models_dir, monkeypatch):
    loader = pack_module("nodes.loader")
    reads = []
    real = loader.load_generator
    monkeypatch.setattr(loader, "load_generator", lambda path: reads.append(path) or real(path))
    first = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")[0]
    second = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")[0]
    assert first is second and len(reads) == 1
    call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")  # dtype is part of the key
    assert len(reads) == 2
    path = models_dir / "lama" / "tiny.safetensors"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a replaced file
    try:
        third = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")[0]
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert third is not first and len(reads) == 3


def test_fingerprint_changes_with_the_file(pack, comfy, models_dir):
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_LoadModel"]
    before = cls.IS_CHANGED(model_name="lama/tiny.safetensors", dtype="auto")
    assert before == cls.IS_CHANGED(model_name="lama/tiny.safetensors", dtype="auto")
    assert before != cls.IS_CHANGED(model_name="inpaint/tiny.pth", dtype="auto")


def test_logs_what_was_loaded(call, comfy, caplog):
    with caplog.at_level(logging.INFO):
        call("LamaFFC_LoadModel", model_name="inpaint/sub/big-lama.pt", dtype="fp32")
    assert any("inpaint/sub/big-lama.pt" in r.getMessage() and "torchscript" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("model_name", "error", "text"), [
    ("lama/not-lama.safetensors", ValueError, "not-lama.safetensors: not a LaMa generator"),
    ("lama/missing.safetensors", FileNotFoundError, "'lama/missing.safetensors' not found"),
    ("checkpoints/x.safetensors", ValueError, "model_name: expected '<folder>/<file>'"),
])
def test_clear_errors(call, comfy, model_name, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        call("LamaFFC_LoadModel", model_name=model_name, dtype="fp32")


def test_model_input_must_come_from_the_loader(call, comfy, random_image, box_mask):
    with pytest.raises(TypeError, match="model: expected a LAMA_FFC_MODEL"):
        call("LamaFFC_Inpaint", model="big-lama.pt", image=random_image(1, 32, 32), mask=box_mask(1, 32, 32))


def test_model_list_is_empty_without_comfyui(pack_module, monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", None)
    assert pack_module("nodes.loader").model_names() == []


def test_a_torchscript_file_that_plants_code_loads_without_running_it(call, comfy, models_dir, tiny_generator,
                                                                     tiny_state, tmp_path):
    from hostile_files import file_writing_torchscript

    planted = tmp_path / "custom_nodes" / "planted.py"
    planted.parent.mkdir()
    path = file_writing_torchscript(models_dir / "lama" / "hostile.pt", tiny_generator, planted, b"print('pwned')\n")
    try:
        (model,) = call("LamaFFC_LoadModel", model_name="lama/hostile.pt", dtype="fp32")
    finally:
        path.unlink()
    state = model.generator.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tiny_state.items())
    assert not planted.exists()
