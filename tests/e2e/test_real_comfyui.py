"""End-to-end: the pack inside a real ComfyUI server, driven over its HTTP API.

Opt-in: set ``COMFYUI_PATH`` to a ComfyUI checkout and, when ComfyUI has its own virtual
environment, ``COMFYUI_PYTHON`` to that interpreter (default: this one). The server runs on a free
127.0.0.1 port with temporary folders; the tiny golden generator is its only model.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from e2e.comfyui_server import ComfyUIError, ComfyUIServer, ServerLayout, combo_options, make_node

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI checkout"),
]

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "lama_multiscale_refine"
NODE_IDS = ("LamaFFC_LoadModel", "LamaFFC_PrepareMask", "LamaFFC_Inpaint", "LamaFFC_Refine")
MODEL = "lama/tiny_lama.safetensors"
INPAINT_MODEL = "inpaint/tiny_lama_inpaint.safetensors"
READY_TIMEOUT = 120.0
PROMPT_TIMEOUT = 300.0


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _fixture_weights() -> Path:
    fixtures = Path(os.environ.get("LAMA_FIXTURES", REPO.parent / "shared" / "fixtures"))
    weights = fixtures / "tiny_lama.safetensors"
    if not weights.is_file():
        _skip_or_fail(f"golden fixtures not found at {fixtures} (set LAMA_FIXTURES)")
    return weights


@dataclass(frozen=True)
class Picture:
    """An input file: smooth colours, transparent (so LoadImage masks it) in ``hole``; RGB without one."""

    name: str
    width: int
    height: int
    hole: tuple[slice, slice] | None

    def rgba(self) -> np.ndarray:
        y, x = np.mgrid[0 : self.height, 0 : self.width]
        rgba = np.stack([3 * x, 2 * y, (3 * x + 7 * y) % 256, np.full_like(x, 255)], axis=-1) % 256
        if self.hole is not None:
            rgba[self.hole + (3,)] = 0
        return rgba.astype(np.uint8)

    def save(self, folder: Path) -> None:
        from PIL import Image

        rgba = self.rgba()
        image = Image.fromarray(rgba, "RGBA") if self.hole is not None else Image.fromarray(rgba[..., :3], "RGB")
        image.save(folder / self.name)


# SMALL: min(48, 64) / 24 = 2, so min_side=24 gives two pyramid levels, the coarsest 24x32.
SMALL = Picture("e2e_small.png", 64, 48, (slice(14, 30), slice(20, 44)))
# LARGE: bigger than the smallest resize_limit (64) and than a hole plus a small crop margin.
LARGE = Picture("e2e_large.png", 160, 120, (slice(40, 80), slice(50, 110)))
# OPAQUE: no alpha, so LoadImage's mask is 64x64 zeros, neither this size nor aspect.
OPAQUE = Picture("e2e_opaque.png", 80, 40, None)


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory) -> ComfyUIServer:
    """A running server with the pack, the tiny model and the input pictures; stopped afterwards."""
    pytest.importorskip("PIL.Image")
    comfy_path = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
    if not (comfy_path / "main.py").is_file():
        _skip_or_fail(f"COMFYUI_PATH={comfy_path} is not a ComfyUI checkout (no main.py)")
    weights = _fixture_weights()
    layout = ServerLayout(tmp_path_factory.mktemp("comfyui"))
    layout.create(REPO, PACK_NAME)
    shutil.copyfile(weights, layout.lama_models / Path(MODEL).name)
    shutil.copyfile(weights, layout.inpaint_models / Path(INPAINT_MODEL).name)
    for picture in (SMALL, LARGE, OPAQUE):
        picture.save(layout.input)

    server = ComfyUIServer(comfy_path, os.environ.get("COMFYUI_PYTHON", sys.executable), layout, PACK_NAME)
    server.start()
    try:
        seconds = server.wait_ready(READY_TIMEOUT)
        print(f"\n[e2e] ComfyUI ready after {seconds:.1f} s on port {server.port}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def object_info(comfyui: ComfyUIServer) -> dict[str, dict]:
    return comfyui.object_info()


def _masked_input(info: dict, picture: Picture) -> dict[str, dict]:
    """LoadImage -> LamaFFC_PrepareMask, every widget at its default."""
    return {
        "load": make_node(info, "LoadImage", image=picture.name),
        "prepare": make_node(info, "LamaFFC_PrepareMask", mask=["load", 1]),
    }


def _save(info: dict, graph: dict, name: str, image_node: str) -> None:
    """SaveImage for the image (output 0) and, through MaskToImage, the mask (output 1) of a node."""
    graph[f"{name}_mask"] = make_node(info, "MaskToImage", mask=[image_node, 1])
    graph[f"save_{name}"] = make_node(info, "SaveImage", images=[image_node, 0], filename_prefix=f"e2e/{name}")
    graph[f"save_{name}_mask"] = make_node(info, "SaveImage", images=[f"{name}_mask", 0],
                                           filename_prefix=f"e2e/{name}_mask")


def _saved(server: ComfyUIServer, entry: dict, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) pairs a node saved through _save, as (H, W, 3) and (H, W) uint8."""
    images = [_decode(png) for png in server.output_images(entry, f"save_{name}")]
    masks = [_decode(png)[..., 0] for png in server.output_images(entry, f"save_{name}_mask")]
    assert len(images) == len(masks), f"{name}: {len(images)} images but {len(masks)} masks"
    return list(zip(images, masks))


