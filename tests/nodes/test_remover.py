"""LamaFFC_RemoveObject: the chain it stands for, auto's choice, mask options, names, messages, cancel."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

stubs_module = sys.modules["lama_node_test_stubs"]

H, W = 48, 64
DEFAULTS = {"method": "auto", "invert_mask": False, "mask_threshold": 0.5, "mask_grow": 7, "mask_feather": 0.0,
            "max_seconds": 0.0, "dtype": "auto"}


def _remove(call, image, mask, model_name="lama/tiny.safetensors", **options):
    return call("LamaFFC_RemoveObject", model_name=model_name, image=image, mask=mask, **{**DEFAULTS, **options})


def _square(batch: int, height: int, width: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(batch, height, width)
    mask[:, top : top + size, left : left + size] = 1
    return mask


def _chain(call, lama, image, mask, operation="dilate", kernel_size=15, feather=0.0, refine=False):
    """Load LaMa Model -> LaMa Mask Preprocess -> LaMa Inpaint / Refine at their defaults, the mask dilated (Remove Object's default)."""
    (prepared,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation=operation, kernel_size=kernel_size,
                       feather=feather)
    if not refine:
        return call("LamaFFC_Inpaint", model=lama, image=image, mask=prepared, strategy="original", resize_limit=1280,
                    crop_margin=128, mask_threshold=0.0)[0], prepared
    spec = sys.modules["lama_ffc_pack_under_test.nodes.refinement"].SPEC
    widgets = {p.name: p.default for p in spec.inputs if p.default is not None}
    return call("LamaFFC_Refine", model=lama, image=image, mask=prepared, **widgets)[0], prepared


def test_defaults_are_mask_preprocess_dilating_then_inpaint(call, comfy, lama, random_image):
    image, mask = random_image(1, H, W), _square(1, H, W, 8, 10, 30)
    out, used = _remove(call, image, mask)
    expected, prepared = _chain(call, lama, image, mask)
    assert torch.equal(out, expected) and torch.equal(used, prepared)
    assert float(used.sum()) > float(mask.sum())  # the default grows the hole (dilate, 15 px disk)
    keep = (used == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep]) and not torch.equal(out, image)
    assert "auto: plain LaMa at full resolution; refining would not help here" in comfy.node_text
    assert "plan: original: 64x48, 1 forwards" in comfy.node_text
    assert "lama/tiny.safetensors (fp32): FFC generator" in comfy.node_text  # what was loaded, on the node


def test_auto_refines_where_several_scales_help(call, comfy, lama, pack_module, monkeypatch, random_image):
    """The plan Remove Object executes is the one LaMa Multiscale Refine makes with its defaults (whose
    execution tests/nodes/test_refine.py covers); 15 iterations at 416 px are not run here."""
    refinement = pack_module("nodes.refinement")
    seen = []

    def spy(lama, inputs, settings, made):
        seen.append((inputs, settings, made))
        return inputs.image, inputs.hole[:, 0]

    monkeypatch.setattr(refinement, "refine_with_plan", spy)
    image, mask = random_image(1, 400, 416), _square(1, 400, 416, 100, 100, 220)
    _, used = _remove(call, image, mask)
    ((inputs, settings, made),) = seen
    (prepared,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="dilate", kernel_size=15, feather=0.0)
    assert torch.equal(used, prepared) and torch.equal(inputs.hole[:, 0], prepared)
    widgets = {p.name: p.default for p in refinement.SPEC.inputs if p.default is not None}
    expected = refinement.node_settings(**{k: widgets[k] for k in ("mode", "max_seconds")}, precision="fp32",
                                        **{k: widgets[k] for k in ("n_iters", "lr", "min_side", "max_scales",
                                                                   "px_budget", "crop_to_mask", "crop_margin",
                                                                   "early_stop_tol")})
    assert settings == expected and settings.mode == "auto"
    assert made.to_dict() == refinement.make_plan(lama, inputs, expected, show=False).to_dict()
    assert made.forwards == 1 + 15
    text = "\n".join(t for _, t in comfy.texts)
    assert "auto: multiscale refinement" in text and "plan: 2 scales 208->416" in text


