"""``--ray`` on a real (small, local) Ray cluster: the local run's results, faults, resume.

Needs Ray (``pip install "ray>=2.9"``, in requirements-dev.txt): skipped without it, except in CI.
One two-CPU cluster serves the module; each run joins it as a cluster of another machine would.
The local runs to compare with use one torch thread, as each Ray worker does
(``--ray-cpus-per-worker 1``): torch's CPU kernels round differently with other thread counts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lama_multiscale_refine.lama_cli import main

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
SLOW_REFINE = ["--mode", "refine", "--min-side", "32", "--n-iters", "8"]
NAMES = [f"p{i}" for i in range(6)]
REFINE_H, REFINE_W = 96, 128


def _import_ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: CI installs requirements-dev.txt, which lists it")
        pytest.skip('ray is not installed (pip install "ray>=2.9")')
    if not hasattr(ray, "init"):
        # pytest's importlib mode imports a checkout's root package under its folder's name.
        pytest.skip(f"`import ray` found {ray.__file__}: run the tests from a checkout not named 'ray'")
    return ray


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    """A local two-CPU Ray cluster, its processes ours alone (never `ray stop`, which stops everyone's)."""
    _import_ray()
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        yield head
    finally:
        head.shutdown()


@pytest.fixture()
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def refine_set(tmp_path_factory, fixtures_dir, workspace_class) -> tuple[Path, Path, Path]:
    """(model, inputs, the local run's outputs) of six refinement pairs slow enough to interrupt."""
    ws = workspace_class(tmp_path_factory.mktemp("refine_set"))
    _pairs(ws, NAMES, REFINE_H, REFINE_W)
    model = fixtures_dir / "tiny_lama.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--model", str(model), "--input-dir", str(ws.path("in")), "-o", str(ws.path("local")), "-q",
                     *SLOW_REFINE]) == 0
    finally:
        torch.set_num_threads(threads)
    return model, ws.path("in"), ws.path("local")


def _pairs(ws, names, height=48, width=64) -> None:
    for seed, name in enumerate(names):
        ws.image(f"in/{name}.png", seed=seed, height=height, width=width)
        ws.mask(f"in/{name}_mask.png", height=height, width=width)


