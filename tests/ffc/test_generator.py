"""Generator structure: canonical keys/shapes, config inference, front/rear split, dtypes."""

from __future__ import annotations

import json

import pytest
import torch

from lama_multiscale_refine.ffc import BIG_LAMA, LAMA_FOURIER, LamaConfig, LamaGenerator, config_from_state_dict
from lama_multiscale_refine.ffc import layers
from lama_testing import random_generator


def _key_list(generator: LamaGenerator) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in generator.state_dict().items()]


@pytest.mark.parametrize(
    ("config", "fixture", "entries", "parameters"),
    [(BIG_LAMA, "biglama_keys.json", 989, 50_975_875), (LAMA_FOURIER, "lama_fourier_keys.json", 521, 27_048_835)],
)
def test_state_dict_layout_matches_official(fixtures_dir, config, fixture, entries, parameters):
    generator = LamaGenerator(config)
    expected = json.loads((fixtures_dir / fixture).read_text())
    assert _key_list(generator) == expected  # keys, order, shapes and dtypes
    assert len(expected) == entries
    assert generator.num_parameters() == parameters
    assert config_from_state_dict(generator.state_dict()) == config


def test_tiny_fixture_loads_strictly_with_inferred_config(fixtures_dir, tiny_state):
    spec = json.loads((fixtures_dir / "tiny_lama_config.json").read_text())
    kwargs = spec["generator_kwargs"]
    config = config_from_state_dict(tiny_state)
    assert (config.ngf, config.n_blocks, config.n_downsampling) == (kwargs["ngf"], kwargs["n_blocks"], 3)
    assert config.bottleneck_global == spec["derived"]["bottleneck_global_channels"] == 96
    assert config.first_block_index == spec["derived"]["first_resblock_index"]
    generator = LamaGenerator(config)
    assert generator.load_state_dict(tiny_state, strict=True)
    assert generator.num_parameters() == spec["n_parameters"]
    names = {str(i): type(m).__name__ for i, m in enumerate(generator.model)}
    official = {"FFC_BN_ACT": "FFCBnAct", "FFCResnetBlock": "FFCResBlock", "ConcatTupleLayer": "ConcatTuple"}
    assert names == {i: official.get(n, n) for i, n in spec["module_index"].items()}


@pytest.mark.parametrize(("ngf", "n_blocks"), [(8, 1), (8, 2), (24, 4)])
def test_config_round_trip(ngf, n_blocks):
    config = LamaConfig(ngf=ngf, n_blocks=n_blocks)
    assert config_from_state_dict(LamaGenerator(config).state_dict()) == config


def test_front_rear_split_composes_to_forward(tiny_generator):
    x = torch.rand(2, 4, 64, 48)
    with torch.no_grad():
        local, global_ = tiny_generator.front(x)
        assert local.shape == (2, 32, 8, 6) and global_.shape == (2, 96, 8, 6)
        assert torch.equal(tiny_generator.rear((local, global_)), tiny_generator(x))
    assert tiny_generator.config.first_block_index == 5


def test_rear_is_differentiable_in_features_only(tiny_generator):
    with torch.no_grad():
        local, global_ = tiny_generator.front(torch.rand(1, 4, 32, 32))
    local.requires_grad_(True)
    global_.requires_grad_(True)
    tiny_generator.rear((local, global_)).mean().backward()
    assert local.grad is not None and global_.grad is not None
    assert all(p.grad is None for p in tiny_generator.parameters())


@pytest.mark.parametrize(
    ("shape", "message"),
    [((1, 3, 32, 32), r"expected \(B, 4, H, W\)"), ((1, 4, 30, 32), "multiples of 8"), ((4, 32, 32), "expected")],
)
def test_forward_rejects_bad_shapes(small_generator, shape, message):
    with pytest.raises(ValueError, match=message):
        small_generator(torch.rand(shape))


def test_bfloat16_weights_keep_fft_in_float32(small_generator):
    x = torch.rand(1, 4, 40, 56)  # FFT sizes 5x7: not powers of two
    with torch.no_grad():
        reference = small_generator(x)
        low = small_generator.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low.float()).all()
    assert (low.float() - reference).abs().max() < 0.1  # bf16 has ~3 significant digits


def test_fft_falls_back_to_cpu_when_device_lacks_it(monkeypatch, small_generator):
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        reference = small_generator(x)
        monkeypatch.setattr(layers, "_device_has_fft", lambda device_type: False)
        assert torch.equal(small_generator(x), reference)


def test_random_generator_is_deterministic():
    a, b = random_generator(seed=3), random_generator(seed=3)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
