"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
import torch

from lama_multiscale_refine.ffc import LamaConfig, LamaGenerator


def random_generator(ngf: int = 8, n_blocks: int = 2, seed: int = 0) -> LamaGenerator:
    """A small generator with random but lively weights, eval mode, frozen.

    Follows the init recipe of the golden tiny model (fixtures' tiny_lama_config.json): convs
    N(0, gain * sqrt(2 / fan_in)) with gain 0.5 in the residual blocks, 1.75 for the transposed
    convs and 4 for the output conv, and non-trivial BatchNorm statistics, so the prediction
    varies across the image and the refinement has gradients to follow (PyTorch's default init
    gives an almost constant output).
    """
    torch.manual_seed(seed)
    generator = LamaGenerator(LamaConfig(ngf=ngf, n_blocks=n_blocks))
    first, last = generator.config.first_block_index, generator.config.first_block_index + n_blocks
    with torch.no_grad():
        for name, module in generator.named_modules():
            index = int(name.split(".")[1]) if name.count(".") >= 1 else -1
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                if isinstance(module, torch.nn.ConvTranspose2d):
                    gain, fan_in = 1.75, module.weight.shape[0] * module.weight[0, 0].numel()
                else:
                    gain = 0.5 if first <= index < last else (4.0 if module.out_channels == 3 else 1.0)
                    fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, gain * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.uniform_(-0.05, 0.05)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.75, 1.25)
                module.bias.uniform_(-0.1, 0.1)
    return generator.eval().requires_grad_(False)


def image_from_case(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,3,H,W) float image and (1,1,H,W) float mask in [0,1], as the official loader makes them."""
    image = torch.from_numpy(case["image"]).permute(2, 0, 1)[None].float() / 255
    mask = torch.from_numpy(case["mask"])[None, None].float() / 255
    return image, mask


def hwc(t: torch.Tensor) -> np.ndarray:
    """(1,C,H,W) tensor -> (H,W,C) numpy, to compare with the goldens."""
    return t[0].permute(1, 2, 0).detach().cpu().numpy()


# Time rates tests use instead of measuring (seconds = fixed + per_pixel * pixels): measurements
# vary with the machine's load and would make plans (merged boxes, time budgets) nondeterministic.
# Purely per-pixel, so boxes are merged only where that saves pixels.
FIXED_RATES = {"infer": (0.0, 1e-7), "step": (0.0, 2e-7), "step_checkpointed": (0.0, 3e-7)}


def use_fixed_time_rates(monkeypatch, timing_module) -> None:
    """Make ``timing_module`` (a ``refine.timing``) return :data:`FIXED_RATES`, with an empty cache."""
    monkeypatch.setattr(timing_module, "_RATES", {})
    monkeypatch.setattr(timing_module, "_measure_rate",
                        lambda model, autocast_dtype, operation: timing_module.Rate(*FIXED_RATES[operation]))


def marginal_bytes_per_pixel(run, sizes: tuple[int, int]) -> float:
    """Peak live tensor bytes of ``run(size)`` per extra pixel between two square sizes (what grows
    with the image). Plan outside ``run``: the planner's memory probe runs a profiler of its own."""
    from lama_multiscale_refine.refine.memory import peak_tensor_bytes

    peaks = [peak_tensor_bytes(lambda size=size: run(size)) for size in sizes]
    return (peaks[1] - peaks[0]) / (sizes[1] ** 2 - sizes[0] ** 2)
