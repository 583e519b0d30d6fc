"""The masking positional encoding against manga-image-translator's goldens (tests/fixtures/variants)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lama_multiscale_refine.ffc.mpe import MaskPositionalEncoding, mask_positions, sinusoidal_table

VARIANTS = Path(__file__).resolve().parents[1] / "fixtures" / "variants"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(VARIANTS / "lama_mpe_golden.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _encoding_cases(golden: dict) -> list[str]:
    return sorted({k[len("enc_"):].rsplit("_", 2)[0] for k in golden if k.startswith("enc_")})


def test_encoding_is_exact_at_every_resampling_path(golden):
    """256 (identity), 512 (integer area), 600x452 / 389x515 (area), 200x152 (enlarging), 128x600 and
    300x256 (mixed): positions and direction flags equal OpenCV's, pixel for pixel."""
    cases = _encoding_cases(golden)
    assert len(cases) == 7
    for case in cases:
        height, width = map(int, case.split("x"))
        hole = np.unpackbits(golden[f"enc_{case}_mask"])[: height * width].reshape(height, width).astype(bool)
        expected_flags = np.unpackbits(golden[f"enc_{case}_direct"])[: height * width * 4].reshape(height, width, 4)
        position, flags = mask_positions(torch.from_numpy(hole)[None, None], 128)
        assert np.array_equal(position[0].numpy(), golden[f"enc_{case}_rel_pos"]), case
        assert np.array_equal(flags[0].numpy(), expected_flags.astype(bool)), case


@pytest.mark.parametrize("case", ["64x80", "96x72"])
def test_encoding_of_the_generator_cases(golden, case):
    hole = torch.from_numpy(golden[f"{case}_mask"] > 127)[None, None]
    position, flags = mask_positions(hole.float(), 128)
    assert np.array_equal(position[0].numpy(), golden[f"{case}_rel_pos"])
    assert np.array_equal(flags[0].numpy().astype(np.uint8), golden[f"{case}_direct"])
    assert int(position.max()) > 10  # distances grow inside the hole, so the test can fail


def test_batch_and_edge_cases():
    full = torch.ones(1, 1, 40, 48)
    empty = torch.zeros(1, 1, 40, 48)
    box = torch.zeros(1, 1, 40, 48)
    box[..., 10:30, 12:40] = 1
    position, flags = mask_positions(torch.cat([full, empty, box]), 128)
    # No known pixel (the reference skips the growth) and no hole: all zero.
    assert not position[:2].any() and not flags[:2].any()
    single, single_flags = mask_positions(box, 128)
    assert torch.equal(position[2:], single) and torch.equal(flags[2:], single_flags)
    assert not position[2][box[0, 0] == 0].any()  # zero outside the hole
    with pytest.raises(ValueError, match=r"hole: expected \(B, 1, H, W\)"):
        mask_positions(torch.ones(40, 48), 128)


def test_sinusoidal_table_is_the_released_initialisation():
    stored = load_file(VARIANTS / "lama_mpe_tiny.safetensors")["str_state_dict.rel_pos_emb.weight"].float()
    assert stored.shape == (128, 8)
    assert torch.allclose(sinusoidal_table(128, 8), stored, atol=1e-3)  # the fixture keeps it in float16
    table = sinusoidal_table(128, 64)
    assert torch.allclose(table[3, :2], torch.tensor([np.sin(3.0), np.sin(3.0 / 10000 ** (2 / 64))]).float())
    assert torch.allclose(table[3, 32], torch.tensor(np.cos(3.0)).float())


def test_add_to_validates_its_inputs():
    mpe = MaskPositionalEncoding(128, 8)
    local = torch.rand(1, 8, 16, 16)
    with pytest.raises(ValueError, match="last channel must be the binary hole mask"):
        mpe.add_to(local, torch.full((1, 1, 16, 16), 0.5))
    with pytest.raises(ValueError, match=r"do not fit an encoding of 8 channels"):
        mpe.add_to(torch.rand(1, 6, 16, 16), torch.zeros(1, 1, 16, 16))
    hole = torch.zeros(1, 1, 16, 16)
    hole[..., 4:12, 4:12] = 1
    with torch.no_grad():
        mpe.alpha5.fill_(1.0)
        out = mpe.add_to(local, hole)
    assert out is not local
    known = hole[0, 0] == 0
    # Known pixels have position 0 and no flags: they get table[0] * alpha5 (cosines of 0 = 1).
    expected = local + sinusoidal_table(128, 8)[0][None, :, None, None]
    assert torch.equal(out[..., known], expected[..., known])
    assert not torch.allclose(out[..., ~known], expected[..., ~known])