def test_plain_and_refine_are_forced_by_method(call, comfy, lama, random_image):
    image, mask = random_image(1, H, W), _square(1, H, W, 8, 10, 30)
    plain, _ = _remove(call, image, mask, method="plain")
    assert torch.equal(plain, _chain(call, lama, image, mask)[0])
    assert any("method plain: LaMa at full resolution, no refinement" in t for _, t in comfy.texts)
    refined, _ = _remove(call, image, mask, method="refine")  # 1 scale at this size: one forward
    assert torch.equal(refined, _chain(call, lama, image, mask, refine=True)[0])


def test_mask_options(call, comfy, lama, random_image):
    image, mask = random_image(1, H, W), _square(1, H, W, 10, 12, 20)
    _, grown = _remove(call, image, mask, mask_grow=3)
    (dilated,) = call("LamaFFC_PrepareMask", mask=mask, threshold=0.5, operation="dilate", kernel_size=7, feather=0.0)
    assert torch.equal(grown, dilated)
    _, kept = _remove(call, image, mask * 0.4, mask_grow=0, mask_threshold=0.3)
    assert torch.equal(kept, mask)
    _, inverted = _remove(call, image, 1 - mask, mask_grow=0, invert_mask=True)
    assert torch.equal(inverted, mask)
    out, soft = _remove(call, image, mask, mask_grow=0, mask_feather=3.0)
    assert float(soft.max()) == 1 and 0 < float(soft[(soft > 0) & (soft < 1)].numel())
    keep = (soft == 0)[..., None].expand_as(image)
    assert torch.equal(out[keep], image[keep])


def test_feather_warning_reaches_the_node(call, comfy, lama, random_image):
    image, mask = random_image(1, H, W), _square(1, H, W, 20, 20, 6)
    _remove(call, image, mask, mask_grow=0, mask_feather=8.0)
    assert "warning: feather 8 px is at least half the size of the smallest hole (6x6 px)" in comfy.node_text


def test_an_empty_mask_returns_the_image(call, comfy, lama, random_image):
    image = random_image(1, H, W)
    out, used = _remove(call, image, _square(1, H, W, 8, 8, 10) * 0.4)  # below the default threshold 0.5
    assert torch.equal(out, image) and float(used.sum()) == 0
    assert "warning: LaMa Remove Object: the mask is empty" in comfy.node_text


def test_legacy_and_foreign_model_names(pack, comfy, call, random_image):
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_RemoveObject"]
    validate = stubs_module.validate_like_comfyui
    assert validate(cls, {"model_name": "lama", **DEFAULTS}) == []  # -> inpaint/sub/big-lama.pt
    assert validate(cls, {"model_name": "big-lama.pt", **DEFAULTS}) == []
    (error,) = validate(cls, {"model_name": "zits", **DEFAULTS})
    assert "'zits' is IOPaint's zits model, not LaMa" in error
    image, mask = random_image(1, H, W), _square(1, H, W, 8, 10, 30)
    _remove(call, image, mask, model_name="lama")
    assert "lama (fp32): FFC generator" in comfy.node_text and "torchscript file" in comfy.node_text
    with pytest.raises(FileNotFoundError, match="'lama/none.pt' not found"):
        _remove(call, image, mask, model_name="lama/none.pt")


def test_unused_tensors_are_named_on_the_node(call, comfy, models_dir, tiny_state, random_image, tmp_path):
    from safetensors.torch import save_file

    comfy.folder_names_and_paths["lama"] = ([str(tmp_path)], {".safetensors"})
    save_file({**tiny_state, "extra.head.weight": torch.zeros(2, 2)}, tmp_path / "extra.safetensors")
    call("LamaFFC_LoadModel", model_name="lama/extra.safetensors", dtype="fp32")
    assert ("warning: lama/extra.safetensors: 1 tensor(s) in the file are not part of any model the loader knows "
            "and were not used: extra.head.weight") in comfy.node_text
    image, mask = random_image(1, H, W), _square(1, H, W, 8, 10, 30)
    comfy.texts.clear()
    _remove(call, image, mask, model_name="lama/extra.safetensors")
    assert "were not used: extra.head.weight" in "\n".join(t for _, t in comfy.texts)


