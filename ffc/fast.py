"""Fast path: the same generator with BatchNorm folded away and frozen weights.

:func:`fuse_for_inference` returns a new module (the original is left untouched) in which

* every eval-mode BatchNorm is folded into the convolution before it (BN is affine per channel,
  and it follows a sum of convolutions, so its scale goes into each of them and its shift into
  one bias);
* the two convolutions that read the local features (local->local, local->global) are one
  convolution with concatenated outputs, so the local input is padded and read once;
* with autograd off, ReLUs run in place and residual adds reuse buffers; with autograd on,
  convolutions keep only their (frozen) weights for backward, reflect padding only its input's
  shape and ReLUs a 1-byte sign mask, so the refinement stores a fraction of the activations
  autograd would;
* optionally everything runs in ``channels_last`` memory format (faster convolutions on CPU).

It is numerically the same network (differences are float round-off, ~1e-7 here). Its weights
never require grad, but it is differentiable with respect to its inputs and to the features
between ``front`` and ``rear``, which is all the refinement optimises.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .generator import LamaConfig, LamaGenerator, run_front
from .layers import ConcatTuple, FFCBnAct, FFCResBlock, FourierUnit, _device_has_fft, spectral_conv

__all__ = ["FastLamaGenerator", "fuse_for_inference"]


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class _FrozenConv(torch.autograd.Function):
    """Convolution whose weights never get gradients: keeps only the weights for backward.

    Autograd's own convolution keeps its input (for the weight gradient) even when the weights
    are frozen; that input is most of the refinement's memory. The input gradient is computed by
    the same ``convolution_backward`` kernel autograd would call.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, transposed, output_padding):  # noqa: D102
        ctx.save_for_backward(weight)
        ctx.geometry = (x.shape, x.dtype, stride, padding, transposed, output_padding)
        if transposed:
            return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (weight,) = ctx.saved_tensors
        shape, dtype, stride, padding, transposed, output_padding = ctx.geometry
        shape_only = grad.new_empty(1).expand(shape)  # convolution_backward reads only its shape
        grad_input = torch.ops.aten.convolution_backward(
            grad, shape_only, weight.to(grad.dtype), None, stride, padding, (1, 1), transposed, output_padding, 1,
            (True, False, False),
        )[0]
        return grad_input.to(dtype), None, None, None, None, None, None


class _SignMaskReLU(torch.autograd.Function):
    """ReLU that keeps a 1-byte sign mask for backward instead of its float output."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        out = torch.relu(x)
        ctx.save_for_backward(out > 0)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (positive,) = ctx.saved_tensors
        return torch.where(positive, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def _reflect_pad_backward_nhwc(grad: Tensor, shape: torch.Size, padding: tuple[int, int, int, int]) -> Tensor:
    """Gradient of reflect padding for a channels_last ``grad``, without leaving channels_last.

    ATen's kernel makes ``grad`` NCHW-contiguous, zero-fills a fresh input gradient and returns
    it NCHW, which the next convolution's backward converts back: four passes over the tensor.
    Here: one copy of the interior, then each padded row and column added onto the pixel it
    mirrors (columns first over all rows, so the corners reach their pixel too).
    """
    left, right, top, bottom = padding
    height, width = shape[-2:]
    cols = grad[..., left : left + width].clone(memory_format=torch.channels_last)
    for j in range(left):  # padded column j mirrors input column left - j
        cols[..., left - j] += grad[..., j]
    for k in range(right):  # padded column left + width + k mirrors input column width - 2 - k
        cols[..., width - 2 - k] += grad[..., left + width + k]
    rows = cols[..., top : top + height, :]
    for i in range(top):
        rows[..., top - i, :] += cols[..., i, :]
    for k in range(bottom):
        rows[..., height - 2 - k, :] += cols[..., top + height + k, :]
    return rows.contiguous(memory_format=torch.channels_last)  # a no-op for batch 1


class _ReflectPad(torch.autograd.Function):
    """Reflect padding that keeps only the input's shape for backward (autograd keeps the input)."""

    @staticmethod
    def forward(ctx, x, padding):  # noqa: D102
        ctx.geometry = (x.shape, padding)
        return F.pad(x, padding, mode="reflect")

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        shape, padding = ctx.geometry
        if grad.dim() == 4 and grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
            return _reflect_pad_backward_nhwc(grad, shape, padding), None
        shape_only = grad.new_empty(1).expand(shape)  # the kernel reads only its shape
        return torch.ops.aten.reflection_pad2d_backward(grad, shape_only, padding), None