def _check_saved(server: ComfyUIServer, entry: dict, name: str, picture: Picture, batch: int = 1) -> None:
    """Input size; bit-identical to the input where the node's mask is 0; changed somewhere inside."""
    source = picture.rgba()[..., :3]
    saved = _saved(server, entry, name)
    assert len(saved) == batch, f"{name}: saved {len(saved)} images, expected {batch}"
    for result, mask in saved:
        assert result.shape == source.shape, f"{name}: saved {result.shape}, input {source.shape}"
        assert mask.shape == source.shape[:2], f"{name}: mask {mask.shape}, input {source.shape[:2]}"
        assert (mask[picture.hole] > 0).any(), f"{name}: the mask misses the transparent rectangle"
        keep = mask == 0
        assert keep.any(), f"{name}: the mask covers the whole picture"
        changed = np.any(result != source, axis=-1)
        assert not changed[keep].any(), f"{name}: {int(changed[keep].sum())} pixels outside the mask differ from the input"
        assert changed[~keep].any(), f"{name}: nothing changed inside the mask"


def _require_pack(comfyui: ComfyUIServer, object_info: dict) -> None:
    missing = [node_id for node_id in NODE_IDS if node_id not in object_info]
    if missing:
        pytest.fail(f"not in /object_info: {missing}; import errors: {comfyui.pack_import_failures()}")


def test_pack_imports_cleanly(comfyui: ComfyUIServer, object_info: dict) -> None:
    assert comfyui.pack_import_failures() == []
    _require_pack(comfyui, object_info)
    modules = {node_id: object_info[node_id]["python_module"] for node_id in NODE_IDS}
    assert set(modules.values()) == {f"custom_nodes.{PACK_NAME}"}, modules


def test_object_info_schema(comfyui: ComfyUIServer, object_info: dict) -> None:
    _require_pack(comfyui, object_info)
    outputs = {node_id: object_info[node_id]["output"] for node_id in NODE_IDS}
    assert outputs == {
        "LamaFFC_LoadModel": ["LAMA_FFC_MODEL"],
        "LamaFFC_PrepareMask": ["MASK"],
        "LamaFFC_Inpaint": ["IMAGE", "MASK"],
        "LamaFFC_Refine": ["IMAGE", "MASK"],
    }
    loader = object_info["LamaFFC_LoadModel"]
    models = combo_options(loader, "model_name")
    assert MODEL in models and INPAINT_MODEL in models, models
    assert {"auto", "fp32"} <= set(combo_options(loader, "dtype"))
    if (comfyui.comfy_path / "comfy_api" / "latest").is_dir():
        # V3 nodes list combos as ["COMBO", {"options": [...]}]; V1 ones as [[...], {...}].
        assert loader["input"]["required"]["model_name"][0] == "COMBO", "V1 nodes on a ComfyUI with the V3 API"


def test_model_list_refreshes(comfyui: ComfyUIServer, object_info: dict) -> None:
    """A file dropped into models/lama after start-up is offered without a restart (the UI's Refresh)."""
    _require_pack(comfyui, object_info)
    shutil.copyfile(comfyui.layout.lama_models / Path(MODEL).name, comfyui.layout.lama_models / "added_later.safetensors")
    loader = comfyui.get_json("/object_info/LamaFFC_LoadModel")["LamaFFC_LoadModel"]
    assert "lama/added_later.safetensors" in combo_options(loader, "model_name")


