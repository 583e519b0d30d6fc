"""Usage errors exit with 2 before any model is loaded; --help documents the pairing rule."""

from __future__ import annotations

import pytest
import torch

from lama_multiscale_refine.lama_cli.device import UsageError, resolve_device, resolve_dtype


def test_help_states_the_pairing_rule_and_exit_codes(run_cli):
    result = run_cli("--help")

    assert result.code == 0
    assert "cat.jpg + cat_mask.png" in result.out
    assert "exit codes: 0" in result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--model is required"),
        (["--model", "m.safetensors"], "--output is required"),
        (["--model", "m.safetensors", "-o", "out", "--image", "a.png"], "give --image and --mask, or --input-dir"),
        (["--model", "m.safetensors", "-o", "out", "--image", "a.png", "--mask", "m.png", "--input-dir", "."],
         "either --input-dir or --image/--mask"),
        (["--model", "m.safetensors", "-o", "out", "--input-dir", "no/such/folder"], "not a folder"),
        (["--model", "m.safetensors", "-o", "out", "--input-dir", "."], "no images found"),
        (["--model", "m.safetensors", "-o", "out.bmp", "--image", "a.png", "--mask", "m.png"], "cannot write .bmp"),
        (["--model", "m.safetensors", "-o", "out.png", "--format", "jpg", "--image", "a.png", "--mask", "m.png"],
         "contradicts"),
        (["--threshold", "1.5"], "expected a number in [0.0, 1.0)"),
        (["--n-iters", "0"], "expected an integer >= 1"),
        (["--erode", "x"], "expected an integer"),
        (["--mode", "fast"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(run_cli, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)

    result = run_cli(*argv)

    assert result.code == 2
    assert message in result.err
    assert "usage:" in result.err


@pytest.fixture()
def pair_argv(ws, model_file) -> list:
    """A valid single-pair command line to add one bad option to."""
    ws.image("a.png")
    ws.mask("a_mask.png")
    return ["--model", model_file, "--image", ws.path("a.png"), "--mask", ws.path("a_mask.png"), "-o", ws.path("out")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--px-budget", "100"], "--px-budget: expected an integer >= 256"),
        pytest.param(["--device", "cuda"], "no CUDA device is available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
    ],
)
def test_options_that_cannot_work_here_exit_2(run_cli, pair_argv, ws, extra, message):
    result = run_cli(*pair_argv, *extra)

    assert result.code == 2
    assert message in result.err
    assert not ws.path("out").exists()


def test_device_and_dtype_resolution(caplog):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_dtype("bf16", torch.device("cpu"), device_was_auto=False) == "bf16"
    # MPS has no bf16 path in the core: an automatic choice falls back, an explicit one is refused.
    assert resolve_dtype("bf16", torch.device("mps"), device_was_auto=True) == "fp32"
    assert "bf16 is not supported on mps" in caplog.text
    with pytest.raises(UsageError, match="--dtype bf16 is not supported on mps"):
        resolve_dtype("bf16", torch.device("mps"), device_was_auto=False)
