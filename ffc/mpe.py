"""Masking positional encoding (MPE) of LaMa-MPE: where each hole pixel lies relative to the hole's edge.

Dong, Cao and Fu, "Incremental Transformer Structure Enhanced Image Inpainting with Masking
Positional Encoding" (ZITS, CVPR 2022). The LaMa-MPE file users have is manga-image-translator's
``inpainting_lama_mpe.ckpt``; this module reproduces what its ``load_masked_position_encoding`` and
``MPE`` compute (our own code, written from reading theirs):

1. the binary hole (0/255) is resized to a 256 x 256 grid with OpenCV's ``INTER_AREA``; every
   non-zero grid pixel is a hole;
2. the known area grows by one pixel per step (3 x 3, the border mirrored without repeating the edge,
   OpenCV's default ``BORDER_REFLECT_101``) until it covers the grid. A hole pixel reached at step
   ``i`` gets distance ``i``, and direction flag ``k`` when a known pixel was in the k-th 2 x 2 quadrant
   of its 3 x 3 neighbourhood (k = 0 up-left, 1 down-left, 2 up-right, 3 down-right);
3. position = ``int(distance / 128 * P)`` clipped to ``P - 1`` (P = rows of the position table: 128,
   so position = distance);
4. position and flags are resized back to the input size with OpenCV's ``INTER_NEAREST`` and zeroed
   where the input is not a hole;
5. the embedding ``table[position] * alpha5`` and ``flags @ direction_weights * alpha6`` (each
   (B, C, H, W), C = the generator's ``ngf``) are added, in float32 and in that order, to the output
   of the generator's input convolution.

The grid is computed on the CPU (it is 256 x 256 whatever the image size); only the final lookup
runs on the features' device. OpenCV is not needed: its resampling rules are re-implemented for
binary masks (``_area_grid``) and checked against OpenCV in ``tests/ffc/test_mpe.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GRID", "DIRECTIONS", "MaskPositionalEncoding", "mask_positions", "sinusoidal_table"]

# Side of the square grid the distances are measured on, and the number of direction flags.
GRID = 256
DIRECTIONS = 4
# Output rows per chunk when adding the embedding, to bound the temporary memory at large sizes.
_CHUNK_ELEMENTS = 1 << 22


def sinusoidal_table(rows: int, dim: int) -> Tensor:
    """The fixed position table ZITS initialises: sines of the even angles, then cosines of the odd ones."""
    position = torch.arange(rows, dtype=torch.float64)[:, None]
    angle = position / torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    return torch.cat([torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])], dim=1).float()


# --- OpenCV's resampling of a binary mask -------------------------------------------------------


def _area_weights(src: int, dst: int) -> Tensor:
    """(dst, src) weights of OpenCV's true area resampling (``INTER_AREA`` when shrinking)."""
    scale = 1.0 / (dst / src)  # OpenCV keeps the inverse of dst/src, not src/dst
    weights = torch.zeros(dst, src, dtype=torch.float64)
    for dx in range(dst):
        start = dx * scale
        end = start + scale
        cell = min(scale, src - start)
        first, last = math.ceil(start), min(math.floor(end), src - 1)
        first = min(first, last)
        if first - start > 1e-3:
            weights[dx, first - 1] = (first - start) / cell
        weights[dx, first:last] = 1.0 / cell
        if end - last > 1e-3:
            weights[dx, last] = min(min(end - last, 1.0), cell) / cell
    return weights.float().double()  # OpenCV stores the weights as float32