def test_nodes_are_documented(comfyui: ComfyUIServer, object_info: dict) -> None:
    _require_pack(comfyui, object_info)
    undocumented = [node_id for node_id in NODE_IDS if not object_info[node_id].get("description")]
    no_tooltip = [
        f"{node_id}.{name}"
        for node_id in NODE_IDS
        for group in ("required", "optional")
        for name, spec in object_info[node_id]["input"].get(group, {}).items()
        if not (len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("tooltip"))
    ]
    assert undocumented == [], f"nodes without a description: {undocumented}"
    assert no_tooltip == [], f"inputs without a tooltip: {no_tooltip}"


def test_load_model_every_dtype(comfyui: ComfyUIServer, object_info: dict) -> None:
    """Each dtype option loads the model from `lama`, and `inpaint` loads too; the fill keeps the rest."""
    _require_pack(comfyui, object_info)
    graph = _masked_input(object_info, SMALL)
    loads = [(dtype, MODEL) for dtype in combo_options(object_info["LamaFFC_LoadModel"], "dtype")]
    loads.append(("auto", INPAINT_MODEL))
    for index, (dtype, model_name) in enumerate(loads):
        graph[f"model_{index}"] = make_node(object_info, "LamaFFC_LoadModel", model_name=model_name, dtype=dtype)
        graph[f"fill_{index}"] = make_node(object_info, "LamaFFC_Inpaint", model=[f"model_{index}", 0],
                                           image=["load", 0], mask=["prepare", 0])
        _save(object_info, graph, f"fill_{index}", f"fill_{index}")
    entry, seconds = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    print(f"\n[e2e] {len(loads)} loads + inpaints ({', '.join(f'{d}:{m}' for d, m in loads)}): {seconds:.1f} s")
    for index in range(len(loads)):
        _check_saved(comfyui, entry, f"fill_{index}", SMALL)


def test_model_names_resolve_across_folders(comfyui: ComfyUIServer, object_info: dict) -> None:
    """``lama/<file>`` runs when the file is in models/inpaint; an unknown name is refused before the run."""
    _require_pack(comfyui, object_info)
    elsewhere = "lama/" + Path(INPAINT_MODEL).name  # only in the inpaint folder
    assert elsewhere not in combo_options(object_info["LamaFFC_LoadModel"], "model_name")
    graph = _masked_input(object_info, SMALL)
    graph["model"] = make_node(object_info, "LamaFFC_LoadModel", model_name=elsewhere)
    graph["fill"] = make_node(object_info, "LamaFFC_Inpaint", model=["model", 0], image=["load", 0], mask=["prepare", 0])
    _save(object_info, graph, "fill", "fill")
    entry, _ = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    _check_saved(comfyui, entry, "fill", SMALL)
    graph["model"]["inputs"]["model_name"] = "lama/no_such_model.safetensors"
    with pytest.raises(ComfyUIError) as refused:
        comfyui.queue_prompt(graph)
    message = str(refused.value)
    assert "rejected (400)" in message and "no_such_model.safetensors" in message and "not found" in message
    assert Path(MODEL).name in message and Path(INPAINT_MODEL).name in message  # what exists is listed


def test_inpaint_every_strategy(comfyui: ComfyUIServer, object_info: dict) -> None:
    """Each strategy, with a resize limit and a crop margin small enough to take effect."""
    _require_pack(comfyui, object_info)
    graph = _masked_input(object_info, LARGE)
    graph["model"] = make_node(object_info, "LamaFFC_LoadModel", model_name=MODEL)
    strategies = combo_options(object_info["LamaFFC_Inpaint"], "strategy")
    for strategy in strategies:
        graph[strategy] = make_node(object_info, "LamaFFC_Inpaint", model=["model", 0], image=["load", 0],
                                    mask=["prepare", 0], strategy=strategy, resize_limit=64, crop_margin=8)
        _save(object_info, graph, strategy, strategy)
    entry, seconds = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    print(f"\n[e2e] inpaint strategies {strategies}: {seconds:.1f} s")
    for strategy in strategies:
        _check_saved(comfyui, entry, strategy, LARGE)


