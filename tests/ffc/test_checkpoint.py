"""Every checkpoint format users have, built from the tiny fixture weights, and broken files."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lama_multiscale_refine.ffc import CheckpointError, LamaGenerator, canonicalize, detect_format, load_generator
from lama_multiscale_refine.ffc.checkpoint import file_sha256
from lama_multiscale_refine.ffc.convert import convert, main as convert_main
from hostile_files import GeneratorWrapper, OsSystem, trace_to

REPO = Path(__file__).resolve().parents[2]


def _assert_same_tensors(generator: LamaGenerator, reference: dict[str, torch.Tensor]) -> None:
    state = generator.state_dict()
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    # canonical "model.<i>.x" -> prefix + "<i>.x"
    return {prefix + k.removeprefix("model."): v for k, v in state.items()}


@pytest.mark.parametrize(
    "prefix", ["model.", "", "model.model.", "generator.model.", "model.generator.model.", "module.generator.model."]
)
def test_safetensors_with_any_prefix(tmp_path, tiny_state, prefix):
    path = tmp_path / "lama.safetensors"
    extra = {"discriminator.model0.0.weight": torch.zeros(2, 2)}
    save_file({**_prefixed(tiny_state, prefix), **extra}, path)
    generator, info = load_generator(path)
    _assert_same_tensors(generator, tiny_state)
    assert (info.source_format, info.key_prefix, info.ignored_keys) == ("safetensors", prefix, 1)
    assert not any(p.requires_grad for p in generator.parameters())
    assert not generator.training


def _install_fake_modules(monkeypatch) -> dict[str, type]:
    """Stand-ins for pytorch_lightning / omegaconf classes, registered under their real names."""
    classes = {}
    for module_name, class_name in [
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
        ("omegaconf.dictconfig", "DictConfig"),
        ("omegaconf.base", "ContainerMetadata"),
        ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ]:
        base = dict if class_name == "AttributeDict" else object
        cls = type(class_name, (base,), {"__module__": module_name})
        module = types.ModuleType(module_name)
        setattr(module, class_name, cls)
        for i in range(1, module_name.count(".") + 2):
            monkeypatch.setitem(sys.modules, ".".join(module_name.split(".")[:i]), types.ModuleType("parent"))
        monkeypatch.setitem(sys.modules, module_name, module)
        classes[class_name] = cls
    return classes


def _lightning_checkpoint(path: Path, state: dict, monkeypatch, exploit_marker: Path) -> None:
    cls = _install_fake_modules(monkeypatch)
    config = cls["DictConfig"]()
    config.__dict__.update({"_metadata": cls["ContainerMetadata"](), "_content": {"generator": {"ngf": 16}}})
    hparams = cls["AttributeDict"](lr=0.001, kind="default")
    checkpoint = {
        "epoch": 40,
        "global_step": 123,
        "pytorch-lightning_version": "1.2.9",
        "state_dict": OrderedDict(
            [("generator." + k, v) for k, v in state.items()]
            + [("discriminator.model0.0.weight", torch.zeros(4, 3, 4, 4)), ("val_evaluator.scores.lpips.w", torch.ones(3))]
        ),
        "callbacks": {cls["ModelCheckpoint"]: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
        "hyper_parameters": config,
        "hparams_type": cls["DictConfig"],
        "hparams": hparams,
        "exploit": OsSystem(f"touch {exploit_marker}"),
    }
    torch.save(checkpoint, path)
    monkeypatch.undo()  # the loader must work without these modules


def test_lightning_checkpoint_loads_without_lightning_and_runs_no_pickled_code(tmp_path, tiny_state, monkeypatch):
    path, marker = tmp_path / "best.ckpt", tmp_path / "pwned"
    _lightning_checkpoint(path, tiny_state, monkeypatch, marker)
    assert "pytorch_lightning" not in sys.modules and "omegaconf" not in sys.modules
    with pytest.raises(Exception):  # what a plain safe load does with such a file
        torch.load(path, weights_only=True)
    generator, info = load_generator(path)
    _assert_same_tensors(generator, tiny_state)
    assert (info.source_format, info.key_prefix, info.ignored_keys) == ("lightning-ckpt", "generator.model.", 2)
    assert not marker.exists()
    assert "pytorch_lightning" not in sys.modules


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_plain_state_dict_pickles(tmp_path, tiny_state, zipfile_format):
    path = tmp_path / "lama.pth"
    torch.save(tiny_state, path, _use_new_zipfile_serialization=zipfile_format)
    assert detect_format(str(path)) == ("torch-zip" if zipfile_format else "torch-legacy")
    generator, info = load_generator(path)
    _assert_same_tensors(generator, tiny_state)
    assert info.source_format == "torch-pickle"


def test_half_precision_weights_load_as_float32(tmp_path, tiny_state):
    path = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tiny_state.items()}, path)
    generator, _ = load_generator(path)
    assert all(p.dtype == torch.float32 for p in generator.parameters())
    ref = tiny_state["model.19.weight"]
    assert torch.equal(generator.state_dict()["model.19.weight"], ref.half().float())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["safetensors", "torchscript", "zip-pickle", "legacy-pickle"])
def test_truncated_files_give_clear_errors(tmp_path, tiny_state, tiny_generator, kind):
    full = tmp_path / "full"
    if kind == "safetensors":
        save_file(tiny_state, full)
    elif kind == "torchscript":
        trace_to(full, GeneratorWrapper(tiny_generator))
    else:
        torch.save(tiny_state, full, _use_new_zipfile_serialization=kind == "zip-pickle")
    data = full.read_bytes()
    truncated = _write(tmp_path / "truncated.bin", data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(truncated)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty or truncated"), (b"this is not a model file at all", "unknown file format")],
)
def test_unreadable_files(tmp_path, content, message):
    with pytest.raises(CheckpointError, match=message):
        load_generator(_write(tmp_path / "x.ckpt", content))
    with pytest.raises(CheckpointError, match="cannot open"):
        load_generator(tmp_path / "missing.safetensors")


def test_non_lama_checkpoint(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.safetensors: not a LaMa generator"):
        load_generator(path)


def test_missing_and_misshaped_keys_are_named(tmp_path, tiny_state):
    broken = dict(tiny_state)
    del broken["model.6.conv2.ffc.convg2g.fu.conv_layer.weight"]
    save_file(broken, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: looks like FFC generator \(ngf 16, 3 blocks\) but tensor "
                       r"'model\.6\.conv2\.ffc\.convg2g\.fu\.conv_layer\.weight' is missing"):
        load_generator(tmp_path / "missing.safetensors")

    broken = dict(tiny_state)
    broken["model.9.weight"] = torch.zeros(128, 64, 3, 2)
    save_file(broken, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointError, match=r"'model\.9\.weight' has shape \[128, 64, 3, 2\], expected \[128, 64, 3, 3\]"):
        load_generator(tmp_path / "shape.safetensors")

    extra = {**tiny_state, "model.5.conv1.ffc.convg2g.lfu.conv_layer.weight": torch.zeros(1)}
    save_file(extra, tmp_path / "lfu.safetensors")
    with pytest.raises(CheckpointError, match="has tensor 'model.5.conv1.ffc.convg2g.lfu.conv_layer.weight', which that network does not have"):
        load_generator(tmp_path / "lfu.safetensors")


def test_non_finite_weights_are_rejected(tmp_path, tiny_state):
    broken = {**tiny_state, "model.19.bias": torch.tensor([0.0, float("nan"), 0.0])}
    save_file(broken, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="'model.19.bias' contains NaN"):
        load_generator(tmp_path / "nan.safetensors")


def test_canonicalize_prefers_the_known_wrapper_when_ambiguous(tiny_state):
    unknown = {**_prefixed(tiny_state, "gen_a.model."), **_prefixed(tiny_state, "gen_b.model.")}
    with pytest.raises(CheckpointError, match="several generators"):
        canonicalize(unknown)
    _, prefix, _ = canonicalize({**_prefixed(tiny_state, "generator.model."), **_prefixed(tiny_state, "ema.model.")})
    assert prefix == "generator.model."
    both = {**_prefixed(tiny_state, "generator.model."), **_prefixed(tiny_state, "model.generator.model.")}
    _, prefix, ignored = canonicalize(both)
    assert prefix == "model.generator.model." and ignored == len(tiny_state)


def test_converter_writes_canonical_safetensors_with_provenance(tmp_path, tiny_state, monkeypatch):
    source = tmp_path / "best.ckpt"
    _lightning_checkpoint(source, tiny_state, monkeypatch, tmp_path / "pwned")
    out = tmp_path / "big-lama.safetensors"
    info = convert(str(source), str(out))
    assert info.source_format == "lightning-ckpt"
    with safe_open(out, framework="pt") as f:
        metadata = f.metadata()
        assert set(f.keys()) == set(tiny_state)
    assert metadata["source_sha256"] == file_sha256(str(source))
    assert metadata["source_format"] == "lightning-ckpt" and metadata["format"] == "lama-ffc-canonical/1"
    generator, reloaded = load_generator(out)
    _assert_same_tensors(generator, tiny_state)
    assert "converted from lightning-ckpt" in reloaded.describe()

    with pytest.raises(FileExistsError, match="--force"):
        convert(str(source), str(out))
    with pytest.raises(ValueError, match="is the input file"):
        convert(str(out), str(out), overwrite=True)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        convert(str(source), str(tmp_path / "x.pt"))
    assert convert_main([str(source), str(out), "--force"]) == 0
    assert convert_main([str(tmp_path / "missing.pt"), str(tmp_path / "y.safetensors")]) == 1


def test_converter_runs_as_a_module(tmp_path, tiny_state):
    source = tmp_path / "in.safetensors"
    save_file(_prefixed(tiny_state, "generator.model."), source)
    result = subprocess.run(
        [sys.executable, "-m", "ffc.convert", str(source), str(tmp_path / "out.safetensors")],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "FFC generator (ngf 16, 3 blocks)" in result.stdout


def test_converter_output_folder_and_file_mode(tmp_path, tiny_state, capsys):
    source = tmp_path / "in.safetensors"
    save_file(tiny_state, source)
    assert convert_main([str(source), str(tmp_path / "missing" / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "output folder" in err and "does not exist; create it first" in err and "Traceback" not in err
    old = os.umask(0o022)
    try:
        convert(str(source), str(tmp_path / "out.safetensors"))
    finally:
        os.umask(old)
    assert (tmp_path / "out.safetensors").stat().st_mode & 0o777 == 0o644
