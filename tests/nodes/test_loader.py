"""LamaFFC_LoadModel: model folders, every file format, dtype rule, names, memory ownership, errors."""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import os
import shutil
import sys
import weakref

import pytest
import torch

# Loaded by tests/nodes/conftest.py (the stand-ins are a file, not a package).
stubs_module = sys.modules["lama_node_test_stubs"]


@pytest.mark.parametrize("model_name", [
    "lama/tiny.safetensors", "lama/tiny-prefixed.safetensors", "inpaint/sub/big-lama.pt", "inpaint/tiny.pth",
])
def test_every_format_loads_the_same_weights(call, comfy, tiny_state, model_name):
    (model,) = call("LamaFFC_LoadModel", model_name=model_name, dtype="auto")
    assert model.dtype == "fp32" and model.name == model_name
    state = model.float32_generator().state_dict()
    assert all(torch.equal(state[k], v) for k, v in tiny_state.items())
    patcher = model.patcher
    assert patcher.load_device == torch.device("cpu") and patcher.offload_device == torch.device("cpu")
    assert not patcher.model.training and next(patcher.model.parameters()).dtype == torch.float32
    # Made outside inference mode although the node ran inside it: refinement needs autograd.
    assert not any(p.is_inference() for p in patcher.model.parameters())
    assert not any(p.is_inference() for p in model.float32_generator().parameters())
    assert model.weight_bytes == 4 * sum(p.numel() for p in patcher.model.parameters())


