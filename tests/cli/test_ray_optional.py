"""Ray is optional: nothing but ``--ray`` imports it, and ``--ray`` without it says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ray_missing_names_the_extra_and_creates_nothing(ws, model_file, run_cli, monkeypatch):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("out"), "--ray")

    assert result.code == 2
    assert '--ray needs Ray, an optional extra of this pack: pip install "ray>=2.9"' in result.err
    assert not ws.path("out").exists()


def test_ray_options_need_ray(ws, model_file, run_cli):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("out"), "--ray-workers", "2")

    assert result.code == 2 and "--ray-workers needs --ray" in result.err
    assert not ws.path("out").exists()


def test_the_core_the_nodes_and_the_command_line_never_import_ray():
    # A finder that records every attempt to import ray, so an import hidden in a try/except counts
    # too; then everything the pack has is imported: the core, every node module, the command line
    # including its Ray runner (whose Ray import waits for --ray).
    script = textwrap.dedent("""
        import sys
        attempts = []

        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    attempts.append(name)
                return None

        sys.meta_path.insert(0, Watch())
        from pack_import import import_pack, import_pack_module
        pack = import_pack()
        import lama_multiscale_refine.ffc, lama_multiscale_refine.refine, lama_multiscale_refine.lama_cli.ray_runner
        catalog = import_pack_module("nodes.catalog")
        assert catalog.node_class_mappings(), "no nodes imported"
        code = pack.lama_cli.main(["--help"])
        assert code == 0, code
        print("ray imports:", attempts)
        assert not attempts and "ray" not in sys.modules, attempts
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ray imports: []" in result.stdout


def test_plan_is_not_run_on_ray(ws, model_file, run_cli):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "--plan", "--ray")

    assert result.code == 2 and "--plan prints the plans on this machine; drop --ray" in result.err
    assert result.out == ""