class _SplitChannels(torch.autograd.Function):
    """``x[:, :at], x[:, at:]`` whose backward is one concatenation.

    Autograd's slice backward zero-fills a full-size gradient per slice (NCHW, whatever the
    input's layout) and then adds the two; a concatenation writes each element once and keeps
    channels_last.
    """

    @staticmethod
    def forward(ctx, x, at):  # noqa: D102
        return x[:, :at], x[:, at:]

    @staticmethod
    def backward(ctx, grad_first, grad_second):  # noqa: D102
        return torch.cat([grad_first, grad_second], dim=1), None


def _split_channels(x: Tensor, at: int) -> tuple[Tensor, Tensor]:
    if torch.is_grad_enabled():
        return _SplitChannels.apply(x, at)
    return x[:, :at], x[:, at:]


def reflect_pad(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    return _ReflectPad.apply(x, padding) if torch.is_grad_enabled() else F.pad(x, padding, mode="reflect")


class ReflectPadModule(nn.Module):
    """Reflection padding with the memory-light backward (the fused model's ReflectionPad2d)."""

    def __init__(self, padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return reflect_pad(x, self.padding)


def _relu(x: Tensor) -> Tensor:
    # In place when no graph records it; otherwise the mask-saving ReLU.
    return _SignMaskReLU.apply(x) if torch.is_grad_enabled() else F.relu_(x)


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=(1, 1), padding=(0, 0),
          transposed: bool = False, output_padding=(0, 0)) -> Tensor:
    stride, padding, output_padding = tuple(_pair(stride)), tuple(_pair(padding)), tuple(_pair(output_padding))
    if torch.is_grad_enabled():
        return _FrozenConv.apply(x, weight, bias, stride, padding, transposed, output_padding)
    if transposed:
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    return F.conv2d(x, weight, bias, stride, padding)


class _Conv(nn.Module):
    """A frozen Conv2d / ConvTranspose2d (weights copied, BatchNorm possibly folded in)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, *, stride=1, padding=0, transposed=False,
                 output_padding=0) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.transposed = transposed

    def forward(self, x: Tensor) -> Tensor:
        return _conv(x, self.weight, self.bias, self.stride, self.padding, self.transposed, self.output_padding)


class _ReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _relu(x)


def _scaled(weight: Tensor, scale: Tensor) -> Tensor:
    return weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))


class _FusedFourierUnit(nn.Module):
    def __init__(self, fu: FourierUnit) -> None:
        super().__init__()
        scale, shift = _bn_scale_shift(fu.bn)
        self.conv = _Conv(_scaled(fu.conv_layer.weight, scale), shift)

    def forward(self, x: Tensor) -> Tensor:
        conv = lambda s: _relu(self.conv(s))  # noqa: E731
        if x.dim() == 4 and _device_has_fft(x.device.type):
            return _spectral_conv_nhwc(x, conv, self.conv.weight.dtype)
        return spectral_conv(x, conv, self.conv.weight.dtype)  # the FFT runs on the CPU there


class _RealFFT2(torch.autograd.Function):
    """``rfftn`` over dims (1, 2), "ortho", keeping only the input's shape for backward.

    ATen's real-to-complex FFT saves its whole input for backward although only its size is
    needed: two float32 maps per residual block, ~40 % of what the fused rear keeps.

    Backward: the adjoint of the one-sided transform is ``Re(ifft2(G zero-padded to the full
    width))`` (ATen's formula, a full-size complex transform). The inverse real FFT of a
    one-sided spectrum counts every column strictly between 0 and the Nyquist column twice
    (once for its mirror) and those two once, so the same adjoint is ``irfft2`` of ``G`` with
    those inner columns halved: a half-size transform, no padded buffer.
    """

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        ctx.shape = x.shape
        return torch.fft.rfftn(x, dim=(1, 2), norm="ortho")

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        height, width = ctx.shape[1:3]
        inner_end = (width + 1) // 2  # columns 1 .. inner_end - 1 have a mirror
        scale = grad.new_ones(grad.shape[2], dtype=grad.real.dtype)
        scale[1:inner_end] = 0.5
        return torch.fft.irfftn(grad * scale[:, None], s=(height, width), dim=(1, 2), norm="ortho")


def _spectral_conv_nhwc(x: Tensor, conv, conv_dtype: torch.dtype) -> Tensor:
    """:func:`ffc.layers.spectral_conv` computed in NHWC order, with no layout copies.

    In NHWC memory the half-spectrum ``(b, h, w', c)`` viewed as real is ``(b, h, w', c, 2)``,
    i.e. ``(b, h, w', 2c)`` with Re/Im interleaved per channel: exactly the official channel
    order, as a channels_last ``(b, 2c, h, w')`` view. The 1x1 convolution reads and writes it
    in place of the two permuting copies (and their backward copies) of the NCHW path. Same
    transforms (FFT over H and W, float32, "ortho"), so the same numbers up to round-off. The
    result has ``x``'s memory format.
    """
    height, width = x.shape[-2:]
    nhwc = x.permute(0, 2, 3, 1).float()  # a dense view when x is channels_last
    spectrum = _RealFFT2.apply(nhwc) if torch.is_grad_enabled() else torch.fft.rfftn(nhwc, dim=(1, 2), norm="ortho")
    stacked = torch.view_as_real(spectrum).flatten(3).permute(0, 3, 1, 2)
    y = conv(stacked.to(conv_dtype)).float().permute(0, 2, 3, 1)
    y = torch.view_as_complex(y.reshape(*y.shape[:3], -1, 2).contiguous())
    out = torch.fft.irfftn(y, s=(height, width), dim=(1, 2), norm="ortho").permute(0, 3, 1, 2)
    if not x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous()
    return out.to(x.dtype)


class _FusedFFC(nn.Module):
    """FFC + folded BatchNorm + ReLU, with the two local-input convolutions merged."""

    def __init__(self, block: FFCBnAct) -> None:
        super().__init__()
        ffc = block.ffc
        self.out_local, self.out_global = ffc.out_local, ffc.out_global
        conv = ffc.convl2l or ffc.convl2g
        self.stride, self.padding = conv.stride, conv.padding[0]

        scale_l, shift_l = _bn_scale_shift(block.bn_l) if block.bn_l is not None else (None, None)
        scale_g, shift_g = _bn_scale_shift(block.bn_g) if block.bn_g is not None else (None, None)

        weights, biases = [], []
        if ffc.convl2l is not None:
            weights.append(_scaled(ffc.convl2l.weight, scale_l))
            biases.append(shift_l)
        if ffc.convl2g is not None:
            weights.append(_scaled(ffc.convl2g.weight, scale_g))
            biases.append(shift_g)
        # Every weight sits in a leaf module: ComfyUI's ModelPatcher moves and counts only those.
        self.local_conv = _Conv(torch.cat(weights), torch.cat(biases), stride=self.stride)

        self.global_conv = None
        if ffc.convg2l is not None:
            self.global_conv = _Conv(_scaled(ffc.convg2l.weight, scale_l), None, stride=self.stride)
        self.spectral = None
        if ffc.convg2g is not None:
            st = ffc.convg2g
            scale1, shift1 = _bn_scale_shift(st.conv1[1])
            self.spectral_in = _Conv(_scaled(st.conv1[0].weight, scale1), shift1)
            self.spectral = _FusedFourierUnit(st.fu)
            self.spectral_out = _Conv(_scaled(st.conv2.weight, scale_g), None)

    def _pad(self, x: Tensor) -> Tensor:
        p = self.padding
        return reflect_pad(x, (p, p, p, p)) if p else x

    def forward(self, x: Tensor | tuple[Tensor, Tensor | None]) -> tuple[Tensor | None, Tensor | None]:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        merged = self.local_conv(self._pad(x_l))
        if self.out_local and self.out_global:
            out_l, out_g = _split_channels(merged, self.out_local)
        else:
            out_l, out_g = (merged, None) if self.out_local else (None, merged)
        if self.global_conv is not None and x_g is not None:
            out_l = out_l + self.global_conv(self._pad(x_g))
        if self.spectral is not None and x_g is not None:
            s = _relu(self.spectral_in(x_g))
            s = self.spectral_out(s + self.spectral(s))
            out_g = out_g + s
        # Fresh sums or disjoint channel views of ``merged``: safe to rectify in place without autograd.
        return (_relu(out_l) if out_l is not None else None), (_relu(out_g) if out_g is not None else None)


class _FusedResBlock(nn.Module):
    def __init__(self, block: FFCResBlock) -> None:
        super().__init__()
        self.conv1 = _FusedFFC(block.conv1)
        self.conv2 = _FusedFFC(block.conv2)

    def forward(self, x: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y_l, y_g = self.conv2(self.conv1(x))
        if torch.is_grad_enabled():
            return x[0] + y_l, x[1] + y_g
        return y_l.add_(x[0]), y_g.add_(x[1])


def _fused_up(conv_t: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> _Conv:
    scale, shift = _bn_scale_shift(bn)
    # ConvTranspose2d weight is (in, out, kh, kw): scale along dim 1.
    return _Conv(conv_t.weight * scale.reshape(1, -1, 1, 1), conv_t.bias * scale + shift, stride=conv_t.stride,
                 padding=conv_t.padding, transposed=True, output_padding=conv_t.output_padding)


class FastLamaGenerator(nn.Module):
    """BatchNorm-folded generator with the same contract as :class:`LamaGenerator` (frozen weights)."""

    def __init__(self, generator: LamaGenerator, channels_last: bool = True) -> None:
        super().__init__()
        if generator.training:
            raise ValueError("fuse_for_inference: the generator must be in eval mode (BatchNorm running stats)")
        self.config: LamaConfig = generator.config
        self.channels_last = channels_last
        layers: list[nn.Module] = []
        source = list(generator.model)
        i = 0
        with torch.no_grad():
            while i < len(source):
                m = source[i]
                if isinstance(m, FFCBnAct):
                    layers.append(_FusedFFC(m))
                elif isinstance(m, FFCResBlock):
                    layers.append(_FusedResBlock(m))
                elif isinstance(m, nn.ConvTranspose2d):
                    layers += [_fused_up(m, source[i + 1]), _ReLU()]
                    i += 2  # BatchNorm folded, ReLU re-added above
                elif isinstance(m, nn.Conv2d):
                    layers.append(_Conv(m.weight, m.bias, stride=m.stride, padding=m.padding))
                elif isinstance(m, nn.ReflectionPad2d):
                    layers.append(ReflectPadModule(tuple(m.padding)))
                elif isinstance(m, (nn.Sigmoid, ConcatTuple)):
                    layers.append(copy.deepcopy(m))
                else:
                    raise TypeError(f"fuse_for_inference: unexpected module {type(m).__name__} at index {i}")
                i += 1
        self.body = nn.Sequential(*layers).requires_grad_(False)
        # The masking positional encoding (LaMa-MPE) holds no BatchNorm: used as it is.
        self.mpe = copy.deepcopy(generator.mpe).requires_grad_(False) if generator.mpe is not None else None
        if channels_last:
            self.body = self.body.to(memory_format=torch.channels_last)
        self.eval()  # new modules start in training mode; there is no BatchNorm left, but callers check

    def _first_block(self) -> int:
        return self.config.first_block_index

    @property
    def refinable(self) -> bool:
        """Whether the network splits into ``front`` and ``rear`` (as :attr:`LamaGenerator.refinable`)."""
        return True

    def front(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder (+ MPE) -> (local, global) features at H/8, as :meth:`LamaGenerator.front`."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return run_front(self.body, self.mpe, x, self._first_block())

    def rear(self, features: tuple[Tensor, Tensor]) -> Tensor:
        """Residual blocks and decoder -> prediction in (0, 1), NCHW-contiguous."""
        if self.channels_last:
            features = tuple(f.contiguous(memory_format=torch.channels_last) for f in features)
        return self.body[self._first_block() :](features).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        return self.rear(self.front(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def fuse_for_inference(generator: LamaGenerator, *, channels_last: bool = True) -> FastLamaGenerator:
    """Return a BatchNorm-folded copy of ``generator`` with frozen weights (same device and dtype)."""
    param = next(generator.parameters())
    return FastLamaGenerator(generator, channels_last=channels_last).to(param.device, param.dtype)