def test_inpaint_then_refine(comfyui: ComfyUIServer, object_info: dict) -> None:
    """LoadImage -> PrepareMask -> Inpaint -> Refine (2 iterations, 2 scales) -> SaveImage, whole and cropped."""
    _require_pack(comfyui, object_info)
    refine_defaults = make_node(object_info, "LamaFFC_Refine")["inputs"]
    graph = _masked_input(object_info, SMALL)
    graph["model"] = make_node(object_info, "LamaFFC_LoadModel", model_name=MODEL)
    graph["inpaint"] = make_node(object_info, "LamaFFC_Inpaint", model=["model", 0], image=["load", 0],
                                 mask=["prepare", 0])
    refine = {"model": ["model", 0], "image": ["inpaint", 0], "mask": ["inpaint", 1], "n_iters": 2, "min_side": 24,
              "max_scales": max(2, refine_defaults["max_scales"]), "mode": "paper"}
    graph["refine"] = make_node(object_info, "LamaFFC_Refine", **refine, crop_to_mask=False)
    # The crop (eroded hole plus 16 px) is still at least 32 px a side: two scales there too.
    graph["refine_crop"] = make_node(object_info, "LamaFFC_Refine", **refine, crop_to_mask=True, crop_margin=16)
    names = ("inpaint", "refine", "refine_crop")
    for name in names:
        _save(object_info, graph, name, name)
    entry, seconds = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    print(f"\n[e2e] inpaint + refine (whole image and crop_to_mask): {seconds:.1f} s")
    for name in names:
        _check_saved(comfyui, entry, name, SMALL)


def test_batch_of_two_with_one_mask(comfyui: ComfyUIServer, object_info: dict) -> None:
    """Two images and one mask: the mask applies to both (core nodes repeat a batch-1 mask)."""
    _require_pack(comfyui, object_info)
    graph = _masked_input(object_info, SMALL)
    graph["batch"] = make_node(object_info, "RepeatImageBatch", image=["load", 0], amount=2)
    graph["model"] = make_node(object_info, "LamaFFC_LoadModel", model_name=MODEL)
    graph["inpaint"] = make_node(object_info, "LamaFFC_Inpaint", model=["model", 0], image=["batch", 0],
                                 mask=["prepare", 0])
    graph["refine"] = make_node(object_info, "LamaFFC_Refine", model=["model", 0], image=["inpaint", 0],
                                mask=["prepare", 0], n_iters=1, min_side=24, mode="paper")
    for name in ("inpaint", "refine"):
        _save(object_info, graph, name, name)
    entry, seconds = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    print(f"\n[e2e] batch of 2, inpaint + refine: {seconds:.1f} s")
    for name in ("inpaint", "refine"):
        _check_saved(comfyui, entry, name, SMALL, batch=2)


def test_image_without_alpha_passes_through(comfyui: ComfyUIServer, object_info: dict) -> None:
    """No alpha: LoadImage gives a 64x64 empty mask; both nodes return the input unchanged."""
    _require_pack(comfyui, object_info)
    graph = _masked_input(object_info, OPAQUE)
    graph["model"] = make_node(object_info, "LamaFFC_LoadModel", model_name=MODEL)
    graph["inpaint"] = make_node(object_info, "LamaFFC_Inpaint", model=["model", 0], image=["load", 0],
                                 mask=["prepare", 0])
    graph["refine"] = make_node(object_info, "LamaFFC_Refine", model=["model", 0], image=["inpaint", 0],
                                mask=["inpaint", 1], n_iters=1)
    for name in ("inpaint", "refine"):
        _save(object_info, graph, name, name)
    entry, _ = comfyui.run_prompt(graph, PROMPT_TIMEOUT)
    source = OPAQUE.rgba()[..., :3]
    for name in ("inpaint", "refine"):
        [(result, mask)] = _saved(comfyui, entry, name)
        assert mask.shape == source.shape[:2] and not mask.any(), f"{name}: expected an empty {source.shape[:2]} mask"
        assert np.array_equal(result, source), f"{name}: changed an image that has nothing to fill"


# -- memory: "Free model and node cache" frees LaMa ------------------------------------------------

# glibc keeps freed blocks of a dynamically grown mmap threshold in its heap, so RSS would not show
# a release; a fixed threshold returns every large block (all weight tensors) to the system at once.
FREE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
SETTLE_SECONDS = 30.0


