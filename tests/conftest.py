"""Shared fixtures: the official golden fixtures (../shared/fixtures) and small generators."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pack_import import import_pack

import_pack()  # this checkout as lama_multiscale_refine, before any test imports it

from lama_multiscale_refine.ffc import LamaGenerator
from lama_multiscale_refine.ffc.checkpoint import generator_from_state_dict
from lama_testing import random_generator, use_fixed_time_rates

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("LAMA_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _require_fixtures() -> Path:
    if not (FIXTURES / "tiny_lama.safetensors").is_file():
        message = f"golden fixtures not found at {FIXTURES} (set LAMA_FIXTURES)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the fidelity tests")
        pytest.skip(message)
    return FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require_fixtures()


@pytest.fixture(scope="session")
def tolerances(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "tolerances.json").read_text())["recommended"]


@pytest.fixture(scope="session")
def tiny_state(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(fixtures_dir / "tiny_lama.safetensors")


@pytest.fixture()
def tiny_generator(tiny_state) -> LamaGenerator:
    """The official tiny test generator (ngf 16, 3 blocks), float32, eval mode, fresh per test."""
    return generator_from_state_dict(tiny_state)


@pytest.fixture(scope="session")
def load_case(fixtures_dir: Path):
    """``load_case("plain_256")`` -> dict of numpy arrays, with ``params`` parsed."""

    def load(name: str) -> dict:
        with np.load(fixtures_dir / "cases" / f"{name}.npz", allow_pickle=False) as z:
            case = {k: z[k] for k in z.files}
        case["params"] = json.loads(str(case.pop("params_json")))
        return case

    return load


@pytest.fixture()
def small_generator() -> LamaGenerator:
    """A random-weight generator (ngf 8, 2 blocks): fast, for behaviour tests."""
    return random_generator()


@pytest.fixture(autouse=True)
def fixed_time_rates(request, monkeypatch):
    """Plans use fixed time rates (lama_testing.FIXED_RATES) unless a test is marked measured_timing."""
    from lama_multiscale_refine.refine import timing

    if request.node.get_closest_marker("measured_timing"):
        monkeypatch.setattr(timing, "_RATES", {})
    else:
        use_fixed_time_rates(monkeypatch, timing)
