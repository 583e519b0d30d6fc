"""The end-to-end harness itself, without ComfyUI: which flags it passes to which ComfyUI version."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.comfyui_server import ComfyUIServer, ServerLayout

REQUIRED = ("--cpu", "--listen", "--port", "--extra-model-paths-config", "--input-directory", "--output-directory")


def _checkout(root: Path, flags: tuple[str, ...]) -> Path:
    """A stand-in checkout whose comfy/cli_args.py defines exactly ``flags``."""
    (root / "comfy").mkdir(parents=True)
    lines = [f'parser.add_argument("{flag}", action="store_true")' for flag in flags]
    (root / "comfy" / "cli_args.py").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(("has_whitelist", "expected"), [
    (True, ["--disable-all-custom-nodes", "--whitelist-custom-nodes", "our_pack"]),  # ComfyUI >= 0.3.44
    (False, []),  # older: --disable-all-custom-nodes alone would disable our pack too
])
def test_custom_nodes_are_only_restricted_where_the_whitelist_exists(tmp_path, has_whitelist, expected):
    flags = REQUIRED + ("--disable-all-custom-nodes",) + (("--whitelist-custom-nodes",) if has_whitelist else ())
    server = ComfyUIServer(_checkout(tmp_path / "ComfyUI", flags), "python3", ServerLayout(tmp_path / "run"), "our_pack",
                           port=8188)
    command = server.command()
    restricting = [arg for arg in command if arg in ("--disable-all-custom-nodes", "--whitelist-custom-nodes", "our_pack")]
    assert restricting == expected
    assert command[:2] == ["python3", "main.py"] and "--cpu" in command
