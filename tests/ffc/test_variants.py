"""Every LaMa variant users bring: detection from names and shapes, fidelity to each upstream's code
(goldens in tests/fixtures/variants, see provenance.json there), and clear errors for bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lama_multiscale_refine.ffc import BIG_LAMA, LAMA_FOURIER, CheckpointError, LamaConfig, LamaGenerator, fuse_for_inference, inpaint, load_generator
from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict
from lama_multiscale_refine.ffc.convert import convert
from lama_multiscale_refine.ffc.inference import predict
from lama_multiscale_refine.ffc.variants import VARIANTS, detect
from hostile_files import JitWrapper, script_mirror_to, trace_to
from lama_multiscale_refine.refine import RefineSettings, refine

VARIANT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "variants"
# Plain inference: the shared fixtures' tolerances for the raw prediction (max / mean |diff|).
RAW_MAX, RAW_MEAN = 1e-5, 1e-6


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(VARIANT_FIXTURES / f"{name}_golden.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _nested(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"gen_state_dict.model.1...": t}`` -> ``{"gen_state_dict": {"model.1...": t}}`` in float32,
    the container manga-image-translator's ``torch.load(...)['gen_state_dict']`` reads."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        top, rest = key.split(".", 1)
        out.setdefault(top, {})[rest] = value.float() if value.is_floating_point() else value
    return out


def _checkpoint(tmp_path: Path, name: str, edit=None) -> Path:
    flat = load_file(VARIANT_FIXTURES / f"{name}_tiny.safetensors")
    if edit is not None:
        flat = edit(dict(flat))
    path = tmp_path / f"{name}.ckpt"
    torch.save(_nested(flat), path)
    return path


def _inputs(golden: dict, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(golden[f"{case}_image"]).permute(2, 0, 1)[None].float() / 255
    hole = torch.from_numpy(golden[f"{case}_mask"] > 127)[None, None].float()
    return image, hole


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _assert_raw_close(ours: np.ndarray, golden: np.ndarray) -> None:
    diff = np.abs(ours - golden)
    assert diff.max() <= RAW_MAX and diff.mean() <= RAW_MEAN, (diff.max(), diff.mean())


def _meta(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Shapes only: detection never reads values."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


# --- detection -----------------------------------------------------------------------------------


def _full_size(fixtures_dir: Path, name: str) -> dict[str, list[int]]:
    return {k: s for k, s, _ in json.loads((fixtures_dir / name).read_text())}


@pytest.mark.parametrize(
    ("keys", "prefix", "extra", "variant_id", "name"),
    [
        ("biglama_keys.json", "generator.", {}, "big-lama", "Big-LaMa"),
        ("biglama_keys.json", "model.generator.", {}, "big-lama", "Big-LaMa"),  # anime-manga-big-lama.pt layout
        ("biglama_keys.json", "gen_state_dict.", {}, "mit-lama-large", "Big-LaMa, manga-image-translator checkpoint (lama_large)"),
        ("lama_fourier_keys.json", "", {}, "lama-fourier", "LaMa-Fourier"),
        ("lama_fourier_keys.json", "gen_state_dict.",
         {"str_state_dict.rel_pos_emb.weight": [128, 64], "str_state_dict.direct_emb.weight": [4, 64],
          "str_state_dict.alpha5": [], "str_state_dict.alpha6": []}, "lama-mpe", "LaMa-MPE"),
    ],
)
def test_released_variants_are_detected_from_shapes(fixtures_dir, keys, prefix, extra, variant_id, name):
    shapes = {prefix + k: s for k, s in _full_size(fixtures_dir, keys).items()}
    detection = detect(_meta({**shapes, **extra}))
    assert (detection.variant.id, detection.name) == (variant_id, name)
    assert detection.variant.refinable
    assert not detection.unused and not detection.ignored
    expected = LamaGenerator(detection.config).state_dict()  # what the shapes are checked against
    assert set(detection.state) == set(expected)


def test_every_variant_is_documented_and_reachable():
    ids = [v.id for v in VARIANTS]
    assert ids == ["lama-mpe", "mit-lama-large", "big-lama", "lama-fourier", "ffc-generator"]
    assert all(v.origin and v.refinable for v in VARIANTS)
    assert detect(LamaGenerator(LamaConfig(ngf=8, n_blocks=2)).state_dict()).name == "FFC generator (ngf 8, 2 blocks)"
    mpe = LamaGenerator(LamaConfig(ngf=8, n_blocks=2, mpe_positions=128)).state_dict()
    assert detect(mpe).name == "LaMa-MPE (ngf 8, 2 blocks)"
    # The released sizes are named without a suffix, and only by exact shapes.
    assert VARIANTS[2].display_name(BIG_LAMA) == "Big-LaMa" and VARIANTS[3].display_name(LAMA_FOURIER) == "LaMa-Fourier"


# --- fidelity against the upstream code ------------------------------------------------------------


@pytest.mark.parametrize("case", ["64x80", "96x72"])
def test_lama_mpe_matches_manga_image_translator(tmp_path, case):
    generator, info = load_generator(_checkpoint(tmp_path, "lama_mpe"))
    assert (info.variant_id, info.variant, info.refinable) == ("lama-mpe", "LaMa-MPE (ngf 8, 2 blocks)", True)
    assert info.part_prefixes == {"generator": "gen_state_dict.model.", "mpe": "str_state_dict."}
    assert info.key_prefix == "gen_state_dict.model." and not info.unused_keys
    golden = _golden("lama_mpe")
    image, hole = _inputs(golden, case)
    _assert_raw_close(_hwc(predict(generator, image, hole)), golden[f"{case}_pred_raw"])
    output = _hwc(inpaint(generator, image, hole))
    _assert_raw_close(output, golden[f"{case}_output"])
    known = golden[f"{case}_mask"] <= 127
    assert np.array_equal(output[known], (golden[f"{case}_image"] / np.float32(255)).astype(np.float32)[known])
    # The test can fail: without its encoding the same network is far off inside the hole.
    no_mpe = generator_from_state_dict({k: v for k, v in generator.state_dict().items() if not k.startswith("mpe.")})
    assert np.abs(_hwc(predict(no_mpe, image, hole)) - golden[f"{case}_pred_raw"])[~known].mean() > 0.05
    # The BatchNorm-folded fast model the nodes run.
    fast = fuse_for_inference(generator)
    _assert_raw_close(_hwc(predict(fast, image, hole)), golden[f"{case}_pred_raw"])


@pytest.mark.parametrize("name", ["lama_mpe", "lama_large"])
def test_manga_image_translator_pipeline_uint8(tmp_path, name):
    """``LamaMPEInpainter._infer`` at a size it does not resize: uint8 truncation, then the composite."""
    generator, _ = load_generator(_checkpoint(tmp_path, name))
    golden = _golden(name)
    image, hole = _inputs(golden, "64x80")
    filled = (_hwc(inpaint(generator, image, hole)) * 255).astype(np.uint8)
    keep = (golden["64x80_mask"] >= 127)[..., None]
    ours = filled * keep + golden["64x80_image"] * (1 - keep)
    assert np.count_nonzero(ours != golden["64x80_infer_uint8"]) <= 0.001 * ours.size


def test_lama_large_matches_manga_image_translator(tmp_path):
    generator, info = load_generator(_checkpoint(tmp_path, "lama_large"))
    assert info.key_prefix == "gen_state_dict.model." and "mpe" not in info.part_prefixes
    golden = _golden("lama_large")
    image, hole = _inputs(golden, "64x80")
    _assert_raw_close(_hwc(predict(generator, image, hole)), golden["64x80_pred_raw"])
    _assert_raw_close(_hwc(inpaint(generator, image, hole)), golden["64x80_output"])


def test_anime_lama_torchscript_matches_iopaint(tmp_path):
    """IOPaint runs anime-manga-big-lama.pt (bin/to_jit.py layout) with torch.jit; we read it as data."""
    source = generator_from_state_dict(load_file(VARIANT_FIXTURES / "anime_lama_tiny.safetensors"))
    path = trace_to(tmp_path / "anime-manga-big-lama.pt", JitWrapper(source))
    generator, info = load_generator(path)
    assert (info.source_format, info.key_prefix) == ("torchscript", "model.generator.model.")
    golden = _golden("anime_lama")
    image, hole = _inputs(golden, "64x80")
    _assert_raw_close(_hwc(inpaint(generator, image, hole)), golden["64x80_jit_output"])
    for case in ("64x80", "61x75"):  # 61x75: IOPaint's symmetric pad to 64x80, then the crop
        image, hole = _inputs(golden, case)
        filled = np.clip(_hwc(inpaint(generator, image, hole)) * 255, 0, 255).astype(np.uint8).astype(np.float32)
        known = (golden[f"{case}_mask"] == 0)[..., None]
        ours = np.where(known, golden[f"{case}_image"].astype(np.float32), filled)
        assert np.count_nonzero(ours != golden[f"{case}_iopaint_rgb"]) <= 0.001 * ours.size


def test_lama_mpe_refines(tmp_path):
    generator, info = load_generator(_checkpoint(tmp_path, "lama_mpe"))
    assert info.refinable
    golden = _golden("lama_mpe")
    image, hole = _inputs(golden, "64x80")
    settings = RefineSettings(n_scales=2, n_iters=3, checkpointing="off")
    result, reports = refine(generator, image, hole, settings)
    plain = inpaint(generator, image, hole)
    assert torch.equal(result[hole.expand_as(result) == 0], image[hole.expand_as(image) == 0])
    assert torch.isfinite(result).all()
    assert reports[0].regions[0].n_scales == 2 and len(reports[0].regions[0].scales[1].losses) == 3
    assert (result - plain).abs()[hole.expand_as(result) > 0].max() > 1e-3  # the refinement changed the fill


def test_lama_mpe_converts_to_canonical_safetensors(tmp_path):
    source = _checkpoint(tmp_path, "lama_mpe")
    out = tmp_path / "lama-mpe.safetensors"
    convert(str(source), str(out))
    generator, info = load_generator(out)
    original, _ = load_generator(source)
    assert info.variant_id == "lama-mpe" and info.part_prefixes == {"generator": "model.", "mpe": "mpe."}
    assert "converted from torch-pickle" in info.describe()
    image, hole = _inputs(_golden("lama_mpe"), "64x80")
    assert torch.equal(predict(generator, image, hole), predict(original, image, hole))


# --- bad input -------------------------------------------------------------------------------------


def test_unknown_tensors_are_named_never_dropped_silently(tmp_path, tiny_state, caplog):
    path = tmp_path / "extra.safetensors"
    extra = {"generator_average.model.1.ffc.convl2l.weight": torch.zeros(16, 4, 7, 7), "refiner.scale": torch.ones(1)}
    known = {"discriminator.model0.0.weight": torch.zeros(2), "val_evaluator.scores.w": torch.zeros(1)}
    save_file({**{"generator." + k: v for k, v in tiny_state.items()}, **extra, **known}, path)
    with caplog.at_level(logging.WARNING, logger="lama_multiscale_refine.ffc.checkpoint"):
        _, info = load_generator(path)
    assert info.unused_keys == ("generator_average.model.1.ffc.convl2l.weight", "refiner.scale")
    assert info.ignored_keys == 2
    assert "2 tensor(s) in the file are not part of any model the loader knows" in info.describe()
    assert "refiner.scale" in info.warnings[0] and "refiner.scale" in caplog.text


def test_clean_files_have_no_warnings(tmp_path):
    _, info = load_generator(_checkpoint(tmp_path, "lama_mpe"))
    assert info.warnings == [] and "not used" not in info.describe()


def test_mpe_file_with_a_missing_tensor(tmp_path):
    def drop_alpha6(flat):
        del flat["str_state_dict.alpha6"]
        return flat

    path = _checkpoint(tmp_path, "lama_mpe", drop_alpha6)
    with pytest.raises(CheckpointError, match=r"lama_mpe\.ckpt: looks like LaMa-MPE \(ngf 8, 2 blocks\) but tensor "
                                              r"'str_state_dict\.alpha6' is missing"):
        load_generator(path)


def test_mpe_file_whose_encoding_does_not_fit_the_generator(tmp_path):
    def widen(flat):
        flat["str_state_dict.rel_pos_emb.weight"] = torch.zeros(128, 16)
        return flat

    with pytest.raises(CheckpointError, match=r"lama_mpe\.ckpt: looks like LaMa-MPE .* tensor "
                                              r"'str_state_dict\.rel_pos_emb\.weight' has shape \[128, 16\]"):
        load_generator(_checkpoint(tmp_path, "lama_mpe", widen))

    def narrow_directions(flat):
        flat["str_state_dict.direct_emb.weight"] = torch.zeros(3, 8)
        return flat

    with pytest.raises(CheckpointError, match=r"'str_state_dict\.direct_emb\.weight' has shape \[3, 8\], expected \[4, 8\]"):
        load_generator(_checkpoint(tmp_path, "lama_mpe", narrow_directions))


def _assert_refused(path: Path, state: dict[str, torch.Tensor], message: str) -> None:
    save_file(state, path)
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_misshaped_tensor_is_named_as_in_the_file(tmp_path, tiny_state):
    state = {"gen_state_dict." + k: v for k, v in tiny_state.items()}
    state["gen_state_dict.model.9.weight"] = torch.zeros(128, 64, 3, 2)
    _assert_refused(tmp_path / "x.safetensors", state,
                    r"x\.safetensors: looks like FFC generator \(ngf 16, 3 blocks\) but tensor "
                    r"'gen_state_dict\.model\.9\.weight' has shape \[128, 64, 3, 2\]")


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"generator.middle.0.ffc1.ffc.convl2l.weight": [128, 128, 3, 3], "generator.conv1.weight": [64, 4, 7, 7]},
         r"this is ZITS .*'generator\.middle\.0\.ffc1\.ffc\.convl2l\.weight'.*not supported"),
        ({"generator.model.1.weight": [64, 4, 7, 7], "generator.model.1.bias": [64], "generator.model.2.running_mean": [64]},
         r"this is LaMa-regular \(pix2pixHD .*'generator\.model\.1\.weight'"),
    ],
)
def test_related_networks_get_a_named_refusal(tmp_path, tensors, message):
    _assert_refused(tmp_path / "other.safetensors", {k: torch.zeros(s) for k, s in tensors.items()},
                    r"other\.safetensors: " + message)


def test_small_kernel_generator_is_refused(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["model.1.ffc.convl2l.weight"] = torch.zeros(16, 4, 3, 3)
    state["model.2.ffc.convl2l.weight"] = torch.zeros(32, 16, 4, 4)
    _assert_refused(tmp_path / "inpainting_lama.safetensors", state,
                    r"looks like manga-image-translator inpainting_lama\.py generator "
                    r"\(tensor 'model\.1\.ffc\.convl2l\.weight' has shape \[16, 4, 3, 3\]\)")


def test_torchscript_of_an_unknown_variant(tmp_path, tiny_state):
    # A LaMa with local Fourier units (enable_lfu): tensors this network does not have.
    state = {**tiny_state, "model.5.conv1.ffc.convg2g.lfu.conv_layer.weight": torch.zeros(96, 96, 1, 1)}
    path = script_mirror_to(tmp_path / "lfu-lama.pt", state)
    with pytest.raises(CheckpointError, match=r"lfu-lama\.pt: looks like FFC generator \(ngf 16, 3 blocks\) but has tensor "
                                              r"'generator\.model\.5\.conv1\.ffc\.convg2g\.lfu\.conv_layer\.weight'"):
        load_generator(path)


def test_mpe_generator_given_the_wrong_inputs(tmp_path):
    generator, _ = load_generator(_checkpoint(tmp_path, "lama_mpe"))
    x = torch.rand(1, 4, 32, 32)
    with pytest.raises(ValueError, match="last channel must be the binary hole mask"):
        generator(x)
    with pytest.raises(ValueError, match=r"expected \(B, 4, H, W\), got \(1, 3, 32, 32\)"):
        generator(x[:, :3])
    x[:, 3] = (x[:, 3] > 0.5).float()
    assert generator(x).shape == (1, 3, 32, 32)


def test_refinement_refuses_a_model_without_a_front_rear_split(tiny_generator):
    class Opaque(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_generator

        def forward(self, x):
            return self.inner(x)

    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    with pytest.raises(TypeError, match="Opaque cannot be refined"):
        refine(Opaque(), image, mask)