def _big_lama_file(path: Path, seed: int) -> int:
    """A random-weight Big-LaMa (51M parameters) as safetensors; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    from lama_multiscale_refine.ffc import BIG_LAMA, LamaGenerator

    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in LamaGenerator(BIG_LAMA).state_dict().items()}, str(path))
    return path.stat().st_size


def _settled_rss(server: ComfyUIServer) -> int:
    """RSS once it has stopped changing (by more than 1 MiB over 2 s), within SETTLE_SECONDS."""
    import time

    start = time.monotonic()
    samples = [server.rss_bytes()]
    while time.monotonic() - start < SETTLE_SECONDS:
        time.sleep(0.25)
        samples.append(server.rss_bytes())
        recent = samples[-9:]
        if len(recent) == 9 and max(recent) - min(recent) < (1 << 20):
            break
    return samples[-1]


def _free(server: ComfyUIServer, info: dict) -> int:
    """POST /free as the UI's "Free model and node cache" button does; the settled RSS after it.

    The server sets its two flags with two wake-ups of the prompt worker, which may read only the
    first and then sleep until the next prompt (seen with 0.3.64). Two trivial prompts afterwards
    make sure the worker has read both flags (it reads them after each prompt) before RSS is read.
    """
    server.post_json("/free", {"unload_models": True, "free_memory": True})
    for _ in range(2):
        server.run_prompt({"load": make_node(info, "LoadImage", image=SMALL.name),
                           "show": make_node(info, "PreviewImage", images=["load", 0])}, PROMPT_TIMEOUT)
    return _settled_rss(server)


@pytest.fixture(scope="module")
def big_models_server(tmp_path_factory) -> tuple[ComfyUIServer, int]:
    """A fresh server (RSS of its own) with two Big-LaMa-sized files, one in lama/, one in inpaint/."""
    pytest.importorskip("PIL.Image")
    if not Path("/proc/self/status").is_file():
        pytest.skip("RSS is read from /proc (Linux only)")
    comfy_path = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
    layout = ServerLayout(tmp_path_factory.mktemp("comfyui_free"))
    layout.create(REPO, PACK_NAME)
    shutil.copyfile(_fixture_weights(), layout.lama_models / Path(MODEL).name)
    size = _big_lama_file(layout.lama_models / "big_a.safetensors", seed=1)
    _big_lama_file(layout.inpaint_models / "big_b.safetensors", seed=2)
    SMALL.save(layout.input)
    server = ComfyUIServer(comfy_path, os.environ.get("COMFYUI_PYTHON", sys.executable), layout, PACK_NAME,
                           env=FREE_MEMORY_ENV)
    server.start()
    try:
        server.wait_ready(READY_TIMEOUT)
        yield server, size
    finally:
        server.stop()


def _inpaint_with(server: ComfyUIServer, info: dict, model_names: list[str]) -> None:
    graph = _masked_input(info, SMALL)
    for index, name in enumerate(model_names):
        graph[f"model_{index}"] = make_node(info, "LamaFFC_LoadModel", model_name=name, dtype="fp32")
        graph[f"fill_{index}"] = make_node(info, "LamaFFC_Inpaint", model=[f"model_{index}", 0], image=["load", 0],
                                           mask=["prepare", 0])
        graph[f"save_{index}"] = make_node(info, "SaveImage", images=[f"fill_{index}", 0], filename_prefix="e2e/free")
    server.run_prompt(graph, PROMPT_TIMEOUT)


def test_free_releases_lama_models(big_models_server) -> None:
    """After POST /free the server's RSS is back near where it was before the models were loaded."""
    server, weights = big_models_server
    info = server.object_info()
    _inpaint_with(server, info, [MODEL])  # warm-up: torch kernels, ComfyUI caches, the tiny model
    baseline = _free(server, info)
    print(f"\n[e2e] one Big-LaMa file = {weights / 2**20:.0f} MiB; server RSS after warm-up and /free: "
          f"{baseline / 2**20:.0f} MiB")
    for label, names in (("one model", ["lama/big_a.safetensors"]),
                         ("two models", ["lama/big_a.safetensors", "inpaint/big_b.safetensors"])):
        _inpaint_with(server, info, names)
        loaded = _settled_rss(server)
        freed = _free(server, info)
        print(f"[e2e] {label}: RSS {loaded / 2**20:.0f} MiB loaded, {freed / 2**20:.0f} MiB after /free")
        assert loaded - baseline > 0.8 * weights * len(names), f"{label}: the models never showed in RSS"
        assert freed - baseline < 0.25 * weights, f"{label}: /free left {(freed - baseline) / 2**20:.0f} MiB behind"
