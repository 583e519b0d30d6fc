"""refine.speed: the speed options' validation, the backend flags they set and restore, their wiring.

No GPU here: on CPU these tests can only check that the CUDA flags are set and restored exactly
(the flags exist on CPU builds too), that a CPU run leaves them alone and ignores the CUDA-only
options, and that channels_last and compile reach the model. What TF32 or cuDNN benchmark do to
the numbers is measured on a GPU by benchmarks/device_suite.py.
"""

from __future__ import annotations

import pytest
import torch

import lama_multiscale_refine.refine.api as api
import lama_multiscale_refine.refine.speed as speed
from lama_multiscale_refine.ffc import fuse_for_inference
from lama_testing import random_generator
from lama_multiscale_refine.refine import RefineSettings, ScaleOptions, SpeedOptions, plan, refine, refine_pyramid
from lama_multiscale_refine.refine.speed import CompiledRear, backend_flags, compile_rear, validate_speed

FAST = dict(n_iters=3, min_side=32, checkpointing="off")
CUDA = torch.device("cuda")  # a device object only: nothing runs on it


def _image_and_hole():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 80, generator=g)
    mask = torch.zeros(1, 1, 64, 80)
    mask[..., 8:56, 10:70] = 1  # large enough to survive the 15 px erosion at the coarse scale
    return image, mask


@pytest.fixture()
def saved_flags():
    """Put the process's backend flags back whatever a test does."""
    flags = speed._read_flags()
    yield flags
    speed._write_flags(flags)


def _tf32_now() -> tuple:
    flags = speed._read_flags()
    return flags[1:]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SpeedOptions(tf32="yes"), "speed.tf32"),
        (SpeedOptions(cudnn_benchmark=1), "speed.cudnn_benchmark"),
        (SpeedOptions(channels_last="nhwc"), "speed.channels_last"),
        (SpeedOptions(compile="max-autotune"), "speed.compile"),
        ("fast", "speed: expected a refine.SpeedOptions"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        validate_speed(options)
    image, mask = _image_and_hole()
    with pytest.raises(ValueError, match=message):
        refine(random_generator(), image, mask, RefineSettings(**FAST, speed=options))


def test_defaults_keep_fidelity():
    options = RefineSettings().speed
    assert options == SpeedOptions(cudnn_benchmark=False, tf32=False, channels_last="auto", compile="off")
    assert options.channels_last_for(torch.device("cpu")) and not options.channels_last_for(CUDA)
    assert SpeedOptions(channels_last="on").channels_last_for(CUDA)
    assert not SpeedOptions(channels_last="off").channels_last_for(torch.device("cpu"))


def test_cuda_flags_are_set_for_the_block_and_restored(saved_flags):
    # Start from PyTorch's stock state (cuDNN convolutions may use TF32) plus benchmark on.
    torch.backends.cudnn.benchmark = True
    speed._write_flags(speed._wanted_flags(SpeedOptions(cudnn_benchmark=True, tf32=True)))
    before = speed._read_flags()
    with backend_flags(SpeedOptions(), CUDA):  # defaults: no TF32 anywhere, no autotuning
        assert torch.backends.cudnn.benchmark is False
        assert _tf32_now() == speed._wanted_flags(SpeedOptions())[1:]
    assert speed._read_flags() == before

    with backend_flags(SpeedOptions(cudnn_benchmark=True, tf32=True), CUDA):
        assert torch.backends.cudnn.benchmark is True
        assert _tf32_now() == speed._wanted_flags(SpeedOptions(tf32=True))[1:]
    assert speed._read_flags() == before


def test_cuda_flags_are_restored_after_an_error(saved_flags):
    before = speed._read_flags()
    with pytest.raises(KeyboardInterrupt), backend_flags(SpeedOptions(cudnn_benchmark=not before[0], tf32=True), CUDA):
        assert speed._read_flags() != before
        raise KeyboardInterrupt
    assert speed._read_flags() == before


def test_cpu_runs_leave_the_flags_alone_and_ignore_cuda_options(saved_flags):
    image, mask = _image_and_hole()
    model = random_generator()
    before = speed._read_flags()
    seen = []
    reference, _ = refine(model, image, mask, RefineSettings(**FAST))
    cuda_only = RefineSettings(**FAST, speed=SpeedOptions(cudnn_benchmark=not before[0], tf32=True))
    result, _ = refine(model, image, mask, cuda_only, callback=lambda info: seen.append(speed._read_flags()))
    assert seen and all(flags == before for flags in seen)
    assert speed._read_flags() == before
    assert torch.equal(result, reference)  # ignored: the very same computation
    notes = [note.text for note in plan(model, image, mask, cuda_only).notes]
    assert "speed: cudnn_benchmark, tf32 only act on CUDA; ignored on cpu" in notes
    assert not any(text.startswith("speed:") for text in (n.text for n in plan(model, image, mask, RefineSettings(**FAST)).notes))


def test_channels_last_reaches_the_model_refine_fuses(monkeypatch):
    image, mask = _image_and_hole()
    model = random_generator()
    layouts = []
    real = api._autograd_model

    def spy(*args):
        work_model = real(*args)
        layouts.append(work_model.channels_last)
        return work_model

    monkeypatch.setattr(api, "_autograd_model", spy)
    default, _ = refine(model, image, mask, RefineSettings(**FAST))
    nchw, _ = refine(model, image, mask, RefineSettings(**FAST, speed=SpeedOptions(channels_last="off")))
    assert layouts == [True, False]  # CPU: channels_last by default, off on request
    assert (nchw - default).abs().max() < 1e-5  # same arithmetic, other summation order


def test_compile_wraps_only_the_recorded_rear_calls(monkeypatch):
    compiled_calls = []

    def fake_compile(fn, **kwargs):
        assert kwargs["dynamic"] is False  # static shapes per scale

        def run(*args):
            assert torch.is_grad_enabled()
            compiled_calls.append(args[0][0].shape)
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    image, mask = _image_and_hole()
    model = random_generator()
    reference, _ = refine(model, image, mask, RefineSettings(**FAST))
    result, reports = refine(model, image, mask, RefineSettings(**FAST, speed=SpeedOptions(compile="default")))
    # 2 scales: the coarsest (no gradient) and the last forward of scale 1 stay eager.
    assert reports[0].regions[0].n_scales == 2 and len(compiled_calls) == FAST["n_iters"] - 1
    assert torch.equal(result, reference)
    fused = fuse_for_inference(model)
    assert compile_rear(fused, SpeedOptions()) is fused


def test_compiled_rear_traces_with_dynamo_and_matches_eager():
    """A real torch.compile trace (dynamo, the eager backend: no C++ build, so seconds)."""
    model = fuse_for_inference(random_generator(n_blocks=1))
    image, mask = _image_and_hole()
    options = ScaleOptions(n_iters=3)
    reference, ref_reports = refine_pyramid(model, image, mask, 2, options)
    wrapped = CompiledRear(model, "default", backend="eager")
    assert wrapped.config is model.config and wrapped.body is model.body
    result, reports = refine_pyramid(wrapped, image, mask, 2, options)
    assert torch.allclose(result, reference, atol=1e-5)
    assert reports[1].losses == pytest.approx(ref_reports[1].losses, abs=1e-6)
