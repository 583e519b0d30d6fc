"""A folder of pairs with broken members: the batch goes on, the summary names every problem."""

from __future__ import annotations

import numpy as np

from lama_multiscale_refine.lama_cli import runner


def test_folder_batch_reports_bad_files_and_goes_on(ws, model_file, run_cli):
    good = {name: ws.image(f"in/{name}.png", seed=i) for i, name in enumerate(("a", "b"))}
    hole = ws.mask("in/a_mask.png") > 0
    ws.mask("in/b_mask.png")
    ws.image("in/c.png", seed=3)  # no mask
    ws.image("in/d.png", seed=4)
    ws.mask("in/d_mask.png", height=40)  # wrong size
    ws.path("in/e.png").write_bytes(b"not an image")
    ws.mask("in/e_mask.png")
    ws.mask("in/orphan_mask.png")
    ws.path("in/notes.txt").write_text("ignored: not an image extension")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("out"))

    assert result.code == 1
    assert sorted(p.name for p in ws.path("out").iterdir()) == ["a.png", "b.png"]
    for name, image in good.items():
        assert np.array_equal(ws.read(f"out/{name}.png")[~hole], image[~hole])
    summary = result.err[result.err.index("Summary:"):]
    assert summary.startswith("Summary: 2 done, 1 skipped, 3 failed")
    assert "  c.png: no mask found (expected c_mask.png" in summary
    assert "  d.png: mask d_mask.png is 64x40 px but image d.png is 64x48 px" in summary
    assert "  e.png: image e.png: cannot read" in summary
    assert "  orphan_mask.png: mask without an image" in summary
    assert "per image" in summary and "notes.txt" not in result.err


def test_custom_mask_suffix_and_other_extensions(ws, model_file, run_cli):
    ws.image("in/x.jpg")
    ws.mask("in/x-hole.png")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("out"), "--mask-suffix=-hole")

    assert result.code == 0, result.err
    assert ws.read("out/x.png").shape == (48, 64, 3)


def test_output_folder_must_differ_from_input_folder(ws, model_file, run_cli):
    ws.image("in/a.jpg")
    ws.mask("in/a_mask.png")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("in"))

    assert result.code == 2
    assert "--output must differ from --input-dir" in result.err
    assert sorted(p.name for p in ws.path("in").iterdir()) == ["a.jpg", "a_mask.png"]


def test_ctrl_c_stops_cleanly_with_a_message(ws, model_file, run_cli, monkeypatch):
    for name in ("a", "b", "c"):
        ws.image(f"in/{name}.png")
        ws.mask(f"in/{name}_mask.png")
    real_run_job = runner.run_job
    calls = []

    def interrupted_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_job(*args, **kwargs)

    monkeypatch.setattr(runner, "run_job", interrupted_on_second)
    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("out"))

    assert result.code == 130
    assert "Interrupted after 1 of 3 files (1 done)" in result.err
    assert [p.name for p in ws.path("out").iterdir()] == ["a.png"]  # no partial files