def test_every_weight_is_in_a_leaf_module(call, comfy):
    """ComfyUI's ModelPatcher moves and counts only the parameters of leaf modules (``_load_list``
    skips modules with children as "default random weights"): anything else would stay on the GPU
    after a partial unload while ComfyUI believed it freed."""
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")
    stray = [name for name, module in model.patcher.model.named_modules()
             if next(module.children(), None) is not None and next(module.parameters(recurse=False), None) is not None]
    assert stray == []


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
    assert next(auto.float32_generator().parameters()).dtype == torch.float32  # fp32 weights on demand
    comfy.bf16 = False
    (forced,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    assert forced.dtype == "bf16"
    (plain,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="auto")
    assert plain.dtype == "fp32"


@pytest.fixture()
def reads(pack_module, monkeypatch) -> list[str]:
    """Every file the loader reads from now on."""
    loader = pack_module("nodes.loader")
    paths: list[str] = []
    real = loader.load_generator
    monkeypatch.setattr(loader, "load_generator", lambda path: paths.append(path) or real(path))
    return paths


def test_cache_does_not_read_the_file_again(call, comfy, models_dir, reads):
    first = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")[0]
    second = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")[0]
    assert first is second and len(reads) == 1
    bf16 = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")  # dtype is part of the key
    assert len(reads) == 2 and bf16[0] is not first
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
    ("checkpoints/x.safetensors", FileNotFoundError, "'checkpoints/x.safetensors' not found"),
    ("lama/../lama/tiny.safetensors", ValueError, "model_name: expected '<folder>/<file>' inside the model folders"),
    ("", ValueError, "model_name: expected a model file name"),
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


# --- model names across folders ---------------------------------------------------------------


@pytest.mark.parametrize(("model_name", "found"), [
    ("lama/tiny.pth", "inpaint/tiny.pth"),  # the workflow says lama/, the file is in models/inpaint
    ("inpaint/tiny.safetensors", "lama/tiny.safetensors"),
    ("tiny.pth", "inpaint/tiny.pth"),  # no folder at all
    ("lama/big-lama.pt", "inpaint/sub/big-lama.pt"),  # the only file of that name, in a subfolder
])
def test_a_name_is_found_in_either_folder(call, comfy, models_dir, caplog, model_name, found):
    with caplog.at_level(logging.INFO):
        (model,) = call("LamaFFC_LoadModel", model_name=model_name, dtype="fp32")
    assert model.source[0] == os.path.realpath(models_dir / found)
    assert any(repr(model_name) in r.getMessage() and found in r.getMessage() for r in caplog.records)


def test_not_found_names_the_folders_and_the_files(call, comfy, models_dir):
    with pytest.raises(FileNotFoundError) as caught:
        call("LamaFFC_LoadModel", model_name="lama/big-lama.safetensors", dtype="fp32")
    message = str(caught.value)
    assert f"lama: {models_dir / 'lama'}" in message and f"inpaint: {models_dir / 'inpaint'}" in message
    assert "available: lama/not-lama.safetensors, lama/tiny-prefixed.safetensors" in message
    assert "inpaint/sub/big-lama.pt" in message and "notes.txt" not in message


def test_a_name_two_files_share_is_not_guessed(call, comfy, models_dir, tmp_path):
    extra = tmp_path / "more_lama"
    (extra / "old").mkdir(parents=True)
    shutil.copyfile(models_dir / "inpaint" / "sub" / "big-lama.pt", extra / "old" / "big-lama.pt")
    comfy.folder_names_and_paths["lama"] = ([str(extra)], set())  # as extra_model_paths.yaml adds it
    with pytest.raises(FileNotFoundError, match="several files are called that: lama/old/big-lama.pt, "
                                                "inpaint/sub/big-lama.pt; pick one"):
        call("LamaFFC_LoadModel", model_name="lama/big-lama.pt", dtype="fp32")
    (model,) = call("LamaFFC_LoadModel", model_name="lama/old/big-lama.pt", dtype="fp32")
    assert model.source[0] == os.path.realpath(extra / "old" / "big-lama.pt")


def test_v1_validation_accepts_names_from_the_other_folder(pack, comfy):
    """ComfyUI checks V1 combo values before the run unless VALIDATE_INPUTS names the input."""
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_LoadModel"]
    assert inspect.getfullargspec(cls.VALIDATE_INPUTS).args == ["cls", "model_name"]  # exactly that input
    assert "lama/tiny.pth" not in cls.INPUT_TYPES()["required"]["model_name"][0]
    assert stubs_module.validate_like_comfyui(cls, {"model_name": "lama/tiny.pth", "dtype": "auto"}) == []
    (missing,) = stubs_module.validate_like_comfyui(cls, {"model_name": "lama/nothing.pt", "dtype": "auto"})
    assert missing.startswith("model_name - model_name: LaMa model 'lama/nothing.pt' not found") and "available:" in missing
    (dtype,) = stubs_module.validate_like_comfyui(cls, {"model_name": "lama/tiny.pth", "dtype": "fp16"})
    assert dtype == "dtype: 'fp16' not in ['auto', 'fp32', 'bf16']"  # the other combo is still checked by ComfyUI


# --- memory: ComfyUI owns the model -------------------------------------------------------------


def _free(comfy, pack_module) -> None:
    """POST /free {"unload_models": true, "free_memory": true}: unload, drop the node caches, collect."""
    comfy.loads.clear()  # the stub's call record is test bookkeeping, not something ComfyUI keeps
    sys.modules["comfy.model_management"].unload_all_models()
    gc.collect()


@pytest.mark.parametrize("files", [["lama/tiny.safetensors"], ["lama/tiny.safetensors", "inpaint/tiny.pth"]])
def test_free_releases_every_copy_of_the_weights(call, comfy, pack_module, random_image, box_mask, files):
    cache = pack_module("nodes.loader").CACHE
    outputs = [call("LamaFFC_LoadModel", model_name=name, dtype="fp32") for name in files]  # the node output cache
    for (model,) in outputs:
        call("LamaFFC_Inpaint", model=model, image=random_image(1, 32, 32), mask=box_mask(1, 32, 32))
    assert len(comfy.loaded_patchers()) == len(files) and len(cache.alive()) == len(files)
    weights = [weakref.ref(t) for (model,) in outputs for t in model.patcher.model.parameters()]
    patchers = [weakref.ref(model.patcher) for (model,) in outputs]
    del model
    _free(comfy, pack_module)
    assert comfy.loaded_patchers() == []
    assert cache.alive() == [m for (m,) in outputs]  # only "unload models": ComfyUI still caches the outputs
    outputs.clear()  # free_memory: the executor drops its caches (PromptExecutor.reset)
    gc.collect()
    assert cache.alive() == []
    assert [ref() for ref in patchers + weights] == [None] * (len(patchers) + len(weights))


def test_the_float32_generator_lives_only_while_used(call, comfy, reads, models_dir):
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    assert len(reads) == 1
    generator = model.float32_generator()
    assert model.float32_generator() is generator and len(reads) == 2  # one read while it is alive
    assert next(generator.parameters()).dtype == torch.float32 and not generator.training
    alive = weakref.ref(generator)
    del generator
    gc.collect()
    assert alive() is None  # the pack did not keep it
    model.float32_generator()
    assert len(reads) == 3


def test_float32_refinement_of_a_bf16_model_keeps_no_copy(call, comfy, random_image, box_mask, reads):
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    call("LamaFFC_Refine", model=model, image=random_image(1, 32, 32), mask=box_mask(1, 32, 32), n_iters=1,
         min_side=16, precision="fp32")
    assert len(reads) == 2  # the fp32 weights were read for the run ...
    gc.collect()
    alive = model._float32.get("generator")
    assert alive is not None and alive() is None  # ... and are gone after it


def test_a_replaced_file_is_not_read_behind_the_models_back(call, comfy, models_dir):
    (model,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="bf16")
    path = models_dir / "lama" / "tiny.safetensors"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(FileNotFoundError, match="was replaced or removed after 'lama/tiny.safetensors' was loaded"):
            model.float32_generator()
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# --- newer ComfyUI: DynamicVRAM ---------------------------------------------------------------


def test_the_classic_patcher_is_chosen_under_dynamic_vram(pack, monkeypatch, models_dir):
    stubs = stubs_module.ComfyStubs(str(models_dir), dynamic_vram=True, device=torch.device("cuda", 0))
    for name, module in stubs.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    mp = sys.modules["comfy.model_patcher"]
    assert mp.CoreModelPatcher is mp.ModelPatcherDynamic  # what main.py binds when comfy-aimdo is active
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_LoadModel"]
    with torch.inference_mode():
        (model,) = cls().execute(model_name="lama/tiny.safetensors", dtype="fp32")
    assert type(model.patcher) is mp.ModelPatcher and not model.patcher.is_dynamic()
    assert model.patcher.load_device == torch.device("cuda", 0)
    # The RAM-pressure cache (comfy_execution/caching.py) sees our output as a model and evicts it first.
    assert mp.is_model_patcher_output(model)
    # What the dynamic patcher would have done with our plain-torch module: a second copy of every weight.
    dynamic = mp.ModelPatcherDynamic(copy.deepcopy(model.patcher.model), torch.device("meta"), torch.device("cpu"))
    dynamic.load(torch.device("meta"))
    assert len(dynamic.backup) == len(list(model.patcher.model.parameters()))
    with pytest.raises(AssertionError):
        dynamic.load(torch.device("meta"), full_load=True)


def test_a_torchscript_file_that_plants_code_loads_without_running_it(call, comfy, models_dir, tiny_generator,
                                                                     tiny_state, tmp_path):
    from hostile_files import file_writing_torchscript

    planted = tmp_path / "custom_nodes" / "planted.py"
    planted.parent.mkdir()
    path = file_writing_torchscript(models_dir / "lama" / "hostile.pt", tiny_generator, planted, b"print('pwned')\n")
    try:
        (model,) = call("LamaFFC_LoadModel", model_name="lama/hostile.pt", dtype="fp32")
        state = model.float32_generator().state_dict()  # read from the file again, on demand
    finally:
        path.unlink()
    assert all(torch.equal(state[k], v) for k, v in tiny_state.items())
    assert not planted.exists()
