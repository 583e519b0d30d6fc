"""The pairing rule and output planning, on empty files (nothing is decoded here)."""

from __future__ import annotations

from pathlib import Path

from lama_multiscale_refine.lama_cli.pairing import pair_folder, plan_outputs


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_images_pair_with_name_mask_any_extension(tmp_path):
    _touch(tmp_path, "b.JPG", "b_mask.png", "a.png", "a_mask.webp", ".hidden.png", "readme.md")

    jobs = pair_folder(tmp_path)

    assert [(j.name, j.mask.name, j.problem) for j in jobs] == [("a.png", "a_mask.webp", None), ("b.JPG", "b_mask.png", None)]


def test_missing_ambiguous_and_orphan_masks(tmp_path):
    _touch(tmp_path, "a.png", "b.png", "b_mask.png", "b_mask.jpg", "c_mask.png")

    jobs = {j.name: j for j in pair_folder(tmp_path)}

    assert jobs["a.png"].problem == "no mask found (expected a_mask.png or another image extension)"
    assert jobs["b.png"].problem == "several masks match, keep one: b_mask.jpg, b_mask.png"
    assert jobs["c_mask.png"].skip == "mask without an image (expected c.<ext>)"
    assert jobs["c_mask.png"].image is None


def test_outputs_never_collide_nor_hit_inputs(tmp_path):
    _touch(tmp_path / "in", "a.png", "a.jpg", "a_mask.png", "b.png", "b_mask.png")
    _touch(tmp_path / "out", "b.png")
    jobs = pair_folder(tmp_path / "in")
    protected = [p for j in jobs for p in (j.image, j.mask)]

    plan_outputs(jobs, tmp_path / "out", "png", overwrite=False, protected=protected)
    outcome = {j.name: (j.output.name, j.problem, j.skip) for j in jobs}

    assert outcome["a.jpg"] == ("a.png", None, None)
    assert outcome["a.png"] == ("a.png", f"{tmp_path / 'out' / 'a.png'} is already the output of a.jpg", None)
    assert outcome["b.png"][2].startswith("output exists")

    same_folder = pair_folder(tmp_path / "in")
    plan_outputs(same_folder, tmp_path / "in", "png", overwrite=True, protected=protected)
    assert {j.name: j.problem for j in same_folder}["a.png"].startswith("refusing to overwrite input file")