def _emulated_taps(src: int, dst: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two taps per output pixel of OpenCV's ``INTER_AREA`` when enlarging (a bilinear emulation).

    Returns (first index, second index, first weight, second weight); weights are OpenCV's
    11-bit fixed-point coefficients. Past the last source pixel only the first tap counts.
    """
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    first, second, w0, w1 = [], [], [], []
    end_reached = False
    for dx in range(dst):
        sx = math.floor(dx * scale)
        fx = float(np.float32((dx + 1) - (sx + 1) * inv_scale))  # OpenCV computes it in float32
        fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        if sx + 1 >= src:
            end_reached = True
            if sx >= src - 1:
                fx, sx = 0.0, src - 1
        a0 = round(float(np.float32(1.0 - fx)) * 2048)
        a1 = round(fx * 2048)
        if end_reached:  # OpenCV's horizontal pass uses S[sx] * 2048 from here on
            a0, a1 = 2048, 0
        first.append(sx)
        second.append(min(sx + 1, src - 1))
        w0.append(a0)
        w1.append(a1)
    as_long = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    return as_long(first), as_long(second), as_long(w0), as_long(w1)


def _area_grid(hole: Tensor, size: int = GRID) -> Tensor:
    """``cv2.resize(hole * 255, (size, size), interpolation=INTER_AREA) > 0`` for a bool (H, W) hole."""
    height, width = hole.shape
    if (height, width) == (size, size):
        return hole.clone()
    if height >= size and width >= size:
        rows, cols = _area_weights(height, size).numpy(), _area_weights(width, size).numpy()
        values = hole.numpy().astype(np.float64) * 255
        # Round-half-to-even of a value in [0, 255]: non-zero exactly when it exceeds 0.5.
        return torch.from_numpy((rows @ values @ cols.T) > 0.5)
    # Enlarging along at least one side: OpenCV's fixed-point two-tap emulation on both sides.
    y0, y1, b0, b1 = _emulated_taps(height, size)
    x0, x1, a0, a1 = _emulated_taps(width, size)
    ints = (hole.to(torch.int64) * 255)
    horizontal = ints[:, x0] * a0 + ints[:, x1] * a1  # (H, size), scaled by 2048
    top, bottom = horizontal[y0], horizontal[y1]
    # The vectorised vertical pass: (((row >> 4) * beta) >> 16) summed, then a rounding shift by 2.
    value = (((top >> 4) * b0[:, None]) >> 16) + (((bottom >> 4) * b1[:, None]) >> 16)
    return ((value + 2) >> 2) > 0


def _nearest_index(src: int, dst: int) -> Tensor:
    """Source index of each output pixel under OpenCV's ``INTER_NEAREST``: floor(x * src/dst)."""
    inverse = 1.0 / (dst / src)
    index = torch.floor(torch.arange(dst, dtype=torch.float64) * inverse).to(torch.int64)
    return index.clamp_(max=src - 1)


# --- distances on the grid -----------------------------------------------------------------------


def _grow(hole_grid: Tensor) -> tuple[Tensor, Tensor]:
    """Steps until each grid pixel is reached from the known area, and its direction flags.

    Runs in numpy: a few hundred tiny steps, where torch's thread pool costs more than the work
    (100x slower on a busy 2-core machine).

    Args:
        hole_grid: (B, G, G) bool.

    Returns:
        distance (B, G, G) int64 (0 for known pixels and for grids without any known pixel) and
        flags (B, DIRECTIONS, G, G) bool.
    """
    holes = hole_grid.numpy()
    batch, size, _ = holes.shape
    distance = np.zeros((batch, size, size), dtype=np.int64)
    flags = np.zeros((batch, DIRECTIONS, size, size), dtype=bool)
    for b in range(batch):
        known = ~holes[b]
        if known.all() or not known.any():  # nothing to fill, or (as the reference) nothing to grow from
            continue
        step = 0
        while not known.all():
            step += 1
            if step > 2 * size:  # Chebyshev distances on a G x G grid are below G
                raise AssertionError("masked positional encoding did not converge")
            padded = np.pad(known, 1, mode="reflect")  # numpy "reflect" = OpenCV BORDER_REFLECT_101
            # Any known pixel in each 2x2 window of the padded grid: window (y, x) covers rows y-1..y.
            window = padded[:-1, :-1] | padded[1:, :-1] | padded[:-1, 1:] | padded[1:, 1:]
            quadrants = (window[:-1, :-1], window[1:, :-1], window[:-1, 1:], window[1:, 1:])
            unknown = ~known
            reached = np.zeros_like(known)
            for k, quadrant in enumerate(quadrants):
                hit = quadrant & unknown
                flags[b, k] |= hit
                reached |= hit
            distance[b][reached] = step
            known = known | reached
    return torch.from_numpy(distance), torch.from_numpy(flags)


def mask_positions(hole: Tensor, positions: int) -> tuple[Tensor, Tensor]:
    """The masking positional encoding's inputs for a batch of holes.

    Args:
        hole: (B, 1, H, W) bool or 0/1 float, 1 = hole; any device.
        positions: rows of the position table (128 in the released model).

    Returns:
        position (B, H, W) int64 in [0, positions) and flags (B, H, W, 4) bool, on ``hole``'s device;
        both zero outside the hole.
    """
    if hole.ndim != 4 or hole.shape[1] != 1:
        raise ValueError(f"hole: expected (B, 1, H, W), got {tuple(hole.shape)}")
    device = hole.device
    hole_hw = hole[:, 0].bool()
    batch, height, width = hole_hw.shape
    cpu = hole_hw.cpu()
    grid = torch.stack([_area_grid(cpu[b]) for b in range(batch)])
    distance, flags = _grow(grid)
    # int(distance / (GRID / 2) * positions), computed in float64 like the reference.
    position = (distance.double() / (GRID / 2) * positions).to(torch.int64).clamp_(0, positions - 1)
    if (height, width) != (GRID, GRID):
        rows, cols = _nearest_index(GRID, height), _nearest_index(GRID, width)
        position = position[:, rows][:, :, cols]
        flags = flags[:, :, rows][:, :, :, cols]
        position = position * cpu
        flags = flags & cpu[:, None]
    return position.to(device), flags.permute(0, 2, 3, 1).to(device)


class MaskPositionalEncoding(nn.Module):
    """The MPE module of LaMa-MPE: two embedding tables and their learned scales.

    Attribute names follow the released file (``rel_pos_emb.weight``, ``direct_emb.weight``,
    ``alpha5``, ``alpha6``), so its tensors load under the canonical prefix ``mpe.``.
    """

    def __init__(self, positions: int, channels: int) -> None:
        super().__init__()
        self.rel_pos_emb = nn.Embedding(positions, channels)
        self.direct_emb = nn.Embedding(DIRECTIONS, channels)
        self.alpha5 = nn.Parameter(torch.zeros(()))
        self.alpha6 = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            self.rel_pos_emb.weight.copy_(sinusoidal_table(positions, channels))

    @property
    def positions(self) -> int:
        return self.rel_pos_emb.num_embeddings

    @property
    def channels(self) -> int:
        return self.rel_pos_emb.embedding_dim

    def add_to(self, local: Tensor, hole: Tensor) -> Tensor:
        """``local + position embedding + direction embedding``, in float32 like the reference.

        Args:
            local: (B, C, H, W) output of the generator's input convolution.
            hole: (B, 1, H, W) binary hole mask (the generator input's last channel).

        Returns:
            (B, C, H, W) in ``local``'s dtype.

        Raises:
            ValueError: when the mask is not binary or the shapes do not fit.
        """
        batch, channels, height, width = local.shape
        if channels != self.channels or hole.shape != (batch, 1, height, width):
            raise ValueError(
                f"LaMa-MPE: features {tuple(local.shape)} and hole {tuple(hole.shape)} do not fit an encoding of "
                f"{self.channels} channels; expected (B, {self.channels}, H, W) and (B, 1, H, W)"
            )
        if not bool(((hole == 0) | (hole == 1)).all()):
            raise ValueError(
                "LaMa-MPE generator input: the last channel must be the binary hole mask (0 or 1), got other values; "
                "binarise the mask first (ffc.inpaint and refine.refine do)"
            )
        position, flags = mask_positions(hole, self.positions)
        # table[p] * alpha == (table * alpha)[p] element for element; the 16 flag patterns are
        # looked up the same way. Tables follow the features' device, in float32.
        positions_table = self.rel_pos_emb.weight.float() * self.alpha5.float()
        patterns = torch.tensor([[(p >> k) & 1 for k in range(DIRECTIONS)] for p in range(2**DIRECTIONS)],
                                dtype=torch.float32, device=local.device)
        with torch.autocast(local.device.type, enabled=False):  # the tables stay float32 under bf16 autocast
            directions_table = torch.matmul(patterns, self.direct_emb.weight.float()) * self.alpha6.float()
        pattern = (flags.to(torch.int64) * (2 ** torch.arange(DIRECTIONS, device=local.device))).sum(-1)

        out = local.float()
        if out is local:  # never write into the caller's tensor
            out = out.clone()
        rows = max(1, _CHUNK_ELEMENTS // max(1, width * channels))
        for b in range(batch):
            for top in range(0, height, rows):
                span = slice(top, top + rows)
                view = out[b, :, span]
                view += positions_table[position[b, span]].permute(2, 0, 1)
                view += directions_table[pattern[b, span]].permute(2, 0, 1)
        return out.to(local.dtype)
