"""Resolution strategies of plain inference."""

from __future__ import annotations

import pytest
import torch

from lama_multiscale_refine.ffc import inpaint
from lama_multiscale_refine.ffc.strategies import STRATEGIES, inpaint_with_strategy


def _case():
    image = torch.rand(1, 3, 100, 140, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 100, 140)
    mask[..., 10:20, 10:30] = 1
    mask[..., 70:90, 100:130] = 0.6  # soft: still a hole at threshold 0
    return image, mask


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_keeps_size_and_known_pixels(small_generator, strategy):
    image, mask = _case()
    out = inpaint_with_strategy(small_generator, image, mask, strategy=strategy, resize_limit=64, crop_margin=16)
    known = (mask == 0).expand_as(image)
    assert out.shape == image.shape and torch.equal(out[known], image[known])
    assert not torch.equal(out[~known], image[~known]) and torch.isfinite(out).all()


def test_original_is_plain_inpaint(small_generator):
    image, mask = _case()
    assert torch.equal(inpaint_with_strategy(small_generator, image, mask), inpaint(small_generator, image, mask))


def test_resize_below_the_limit_is_the_original_pass(small_generator):
    image, mask = _case()
    out = inpaint_with_strategy(small_generator, image, mask, strategy="resize_to_limit", resize_limit=512)
    assert torch.equal(out, inpaint(small_generator, image, mask))


def test_crop_with_whole_image_margin_equals_original(small_generator):
    image, mask = _case()
    out = inpaint_with_strategy(small_generator, image, mask, strategy="crop_around_mask", crop_margin=500)
    assert torch.allclose(out, inpaint(small_generator, image, mask), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"strategy": "tiles"}, "strategy"), ({"resize_limit": 8}, "resize_limit"), ({"crop_margin": -1}, "crop_margin")],
)
def test_bad_options(small_generator, kwargs, message):
    image, mask = _case()
    with pytest.raises(ValueError, match=message):
        inpaint_with_strategy(small_generator, image, mask, **kwargs)
