"""``--info MODEL``: what the loader detects, without running anything."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file


def test_info_describes_a_safetensors_file(model_file, run_cli):
    result = run_cli("--info", model_file)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    for expected in ("format           safetensors", "variant          FFC generator (ngf 16, 3 blocks)",
                     "parameters       700,771", "key prefix       'model.'", "residual blocks  3"):
        assert expected in lines
    assert any(line.startswith("summary") and "3 blocks, 700,771 parameters" in line for line in lines)


def test_info_names_the_prefix_of_a_lightning_style_pickle(model_file, tmp_path, run_cli):
    state = load_file(model_file)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"generator." + k: v for k, v in state.items()}, "epoch": 3}, path)

    result = run_cli("--info", path)

    assert result.code == 0, result.err
    assert "lightning-ckpt" in result.out and "'generator.model.'" in result.out


def test_info_rejects_files_that_are_not_lama(tmp_path, run_cli):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, other)

    for path, reason in ((garbage, "unknown file format"), (other, "not a LaMa generator"),
                         (tmp_path / "missing.safetensors", "cannot open")):
        result = run_cli("--info", path)
        assert result.code == 1
        assert result.out == ""
        assert reason in result.err and str(path) in result.err


def test_a_run_with_a_broken_model_exits_1(ws, tmp_path, run_cli):
    ws.image("photo.png")
    ws.mask("photo_mask.png")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")

    result = run_cli("--model", broken, "--image", ws.path("photo.png"), "--mask", ws.path("photo_mask.png"),
                     "-o", ws.path("out"))

    assert result.code == 1
    assert "error:" in result.err and "broken.safetensors" in result.err
    assert not ws.path("out/photo.png").exists()


def test_info_on_a_torchscript_file_that_plants_code(tmp_path, fixtures_dir, run_cli):
    from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict
    from hostile_files import file_writing_torchscript

    generator = generator_from_state_dict(load_file(fixtures_dir / "tiny_lama.safetensors"))
    planted = tmp_path / "custom_nodes" / "planted.py"
    planted.parent.mkdir()
    path = file_writing_torchscript(tmp_path / "big-lama.pt", generator, planted, b"print('pwned')\n")

    result = run_cli("--info", path)

    assert result.code == 0, result.err
    assert "torchscript" in result.out and "parameters       700,771" in result.out
    assert not planted.exists()


def test_info_names_the_variant_its_parts_and_what_was_not_used(tmp_path, run_cli):
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "variants"
    flat = load_file(fixtures / "lama_mpe_tiny.safetensors")
    nested: dict = {"extra": {"scale": torch.ones(2)}}
    for key, value in flat.items():
        top, rest = key.split(".", 1)
        nested.setdefault(top, {})[rest] = value.float() if value.is_floating_point() else value
    path = tmp_path / "inpainting_lama_mpe.ckpt"
    torch.save(nested, path)

    result = run_cli("--info", path)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    for expected in ("variant          LaMa-MPE (ngf 8, 2 blocks)", "variant id       lama-mpe", "refinable        yes",
                     "mpe prefix       'str_state_dict.'", "unused tensors   1: extra.scale"):
        assert expected in lines, result.out
