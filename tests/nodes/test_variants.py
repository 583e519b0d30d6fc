"""The nodes with a LaMa-MPE file: the loader's report, plain inpainting and refinement run through
the fused model the nodes use, with the encoding computed inside it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from lama_multiscale_refine.ffc import inpaint, load_generator

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "variants" / "lama_mpe_tiny.safetensors"
H, W = 48, 64


def _mpe_checkpoint(tmp_path: Path) -> Path:
    nested: dict = {}
    for key, value in load_file(FIXTURE).items():
        top, rest = key.split(".", 1)
        nested.setdefault(top, {})[rest] = value.float() if value.is_floating_point() else value
    path = tmp_path / "inpainting_lama_mpe.ckpt"
    torch.save(nested, path)
    return path


def test_lama_mpe_through_the_nodes(tmp_path, comfy, call, pack_module, random_image, box_mask):
    path = _mpe_checkpoint(tmp_path)
    with torch.inference_mode():
        lama = pack_module("nodes.loader").load_model("lama/inpainting_lama_mpe.ckpt", str(path), "fp32")
    assert (lama.info.variant_id, lama.info.refinable, lama.info.warnings) == ("lama-mpe", True, [])
    assert lama.patcher.model.mpe is not None  # the fused model keeps the encoding

    image, mask = random_image(1, H, W), box_mask(1, H, W)
    out, used = call("LamaFFC_Inpaint", model=lama, image=image, mask=mask, strategy="original", resize_limit=1280,
                     crop_margin=128, mask_threshold=0.0)
    generator, _ = load_generator(path)
    expected = inpaint(generator, image.movedim(-1, 1), mask[:, None]).movedim(1, -1)
    assert (out - expected).abs().max() <= 1e-5

    refined, _ = call("LamaFFC_Refine", model=lama, image=image, mask=mask, n_iters=2, lr=0.002, min_side=16,
                      max_scales=2, px_budget=1_800_000, crop_to_mask=False, crop_margin=128, early_stop_tol=0.0,
                      precision="auto", mask_threshold=0.0, mode="paper")
    hole = mask[..., None].expand_as(image) > 0
    assert torch.equal(refined[~hole], image[~hole])
    assert (refined - out).abs()[hole].max() > 1e-4  # refinement at 2 scales changed the fill
