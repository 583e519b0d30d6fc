"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
import torch

from ffc import LamaConfig, LamaGenerator


def random_generator(ngf: int = 8, n_blocks: int = 2, seed: int = 0) -> LamaGenerator:
    """A small generator with random weights and non-trivial BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    generator = LamaGenerator(LamaConfig(ngf=ngf, n_blocks=n_blocks))
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
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
