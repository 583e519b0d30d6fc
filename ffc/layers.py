"""Fast Fourier Convolution building blocks of the LaMa generator.

Written from the architecture description in ``docs/lama-reference.md`` §2 (Chi et al., "Fast
Fourier Convolution", NeurIPS 2020; Suvorov et al., "Resolution-robust Large Mask Inpainting with
Fourier Convolutions", WACV 2022). Attribute names follow the official module tree so that
``state_dict()`` keys are the canonical LaMa keys; modules that hold no tensors are simply absent.

A feature is a ``(local, global)`` tuple; a missing part is ``None`` (the official code uses the
integer 0 for it).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "FeatureTuple",
    "spectral_conv",
    "FourierUnit",
    "SpectralTransform",
    "FFC",
    "FFCBnAct",
    "FFCResBlock",
    "ConcatTuple",
]

log = logging.getLogger(__name__)

FeatureTuple = tuple[Tensor, Tensor | None]


@functools.lru_cache(maxsize=None)
def _device_has_fft(device_type: str) -> bool:
    """Whether ``torch.fft`` works on this device type (MPS lacks it on older macOS / torch)."""
    if device_type != "mps":
        return True
    try:
        # Every op of the spectral path: FFT, complex <-> real views and the inverse FFT.
        spectrum = torch.view_as_real(torch.fft.rfftn(torch.ones(1, 1, 4, 6, device=device_type), dim=(-2, -1)))
        torch.fft.irfftn(torch.view_as_complex(spectrum.contiguous()), s=(4, 6), dim=(-2, -1))
    except (RuntimeError, NotImplementedError, TypeError) as err:
        log.warning("torch.fft is not available on %s (%s); the Fourier units run on the CPU", device_type, err)
        return False
    return True


def spectral_conv(x: Tensor, conv: Callable[[Tensor], Tensor], conv_dtype: torch.dtype) -> Tensor:
    """Apply ``conv`` to the real-FFT of ``x`` and transform back (the Fourier unit's data path).

    The FFT and its inverse always run in float32, on the CPU when the device has no FFT: CPU
    FFT rejects fp16/bf16 and cuFFT half precision needs power-of-two sizes. ``conv`` runs on
    ``x``'s device in ``conv_dtype``. Real and imaginary parts are interleaved per channel
    (2c = Re(c), 2c+1 = Im(c)), the channel order of the official weights.
    """
    height, width = x.shape[-2:]
    work_device = x.device if _device_has_fft(x.device.type) else torch.device("cpu")
    spectrum = torch.fft.rfftn(x.to(work_device, torch.float32), dim=(-2, -1), norm="ortho")
    stacked = rearrange(torch.view_as_real(spectrum), "b c h w two -> b (c two) h w")
    y = conv(stacked.to(x.device, conv_dtype))
    y = rearrange(y.to(work_device, torch.float32), "b (c two) h w -> b c h w two", two=2)
    out = torch.fft.irfftn(torch.view_as_complex(y.contiguous()), s=(height, width), dim=(-2, -1), norm="ortho")
    return out.to(x.device, x.dtype)


class FourierUnit(nn.Module):
    """1x1 convolution + BN + ReLU in the real-FFT domain (global receptive field)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return spectral_conv(x, lambda s: self.relu(self.bn(self.conv_layer(s))), self.conv_layer.weight.dtype)


class SpectralTransform(nn.Module):
    """Global-to-global path: 1x1 conv + BN + ReLU, Fourier unit with a residual, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Conv2d | None:
    if in_channels == 0 or out_channels == 0:
        return None
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False, padding_mode="reflect"
    )


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class FFC(nn.Module):
    """Fast Fourier Convolution: four paths between the local and global channel groups."""

    def __init__(
        self,
        in_local: int,
        in_global: int,
        out_local: int,
        out_global: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        if stride != 1 and in_global > 0:
            raise ValueError("FFC: strided spectral transforms are not used by LaMa and not supported")
        self.in_local, self.in_global = in_local, in_global
        self.out_local, self.out_global = out_local, out_global
        self.convl2l = _conv(in_local, out_local, kernel_size, stride, padding)
        self.convl2g = _conv(in_local, out_global, kernel_size, stride, padding)
        self.convg2l = _conv(in_global, out_local, kernel_size, stride, padding)
        self.convg2g = SpectralTransform(in_global, out_global) if in_global and out_global else None

    def forward(self, x: Tensor | FeatureTuple) -> tuple[Tensor | None, Tensor | None]:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        out_l = out_g = None
        if self.out_local:
            out_l = _add(
                self.convl2l(x_l) if self.convl2l is not None else None,
                self.convg2l(x_g) if self.convg2l is not None else None,
            )
        if self.out_global:
            out_g = _add(
                self.convl2g(x_l) if self.convl2g is not None else None,
                self.convg2g(x_g) if self.convg2g is not None else None,
            )
        return out_l, out_g


class FFCBnAct(nn.Module):
    """FFC followed by BatchNorm and ReLU on each non-empty part (official ``FFC_BN_ACT``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.ffc = FFC(*args, **kwargs)
        self.bn_l = nn.BatchNorm2d(self.ffc.out_local) if self.ffc.out_local else None
        self.bn_g = nn.BatchNorm2d(self.ffc.out_global) if self.ffc.out_global else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor | FeatureTuple) -> tuple[Tensor | None, Tensor | None]:
        x_l, x_g = self.ffc(x)
        if x_l is not None:
            x_l = self.act(self.bn_l(x_l))
        if x_g is not None:
            x_g = self.act(self.bn_g(x_g))
        return x_l, x_g


class FFCResBlock(nn.Module):
    """Two 3x3 FFC+BN+ReLU layers with a residual connection added after the second."""

    def __init__(self, local_channels: int, global_channels: int) -> None:
        super().__init__()
        dims = (local_channels, global_channels, local_channels, global_channels)
        self.conv1 = FFCBnAct(*dims, kernel_size=3, padding=1)
        self.conv2 = FFCBnAct(*dims, kernel_size=3, padding=1)

    def forward(self, x: FeatureTuple) -> FeatureTuple:
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return x_l + y_l, x_g + y_g


class ConcatTuple(nn.Module):
    """Concatenate (local, global) on the channel axis, local first."""

    def forward(self, x: FeatureTuple) -> Tensor:
        x_l, x_g = x
        return x_l if x_g is None else torch.cat([x_l, x_g], dim=1)

