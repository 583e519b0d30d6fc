"""Fixtures for the command-line tests: the tiny fixture model in a temporary folder, small images."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_multiscale_refine.lama_cli import main

HEIGHT, WIDTH = 48, 64


class Workspace:
    """Writes small test images under one folder and reads results back as uint8 arrays."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, array: np.ndarray) -> np.ndarray:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        return array

    def image(self, name: str, seed: int = 0, height: int = HEIGHT, width: int = WIDTH, channels: int = 3) -> np.ndarray:
        """A random image (random pixels differ from any prediction)."""
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
        return self.write(name, pixels)

    def mask(self, name: str, height: int = HEIGHT, width: int = WIDTH, value: int = 255) -> np.ndarray:
        """A box hole in the middle, half of each side."""
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = value
        return self.write(name, mask)

    def read(self, name: str | Path) -> np.ndarray:
        with Image.open(self.path(name) if isinstance(name, str) else name) as image:
            return np.asarray(image).copy()


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def workspace_class() -> type[Workspace]:
    """For fixtures wider than one test (``workspace_class(tmp_path_factory.mktemp(...))``)."""
    return Workspace


@pytest.fixture()
def model_file(tmp_path: Path, fixtures_dir: Path) -> Path:
    """The tiny fixture generator, copied so that nothing a test does can touch the shared file."""
    path = tmp_path / "models" / "tiny_lama.safetensors"
    path.parent.mkdir()
    shutil.copyfile(fixtures_dir / "tiny_lama.safetensors", path)
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def run_cli(capsys) -> Callable[..., CliResult]:
    """``run_cli("--image", ...)``: main() in this process, with its exit code and output."""

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