def _batch(ws, model_file, output, *extra) -> list:
    return ["--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path(output), *extra]


def _summary_lines(err: str) -> list[str]:
    """The summary without its timing."""
    lines = err[err.index("Summary:"):].splitlines()
    return [lines[0].split(" in ")[0], *lines[1:]]


def _same_files(a: Path, b: Path) -> list[str]:
    """The names in both folders (the same, temporary files included), each file byte for byte the same."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


def _cli(*argv) -> list[str]:
    # `python -m lama_multiscale_refine.lama_cli`, on this checkout (not what pip install -e points to)
    return [sys.executable, str(REPO / "tests" / "pack_import.py"), "lama_cli", *map(str, argv)]


def _wait_for(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _busy_worker_pids(cluster) -> list[int]:
    """The LamaWorker processes of this cluster (children of its raylet) processing a file now:
    Ray titles them ``ray::LamaWorker.process`` (workers of earlier runs may still be exiting)."""
    from ray._private import ray_constants

    raylet = cluster.head_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if command.startswith(b"ray::LamaWorker.process") and parent == raylet:
            pids.append(int(entry.name))
    return pids


def test_plain_batch_matches_the_local_run_file_for_file(ws, model_file, run_cli, cluster, one_thread):
    _pairs(ws, ["a", "b", "c"])
    ws.path("in/broken.png").write_bytes(b"not an image")
    ws.mask("in/broken_mask.png")
    ws.image("in/lonely.png")  # no mask
    ws.mask("in/orphan_mask.png")

    local = run_cli(*_batch(ws, model_file, "local"))
    on_ray = run_cli(*_batch(ws, model_file, "ray", "--ray", cluster.address))

    assert local.code == on_ray.code == 1, on_ray.err
    assert _same_files(ws.path("local"), ws.path("ray")) == ["a.png", "b.png", "c.png"]
    assert _summary_lines(on_ray.err) == [line.replace("/local/", "/ray/") for line in _summary_lines(local.err)]
    assert "Summary: 3 done, 1 skipped, 2 failed" in on_ray.err
    assert f"plain on Ray ({cluster.address}): 2 workers on cpu (fp32), 1 CPU and 0 GPU each" in on_ray.err


def _refine_batch(refine_set, output: Path, *extra) -> list:
    model, inputs, _ = refine_set
    return ["--model", model, "--input-dir", inputs, "-o", output, *SLOW_REFINE, *extra]


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_sigterm_on_a_local_instance_exits_143_and_a_rerun_completes_identically(tmp_path, refine_set, run_cli,
                                                                                 cluster, one_thread):
    # A new local instance (--ray alone) in its own process: it leaves process-wide Ray state behind
    # that a later join from the same process would trip on. ray.init also installs a SIGTERM
    # handler of its own (sys.exit) and turns exceptions from handlers into KeyboardInterrupt.
    out = tmp_path / "ray"
    with subprocess.Popen(_cli(*_refine_batch(refine_set, out, "--ray")), cwd=REPO, stderr=subprocess.PIPE,
                          text=True) as run:
        _wait_for(lambda: _outputs(out) or run.poll() is not None, "the first output")
        run.send_signal(signal.SIGTERM)
        err = run.communicate(timeout=120)[1]
    written = _outputs(out)
    rerun = run_cli(*_refine_batch(refine_set, out, "--ray", cluster.address))
    finished = run_cli(*_refine_batch(refine_set, out, "--ray"))

    assert run.returncode == 143, err
    assert "refine on Ray (a local instance): 2 workers on cpu (fp32)" in err
    assert "Terminated (SIGTERM) after " in err and "Written outputs are complete" in err
    assert 1 <= len(written) < len(NAMES)  # complete images only: a temporary file would be listed too
    assert rerun.code == finished.code == 0, rerun.err
    assert f"Summary: {len(NAMES) - len(written)} done, {len(written)} skipped, 0 failed" in rerun.err
    assert f"{written[0]}: output exists" in rerun.err
    assert _same_files(refine_set[2], out) == [f"{n}.png" for n in NAMES]
    assert f"Summary: 0 done, {len(NAMES)} skipped, 0 failed" in finished.err and "on Ray" not in finished.err


def test_a_killed_worker_loses_nothing_and_the_batch_completes(tmp_path, refine_set, cluster):
    out = tmp_path / "ray"
    with subprocess.Popen(_cli(*_refine_batch(refine_set, out, "--ray", cluster.address)), cwd=REPO,
                          stderr=subprocess.PIPE, text=True) as run:
        _wait_for(lambda: _outputs(out) or run.poll() is not None, "the first output")
        victims: list[int] = []
        _wait_for(lambda: victims.extend(_busy_worker_pids(cluster)) or victims or run.poll() is not None,
                  "a worker processing a file")
        done_at_kill = len(_outputs(out))
        assert victims, "the batch ended before a worker could be killed"
        os.kill(victims[0], signal.SIGKILL)
        err = run.communicate(timeout=300)[1]

    assert 1 <= done_at_kill < len(NAMES), "the batch must still be running when its worker is killed"
    assert run.returncode == 0, err
    assert "died and was restarted" in err and f"Summary: {len(NAMES)} done, 0 skipped, 0 failed" in err
    assert _same_files(refine_set[2], out) == [f"{n}.png" for n in NAMES]  # no temporary file left either


def test_a_second_run_into_the_same_folder_skips_what_the_first_wrote(tmp_path, refine_set, cluster):
    out = tmp_path / "ray"
    command = _cli(*_refine_batch(refine_set, out, "--ray", cluster.address, "--ray-workers", "1"))

    with subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True) as first:
        _wait_for(lambda: _outputs(out) or first.poll() is not None, "the first run's first output")
        second = subprocess.run(command, cwd=REPO, stderr=subprocess.PIPE, text=True, timeout=300)
        first_err = first.communicate(timeout=300)[1]

    assert first.returncode == second.returncode == 0, first_err + second.stderr
    assert _same_files(refine_set[2], out) == [f"{n}.png" for n in NAMES]  # complete, identical, no temporaries
    assert "p0.png: output exists" in second.stderr
    for err in (first_err, second.stderr):
        done, skipped = (int(err.split(f" {word}")[0].split()[-1]) for word in ("done,", "skipped,"))
        assert done + skipped == len(NAMES) and "0 failed" in err


def test_a_model_the_workers_cannot_load_fails_the_run_like_locally(ws, run_cli, cluster):
    _pairs(ws, ["a"])
    bad = ws.path("bad.safetensors")
    bad.write_bytes(b"not a model")

    local = run_cli("--model", bad, "--input-dir", ws.path("in"), "-o", ws.path("local"))
    on_ray = run_cli("--model", bad, "--input-dir", ws.path("in"), "-o", ws.path("ray"), "--ray", cluster.address)

    assert local.code == on_ray.code == 1
    message = local.err.split("error: ", 1)[1].splitlines()[0]
    assert f"error: {message} (Ray worker on {socket.gethostname()})" in on_ray.err
    assert _outputs(ws.path("ray")) == []


def test_a_worker_larger_than_every_node_is_refused(ws, model_file, run_cli, cluster):
    _pairs(ws, ["a"])

    result = run_cli(*_batch(ws, model_file, "out", "--ray", cluster.address, "--ray-cpus-per-worker", "64"))

    assert result.code == 1
    assert "no node of the Ray cluster has 64 CPUs for one worker" in result.err


def test_an_unreachable_address_fails_fast_naming_it(ws, model_file, run_cli):
    _import_ray()
    _pairs(ws, ["a"])
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"

    started = time.monotonic()
    result = run_cli(*_batch(ws, model_file, "out", "--ray", address, "--ray-timeout", "5"))

    assert result.code == 1 and time.monotonic() - started < 30
    assert f"--ray {address}: cannot reach a Ray cluster at {address} within 5 s" in result.err


def test_an_address_that_answers_but_is_not_ray_fails_within_the_timeout(ws, model_file):
    _import_ray()
    _pairs(ws, ["a"])
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        # A subprocess: the abandoned connection attempt stays behind in that process until it exits.
        result = subprocess.run(_cli(*_batch(ws, model_file, "out", "--ray", address, "--ray-timeout", "2")),
                                cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 60
    assert f"--ray {address}: something answers there but no Ray cluster connected within 2 s" in result.stderr


def test_a_malformed_address_is_a_usage_error(ws, model_file, run_cli):
    _import_ray()
    _pairs(ws, ["a"])

    result = run_cli(*_batch(ws, model_file, "out", "--ray", "head-without-port"))

    assert result.code == 2 and "--ray head-without-port: expected HOST:PORT" in result.err
