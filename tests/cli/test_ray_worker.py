"""The task Ray runs (:class:`lama_cli.ray_runner.LamaWorker`), called directly: no Ray needed.

The worker must do what the local run does, file for file: same bytes, same warnings, same
per-file errors; and it must refuse, with a message, what it cannot do on its node.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from lama_multiscale_refine import lama_cli
from lama_multiscale_refine.lama_cli import ray_runner
from lama_multiscale_refine.lama_cli.inpainter import MaskOptions, PlainOptions
from lama_multiscale_refine.lama_cli.pairing import pair_folder, plan_outputs
from lama_multiscale_refine.lama_cli.progress import DONE, FAILED, SKIPPED
from lama_multiscale_refine.lama_cli.ray_runner import LamaWorker, WorkerSettings
from lama_multiscale_refine.refine import RefineSettings


def _settings(model: Path, output_folder: Path, **changes) -> WorkerSettings:
    settings = WorkerSettings(
        model=model, device="cpu", dtype="fp32", mode="plain", mask_options=MaskOptions(), plain_options=PlainOptions(),
        refine_settings=RefineSettings(), output_folder=output_folder, output_format="png", overwrite=False,
    )
    return replace(settings, **changes)


def _jobs(folder: Path, output_folder: Path, output_format: str = "png"):
    jobs = pair_folder(folder)
    plan_outputs(jobs, output_folder, output_format, overwrite=False, protected=[])
    return jobs


@pytest.mark.parametrize("mode, extra", [("plain", []), ("refine", ["--n-iters", "2", "--min-side", "24"])])
def test_worker_writes_the_local_runs_bytes_and_warnings(ws, model_file, run_cli, mode, extra):
    for seed, name in enumerate(("a", "b")):
        ws.image(f"in/{name}.png", seed=seed, channels=4)  # RGBA into jpg: a warning (alpha dropped)
        ws.mask(f"in/{name}_mask.png")
    local = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("local"), "--format", "jpg",
                    "--mode", mode, "--device", "cpu", *extra)
    assert local.code == 0, local.err
    ws.path("worker").mkdir()
    refine_settings = RefineSettings(n_iters=2, min_side=24) if mode == "refine" else RefineSettings()
    worker = LamaWorker(_settings(model_file, ws.path("worker"), mode=mode, output_format="jpg",
                                  refine_settings=refine_settings))

    outcomes = [worker.process(job)[0] for job in _jobs(ws.path("in"), ws.path("worker"), "jpg")]

    assert [o.status for o in outcomes] == [DONE, DONE]
    for outcome in outcomes:
        name = outcome.name.replace(".png", ".jpg")
        assert ws.path(f"worker/{name}").read_bytes() == ws.path(f"local/{name}").read_bytes()
        assert outcome.warnings and all(f"{outcome.name}: warning: {w}" in local.err for w in outcome.warnings)
    info = worker.info()
    assert (info.error, info.files, info.device, info.dtype) == (None, 2, "cpu", "fp32")
    assert "FFC generator" in info.model and info.peak_rss_bytes > 0


def test_a_corrupt_input_fails_only_that_file(ws, model_file):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")
    ws.path("in/b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ws.mask("in/b_mask.png")
    ws.path("out").mkdir()
    worker = LamaWorker(_settings(model_file, ws.path("out")))

    outcomes = {o.name: o for o in (worker.process(job)[0] for job in _jobs(ws.path("in"), ws.path("out")))}

    assert outcomes["b.png"].status == FAILED and outcomes["b.png"].detail.startswith("image b.png: cannot read")
    assert outcomes["a.png"].status == DONE
    assert sorted(p.name for p in ws.path("out").iterdir()) == ["a.png"]


def test_an_output_written_meanwhile_is_skipped_unless_overwrite(ws, model_file):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")
    ws.path("out").mkdir()
    [job] = _jobs(ws.path("in"), ws.path("out"))
    ws.path("out/a.png").write_bytes(b"written by another run")  # after planning, before the worker

    skipped, _ = LamaWorker(_settings(model_file, ws.path("out"))).process(job)
    done, _ = LamaWorker(_settings(model_file, ws.path("out"), overwrite=True)).process(job)

    assert skipped.status == SKIPPED and "written meanwhile by another run" in skipped.detail
    assert "--overwrite" in skipped.detail
    assert done.status == DONE and ws.read("out/a.png").shape == (48, 64, 3)


def test_a_bad_model_is_reported_not_raised(ws, model_file):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")
    ws.path("out").mkdir()
    bad = ws.path("bad.safetensors")
    bad.write_bytes(b"not a model")

    worker = LamaWorker(_settings(bad, ws.path("out")))
    outcome, _ = worker.process(_jobs(ws.path("in"), ws.path("out"))[0])

    assert worker.info().error is not None and "bad.safetensors" in worker.info().error
    assert outcome.status == FAILED and "the worker has no model" in outcome.detail
    assert list(ws.path("out").iterdir()) == []


@pytest.mark.parametrize("missing", ["model", "output folder"])
def test_paths_a_node_cannot_see_name_the_shared_file_system(ws, model_file, missing):
    ws.path("out").mkdir()
    settings = _settings(ws.path("elsewhere/m.safetensors") if missing == "model" else model_file,
                         ws.path("out") if missing == "model" else ws.path("not/there"))

    error = LamaWorker(settings).info().error

    assert error.startswith(f"{missing} ") and "does not exist on " in error and "shared file system" in error


def test_removes_temporary_files_of_a_dead_worker_on_its_host(ws, model_file):
    ws.path("out").mkdir()
    host = lama_cli.io.temporary_path(ws.path("out/a.png")).name.split(".")[3]
    dead = ws.path(f"out/.a.png.{host}.999999999.lama_cli.tmp")  # no such pid
    dead.write_bytes(b"half an image")

    LamaWorker(_settings(model_file, ws.path("out")))

    assert not dead.exists()


def test_warnings_logged_while_processing_are_returned(ws, model_file, monkeypatch):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")
    ws.path("out").mkdir()
    real_run_job = ray_runner.run_job

    def run_job_that_warns(*args, **kwargs):
        logging.getLogger("refine.api").warning("LaMa refine: lowering the pixel budget")
        return real_run_job(*args, **kwargs)

    monkeypatch.setattr(ray_runner, "run_job", run_job_that_warns)
    worker = LamaWorker(_settings(model_file, ws.path("out")))
    outcome, records = worker.process(_jobs(ws.path("in"), ws.path("out"))[0])

    assert outcome.status == DONE
    assert records == (("refine.api", logging.WARNING, "LaMa refine: lowering the pixel budget"),)


def test_the_workers_get_this_checkouts_code_under_the_package_name():
    # Ray names a shipped folder after its basename; the checkout's folder may have any name.
    root = Path(ray_runner.__file__).resolve().parents[1]

    with ray_runner._shipped_code() as runtime_env:
        [shipped] = map(Path, runtime_env["py_modules"])
        copied = sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*.py"))
        same = all((shipped / name).read_bytes() == (root / name).read_bytes() for name in copied)

    assert shipped.name == "lama_multiscale_refine"
    assert "__init__.py" in copied and "lama_cli/ray_runner.py" in copied and "refine/core.py" in copied
    assert "ffc/generator.py" in copied and not any(name.startswith(("tests/", "benchmarks/")) for name in copied)
    assert same
    assert not shipped.exists()  # only needed until ray.init has uploaded it
