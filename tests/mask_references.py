"""Reference implementations the mask code must match, and test masks; for tests and benchmarks.

The references are the code ``ffc.masks`` used before issue 9 (kornia morphology, max-propagation
labelling, pairwise merging), kept to check that the faster code gives exactly the same results.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from lama_multiscale_refine.ffc.masks import _grow, ellipse_kernel

__all__ = ["kornia_morphology", "old_banded_morphology", "old_hole_boxes", "old_merge_overlapping", "snake", "spiral", "dots"]


def kornia_morphology(mask: torch.Tensor, size: int, *, dilation: bool, crop: bool = True,
                      engine: str = "unfold") -> torch.Tensor:
    """The previous implementation: kornia with the ellipse kernel and the "geodesic" border.

    With ``crop`` the kernel is cut to the cells within (H - 1, W - 1) of its anchor: the others
    only ever reach pixels outside the image, which the geodesic border ignores, so the output is
    the same (tests/ffc/test_masks.py checks it against the full kernel) and a 255 px kernel costs
    little on a small mask. ``crop=False, engine="shift"`` is exactly what ``erode``/``dilate`` ran.
    """
    if size <= 1:
        return mask.clone()
    kernel, anchor = ellipse_kernel(size, dtype=mask.dtype), size // 2
    height, width = mask.shape[-2:]
    rows = slice(max(0, anchor - height + 1), min(size, anchor + height)) if crop else slice(0, size)
    cols = slice(max(0, anchor - width + 1), min(size, anchor + width)) if crop else slice(0, size)
    operation = kornia.morphology.dilation if dilation else kornia.morphology.erosion
    return operation(mask, kernel[rows, cols], origin=[anchor - rows.start, anchor - cols.start],
                     border_type="geodesic", engine=engine)


def _old_label_components(grid):
    labels = torch.arange(1, grid.numel() + 1, dtype=torch.float32).reshape(grid.shape) * grid
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * grid
        if torch.equal(grown, labels):
            return labels
        labels = grown


def old_merge_overlapping(boxes):
    """The previous pairwise merge of overlapping boxes."""
    boxes, merged = sorted(boxes), True
    while merged:
        merged, out = False, []
        for box in boxes:
            for i, other in enumerate(out):
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    out[i] = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
                    merged = True
                    break
            else:
                out.append(box)
        boxes = sorted(out)
    return boxes


def old_hole_boxes(hole, margin, cell=8):
    """The previous ``hole_boxes(separate=True)``, verbatim but for the names."""
    height, width = hole.shape
    present = hole > 0
    if not bool(present.any()):
        return []
    coarse = F.max_pool2d(present[None, None].float(), cell, stride=cell, ceil_mode=True)[0, 0]
    labels = _old_label_components(coarse)
    boxes = []
    for label in labels.unique():
        if label == 0:
            continue
        cells = (labels == label).nonzero()
        top, left = (int(v) * cell for v in cells.min(0).values)
        bottom, right = ((int(v) + 1) * cell for v in cells.max(0).values)
        region = present[top:bottom, left:right]
        rows, cols = region.any(1).nonzero(), region.any(0).nonzero()
        box = (top + int(rows[0]), left + int(cols[0]), top + int(rows[-1]) + 1, left + int(cols[-1]) + 1)
        boxes.append(_grow(box, margin, height, width))
    return old_merge_overlapping(boxes)


def snake(size: int, pitch: int = 16, thick: int = 4) -> torch.Tensor:
    mask = torch.zeros(size, size)
    rows = list(range(0, size - thick, pitch))
    for i, row in enumerate(rows):
        mask[row : row + thick] = 1
        if i + 1 < len(rows):
            cols = slice(size - thick, size) if i % 2 == 0 else slice(0, thick)
            mask[row : rows[i + 1] + thick, cols] = 1
    return mask


def spiral(size: int, step: int = 12, thick: int = 3) -> torch.Tensor:
    """A square spiral drawn from the outside in: right, down, left, up, each turn ``step`` px shorter."""
    mask = torch.zeros(size, size)
    y = x = 0
    for index in range(4 * size):
        length = size - thick - max(0, (index - 1) // 2) * step
        if length <= 0:
            break
        dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[index % 4]
        y2, x2 = y + dy * length, x + dx * length
        mask[min(y, y2) : max(y, y2) + thick, min(x, x2) : max(x, x2) + thick] = 1
        y, x = y2, x2
    return mask


def dots(height: int, width: int, n: int, side: int = 6, seed: int = 0) -> torch.Tensor:
    """(H, W) zeros with ``n`` square dots of ``side`` px at random places."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(height, width)
    for y, x in zip(torch.randint(0, height - side, (n,), generator=generator).tolist(),
                    torch.randint(0, width - side, (n,), generator=generator).tolist()):
        mask[y : y + side, x : x + side] = 1
    return mask


def old_banded_morphology(mask: torch.Tensor, size: int, *, dilation: bool, band_elements: int = 1 << 20) -> torch.Tensor:
    """The previous path for kornia without the "shift" engine (older than 0.8): "unfold" in row bands.

    Each band of about ``band_elements`` input pixels unfolds into a (band x size^2) window tensor.
    """
    if size <= 1:
        return mask.clone()
    kernel, radius = ellipse_kernel(size, dtype=mask.dtype), size // 2
    operation = kornia.morphology.dilation if dilation else kornia.morphology.erosion
    height, width = mask.shape[-2:]
    rows, out = max(1, band_elements // (mask.shape[0] * width)), []
    for start in range(0, height, rows):
        lo, hi = max(0, start - radius), min(height, start + rows + radius)
        band = operation(mask[..., lo:hi, :], kernel, border_type="geodesic", engine="unfold")
        out.append(band[..., start - lo : start - lo + min(rows, height - start), :])
    return torch.cat(out, dim=-2)