def _not_refinable(lama):
    return dataclasses.replace(lama, info=dataclasses.replace(lama.info, refinable=False, variant="Some-Variant"))


def test_a_variant_that_cannot_be_refined_says_so(call, comfy, lama, pack_module, monkeypatch, random_image):
    frozen = _not_refinable(lama)
    monkeypatch.setattr(pack_module("nodes.loader").CACHE, "get_or_load", lambda *args: frozen)
    image, mask = random_image(1, 400, 416), _square(1, 400, 416, 100, 100, 220)
    out, _ = _remove(call, image, mask, method="refine")
    assert ("warning: lama/tiny.safetensors: Some-Variant cannot be refined (its network does not split into the "
            "front and rear that multiscale refinement optimises between); inpainting without refinement") in comfy.node_text
    assert comfy.progress[-1].total == 1  # one plain forward, no refinement
    (loaded,) = call("LamaFFC_LoadModel", model_name="lama/tiny.safetensors", dtype="fp32")
    assert "LaMa Multiscale Refine refuses it" in comfy.node_text
    with pytest.raises(ValueError, match="model: lama/tiny.safetensors: Some-Variant cannot be refined"):
        call("LamaFFC_Refine", model=loaded, image=image, mask=mask, n_iters=2, lr=0.002, min_side=16, max_scales=2,
             px_budget=1_800_000, crop_to_mask=False, crop_margin=128, early_stop_tol=0.0, precision="auto",
             mask_threshold=0.0, mode="paper", max_seconds=0.0)


def test_cancel_stops_it(call, comfy, lama, random_image):
    comfy.interrupt_after = 1
    with pytest.raises(stubs_module.StubInterrupt):
        _remove(call, random_image(1, H, W), _square(1, H, W, 8, 10, 30))


@pytest.mark.parametrize(("options", "text"), [
    ({"method": "best"}, "method: expected one of ('auto', 'plain', 'refine')"),
    ({"mask_grow": 300}, "mask_grow: expected an integer from -255 to 255 px"),
    ({"max_seconds": -1.0}, "max_seconds: expected None"),
])
def test_bad_inputs_are_named(call, comfy, lama, random_image, options, text):
    with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(")", r"\)")):
        _remove(call, random_image(1, H, W), _square(1, H, W, 8, 10, 30), **options)


def test_fingerprint_follows_the_file_the_name_resolves_to(pack, comfy):
    cls = pack.NODE_CLASS_MAPPINGS["LamaFFC_RemoveObject"]
    legacy = cls.IS_CHANGED(model_name="lama", dtype="auto", image=None, mask=None)
    assert legacy == pack.NODE_CLASS_MAPPINGS["LamaFFC_LoadModel"].IS_CHANGED(model_name="inpaint/sub/big-lama.pt",
                                                                             dtype="auto")
    assert cls.IS_CHANGED(model_name="zits", dtype="auto") == ("zits", "auto")


def test_a_smaller_mask_is_grown_in_image_pixels(call, comfy, lama, random_image):
    image, mask = random_image(1, H, W), _square(1, H // 2, W // 2, 5, 6, 10)
    _, used = _remove(call, image, mask, mask_grow=2)
    (dilated,) = call("LamaFFC_PrepareMask", mask=_square(1, H, W, 10, 12, 20), threshold=0.5, operation="dilate",
                      kernel_size=5, feather=0.0)
    assert torch.equal(used, dilated)
    assert "warning: mask is 32x24 but the image is 64x48; resizing the mask (nearest)" in comfy.node_text
