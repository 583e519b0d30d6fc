"""``--plan`` / ``--json``: what would run, printed without inpainting; --refine-mode and --max-seconds."""

from __future__ import annotations

import json

import pytest


def _pair(ws, height=64, width=64):
    ws.image("in/photo.png", height=height, width=width)
    ws.mask("in/photo_mask.png", height=height, width=width)
    return ["--image", ws.path("in/photo.png"), "--mask", ws.path("in/photo_mask.png")]


def test_plan_prints_the_plan_and_writes_nothing(ws, model_file, run_cli):
    pair = _pair(ws)
    result = run_cli("--model", model_file, *pair, "--mode", "refine", "--n-iters", "2", "--min-side", "32", "--plan")
    assert result.code == 0, result.err
    first, *notes = result.out.splitlines()
    assert first.startswith("photo.png: 2 scales 32->64, 3 forwards, ~")
    assert not ws.path("out").exists()


def test_plan_json_is_the_plan(ws, model_file, run_cli):
    pair = _pair(ws, 80, 96)
    result = run_cli("--model", model_file, *pair, "--mode", "refine", "--refine-mode", "auto", "--plan", "--json")
    assert result.code == 0, result.err
    (entry,) = json.loads(result.out)
    made = entry["plan"]
    assert entry["name"] == "photo.png" and made["mode"] == "auto" and made["size"] == [80, 96]
    assert made["forwards"] == 1  # an 80 px image: auto says one scale (and why)
    assert any("refinement would change nothing" in n["text"] for n in made["notes"])


def test_plain_plans_too(ws, model_file, run_cli):
    pair = _pair(ws)
    result = run_cli("--model", model_file, *pair, "--strategy", "crop_around_mask", "--crop-margin", "4", "--plan",
                     "--json")
    (entry,) = json.loads(result.out)
    assert entry["plan"]["strategy"] == "crop_around_mask" and entry["plan"]["forwards"] == 1


def test_a_refinement_with_auto_mode_and_a_time_budget_runs(ws, model_file, run_cli):
    pair = _pair(ws, 400, 400)
    result = run_cli("--model", model_file, *pair, "-o", ws.path("out"), "--mode", "refine", "--refine-mode", "auto",
                     "--n-iters", "2", "--max-seconds", "600")
    assert result.code == 0, result.err
    assert ws.read("out/photo.png").shape == (400, 400, 3)


@pytest.mark.parametrize(("argv", "message"), [
    (["--json"], "--json is for --plan"),
    (["--plan"], "--plan needs --model"),
    (["--max-seconds", "0"], "expected a positive, finite number of seconds"),
    (["--max-seconds", "nan"], "expected a positive, finite number of seconds"),
    (["--max-seconds", "-3"], "expected a positive, finite number of seconds"),
])
def test_usage_errors(run_cli, argv, message):
    result = run_cli(*argv)
    assert result.code == 2 and message in result.err
