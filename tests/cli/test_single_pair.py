"""One image + one mask, end to end through main() (and once through ``python -m lama_multiscale_refine.lama_cli``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _single(ws, model_file, *extra, image="in/photo.png", mask="in/photo_mask.png", output="out"):
    return ["--model", model_file, "--image", ws.path(image), "--mask", ws.path(mask), "-o", ws.path(output), *extra]


def test_plain_pair_fills_the_hole_and_keeps_every_other_pixel(ws, model_file, run_cli):
    image = ws.image("in/photo.png")
    hole = ws.mask("in/photo_mask.png") > 0

    result = run_cli(*_single(ws, model_file, "--device", "cpu"))

    assert result.code == 0, result.err
    saved = ws.read("out/photo.png")
    assert saved.dtype == np.uint8 and saved.shape == image.shape
    assert np.array_equal(saved[~hole], image[~hole])
    assert not np.array_equal(saved[hole], image[hole])
    assert "[1/1] photo.png: done" in result.err
    assert "Summary: 1 done, 0 skipped, 0 failed" in result.err


def test_rgba_image_keeps_its_alpha_channel(ws, model_file, run_cli):
    rgba = ws.image("in/photo.png", channels=4)
    hole = ws.mask("in/photo_mask.png") > 0

    result = run_cli(*_single(ws, model_file))

    assert result.code == 0, result.err
    saved = ws.read("out/photo.png")
    assert saved.shape == rgba.shape  # still RGBA
    assert np.array_equal(saved[..., 3], rgba[..., 3])
    assert np.array_equal(saved[~hole], rgba[~hole])


def test_output_file_name_sets_the_format(ws, model_file, run_cli):
    image = ws.image("in/photo.png")
    hole = ws.mask("in/photo_mask.png") > 0

    result = run_cli(*_single(ws, model_file, output="result/filled.webp"))

    assert result.code == 0, result.err
    assert not ws.path("result/filled.png").exists()
    assert np.array_equal(ws.read("result/filled.webp")[~hole], image[~hole])  # lossless WebP


def test_refuses_to_overwrite_the_input_image(ws, model_file, run_cli):
    ws.image("in/photo.png")
    ws.mask("in/photo_mask.png")
    before = ws.path("in/photo.png").read_bytes()

    result = run_cli(*_single(ws, model_file, output="in/photo.png"))

    assert result.code == 1
    assert "refusing to overwrite input file" in result.err
    assert ws.path("in/photo.png").read_bytes() == before


def test_existing_output_is_skipped_unless_overwrite(ws, model_file, run_cli):
    ws.image("in/photo.png")
    ws.mask("in/photo_mask.png")
    ws.path("out").mkdir()
    ws.path("out/photo.png").write_bytes(b"previous result")

    skipped = run_cli(*_single(ws, model_file))
    assert skipped.code == 0
    assert "skipped: output exists" in skipped.err and "--overwrite" in skipped.err
    assert ws.path("out/photo.png").read_bytes() == b"previous result"

    replaced = run_cli(*_single(ws, model_file, "--overwrite"))
    assert replaced.code == 0, replaced.err
    assert ws.read("out/photo.png").shape == (48, 64, 3)


def test_refine_mode_reports_every_scale(ws, model_file, run_cli):
    image = ws.image("in/photo.png", height=64, width=64)
    hole = ws.mask("in/photo_mask.png", height=64, width=64) > 0

    result = run_cli(*_single(ws, model_file, "--mode", "refine", "--n-iters", "2", "--min-side", "32"))

    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert "[1/1] photo.png: scale 1/2, iteration 1/2" in lines
    assert any(line.startswith("[1/1] photo.png: scale 2/2, iteration 2/2") for line in lines)
    assert any(line.startswith("[1/1] photo.png: done in") for line in lines)
    saved = ws.read("out/photo.png")
    assert np.array_equal(saved[~hole], image[~hole])
    assert not np.array_equal(saved[hole], image[hole])


def test_quiet_writes_nothing_but_errors(ws, model_file, run_cli):
    ws.image("in/photo.png")
    ws.mask("in/photo_mask.png")

    assert run_cli(*_single(ws, model_file, "--quiet")).err == ""
    failed = run_cli(*_single(ws, model_file, "--quiet", mask="in/missing_mask.png", output="out2"))
    assert failed.code == 1
    assert failed.err.strip() == f"[1/1] photo.png: FAILED: mask {ws.path('in/missing_mask.png')} does not exist"


def test_python_dash_m_entry_point(ws, model_file):
    image = ws.image("in/photo.png")
    hole = ws.mask("in/photo_mask.png") > 0

    # `python -m lama_multiscale_refine.lama_cli`, on this checkout (not what pip install -e points to)
    command = [sys.executable, str(REPO / "tests" / "pack_import.py"), "lama_cli", *map(str, _single(ws, model_file, "--device", "cpu"))]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    assert "Summary: 1 done" in process.stderr
    assert process.stdout == ""
    assert np.array_equal(ws.read("out/photo.png")[~hole], image[~hole])
