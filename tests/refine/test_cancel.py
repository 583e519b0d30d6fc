"""Cancel is polled between the generator's layers, in forward and backward, and leaves nothing behind."""

from __future__ import annotations

import sys

import pytest
import torch

from lama_multiscale_refine import ffc
from lama_multiscale_refine.ffc import fuse_for_inference, inpaint
from lama_multiscale_refine.refine import RefineCancelled, RefineSettings, refine


def _case():
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 64, 80)
    mask[..., 20:44, 16:60] = 1
    return image, mask


class Polls:
    """A cancel callable that records where it was polled from and answers True at poll ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.where: list[str] = []
        self.stop_at = stop_at

    def __call__(self) -> bool:
        self.where.append(sys._getframe(2).f_code.co_name)  # check() <- before / on_gradient / notify
        return self.stop_at is not None and len(self.where) >= self.stop_at


def _no_hooks_left(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("checkpointing", ["off", "on"])
def test_cancel_inside_backward_then_the_same_result_again(small_generator, checkpointing):
    image, mask = _case()
    model = fuse_for_inference(small_generator).eval()
    settings = RefineSettings(n_iters=3, min_side=32, checkpointing=checkpointing)
    polls = Polls()
    expected, _ = refine(model, image, mask, settings, cancel=polls)
    rear_layers = len(model.body) - model.config.first_block_index
    assert polls.where.count("before") >= rear_layers * 4  # every rear layer of the 4 forwards, and more
    backward = [i for i, name in enumerate(polls.where) if name == "on_gradient"]
    assert backward, "cancel was never polled during backward"

    stop = Polls(stop_at=backward[len(backward) // 2] + 1)
    with pytest.raises(RefineCancelled):
        refine(model, image, mask, settings, cancel=stop)
    assert stop.where[-1] == "on_gradient"  # it stopped in the middle of a backward pass
    assert _no_hooks_left(model)
    again, _ = refine(model, image, mask, settings)
    assert torch.equal(again, expected)


def test_the_hosts_own_exception_propagates(small_generator):
    image, mask = _case()

    class Interrupted(Exception):
        pass

    def cancel() -> bool:
        raise Interrupted("from the host")

    with pytest.raises(Interrupted):
        refine(small_generator, image, mask, RefineSettings(n_iters=2, min_side=32), cancel=cancel)


def test_plain_inference_polls_between_layers(small_generator):
    image, mask = _case()
    polls = Polls()
    expected = inpaint(small_generator, image, mask, cancel=polls)
    assert polls.where.count("before") == len(small_generator.model)
    with pytest.raises(ffc.Cancelled):
        inpaint(small_generator, image, mask, cancel=Polls(stop_at=5))
    assert _no_hooks_left(small_generator)
    assert torch.equal(inpaint(small_generator, image, mask), expected)


def test_cancel_points_without_a_check_change_nothing(small_generator):
    with ffc.cancel_points(small_generator, None):
        assert _no_hooks_left(small_generator)
