"""Mask morphology, feathering and hole boxes, checked against the implementations they replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lama_multiscale_refine.ffc import Cancelled
from lama_multiscale_refine.ffc.masks import _merge_overlapping, dilate, ellipse_kernel, erode, feather, hole_boxes
from mask_references import kornia_morphology, old_banded_morphology, old_hole_boxes, old_merge_overlapping, snake, spiral


def test_ellipse_kernel_is_opencvs_15px_ellipse():
    kernel = ellipse_kernel(15)
    assert int(kernel.sum()) == 169
    assert kernel.sum(1).int().tolist() == [1, 9, 11, 13, 13, 15, 15, 15, 15, 15, 13, 13, 11, 9, 1]
    assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.flip(1))
    assert kernel[:, 0].sum() == 5  # not transpose-symmetric, exactly like OpenCV's (fixtures README §4)
    assert ellipse_kernel(1).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="size"):
        ellipse_kernel(0)


def _square(size=40, box=(10, 30, 10, 30)):
    mask = torch.zeros(1, 1, size, size)
    mask[..., box[0] : box[1], box[2] : box[3]] = 1
    return mask


def test_erode_and_dilate_with_a_disk():
    mask = _square()
    eroded, dilated = erode(mask, 5), dilate(mask, 5)
    assert eroded.sum() == 16 * 16  # a 20 px square loses 2 px per side
    assert eroded[0, 0, 12, 12] == 1 and eroded[0, 0, 11, 20] == 0
    assert dilated[0, 0, 8, 20] == 1 and dilated[0, 0, 7, 20] == 0
    assert dilated[0, 0, 8, 8] == 0  # a disk, not a square: corners stay round
    assert torch.equal(erode(mask, 1), mask) and torch.equal(dilate(mask, 0), mask)


def test_border_does_not_erode():
    mask = _square(box=(0, 20, 0, 20))  # touches the top and left borders
    eroded = erode(mask, 5)
    assert eroded[0, 0, 0, 0] == 1 and eroded[0, 0, 0, 17] == 1 and eroded[0, 0, 0, 18] == 0


def test_morphology_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"mask: expected a float \(B, 1, H, W\)"):
        erode(torch.zeros(1, 40, 40), 3)


# --- exactly the kornia morphology the pack used before ---------------------------------------------


def _levels(shape, seed: int, levels: int = 5) -> torch.Tensor:
    """Grey masks with few distinct values (many ties), the first image binary."""
    mask = torch.randint(0, levels, shape, generator=torch.Generator().manual_seed(seed)).float() / (levels - 1)
    mask[0] = (mask[0] > 0.5).float()
    return mask


@pytest.mark.parametrize("size", [2, 4, 15, 16, 63, 64])
def test_cropped_reference_is_kornia_with_the_full_kernel(size):
    mask = _levels((2, 1, 9, 12), seed=size)
    for dilation in (False, True):
        cropped = kornia_morphology(mask, size, dilation=dilation)
        assert torch.equal(cropped, kornia_morphology(mask, size, dilation=dilation, crop=False))


def test_every_kernel_size_matches_kornia_exactly():
    """Sizes 0..255, odd and even (erode/dilate accept every size), binary and grey, borders everywhere."""
    mask = _levels((2, 1, 13, 19), seed=0)
    for size in range(0, 256):
        assert torch.equal(erode(mask, size), kornia_morphology(mask, size, dilation=False)), f"erode {size}"
        assert torch.equal(dilate(mask, size), kornia_morphology(mask, size, dilation=True)), f"dilate {size}"


@pytest.mark.parametrize(("shape", "size"), [
    ((3, 1, 64, 80), 15), ((1, 1, 48, 160), 63), ((1, 1, 100, 30), 64), ((2, 1, 1, 50), 7),
    ((1, 1, 37, 1), 8), ((1, 1, 1, 1), 255), ((1, 1, 20, 300), 255),
])
def test_larger_masks_match_kornia(shape, size):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(size))
    mask[..., : shape[-2] // 3, :] = (mask[..., : shape[-2] // 3, :] > 0.7).float()  # binary and soft parts
    for dilation, operation in ((False, erode), (True, dilate)):
        assert torch.equal(operation(mask, size), kornia_morphology(mask, size, dilation=dilation))


def test_matches_the_banded_path_of_older_kornia():
    mask = _levels((2, 1, 90, 70), seed=10)
    for size in (7, 16):  # 11-row bands
        assert torch.equal(erode(mask, size), old_banded_morphology(mask, size, dilation=False, band_elements=2 * 70 * 11))
        assert torch.equal(dilate(mask, size), old_banded_morphology(mask, size, dilation=True, band_elements=2 * 70 * 11))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_match_kornia(dtype):
    mask = torch.rand(2, 1, 30, 41, generator=torch.Generator().manual_seed(3)).to(dtype)
    for size in (3, 14, 15, 40):
        for dilation, operation in ((False, erode), (True, dilate)):
            out = operation(mask, size)
            assert out.dtype == dtype and torch.equal(out, kornia_morphology(mask, size, dilation=dilation))


def test_non_contiguous_input_and_values_outside_zero_one():
    mask = (torch.randn(2, 1, 31, 40, generator=torch.Generator().manual_seed(4)) * 3).transpose(-1, -2)
    mask[0, 0, 5, 7] = float("inf")
    for size in (5, 12):
        assert torch.equal(erode(mask, size), kornia_morphology(mask, size, dilation=False))
        assert torch.equal(dilate(mask, size), kornia_morphology(mask, size, dilation=True))


def test_nan_spreads_like_kornia():
    mask = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(5))
    mask[0, 0, 10, 3] = float("nan")
    for dilation, operation in ((False, erode), (True, dilate)):
        torch.testing.assert_close(operation(mask, 7), kornia_morphology(mask, 7, dilation=dilation), rtol=0, atol=0, equal_nan=True)


def test_a_point_dilates_to_the_kernel_for_every_size():
    """The decomposition covers exactly the disk, also for even sizes (kornia's anchor size // 2)."""
    for size in range(2, 256):
        anchor, kernel = size // 2, ellipse_kernel(size)
        # Dilating a point gives the kernel with its anchor on the point (Minkowski sum) ...
        point = torch.zeros(1, 1, size, size)
        point[..., anchor, anchor] = 1
        assert torch.equal(dilate(point, size)[0, 0], kernel), size
        # ... and eroding its complement removes the kernel reflected about its anchor.
        point = torch.zeros(1, 1, size, size)
        point[..., size - 1 - anchor, size - 1 - anchor] = 1
        assert torch.equal(erode(1 - point, size)[0, 0], 1 - kernel.flip(0, 1)), size


def test_gradients_are_refused_clearly():
    mask = torch.rand(1, 1, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match="mask: erode/dilate are not differentiable"):
        erode(mask, 3)
    with torch.no_grad():
        assert torch.equal(erode(mask, 3), kornia_morphology(mask.detach(), 3, dilation=False))


# --- cancellation ----------------------------------------------------------------------------------


class _CancelAfter:
    def __init__(self, polls: int) -> None:
        self.polls, self.limit = 0, polls

    def __call__(self) -> bool:
        self.polls += 1
        return self.polls >= self.limit


@pytest.mark.parametrize("operation", [erode, dilate, feather])
def test_cancel_stops_with_a_clear_error_and_leaves_the_input(operation):
    mask = _levels((2, 1, 30, 30), seed=6)
    before = mask.clone()
    cancel = _CancelAfter(5)
    with pytest.raises(Cancelled, match=f"{'dilate' if operation is feather else operation.__name__} cancelled"):
        operation(mask, 31, cancel=cancel)
    assert cancel.polls == 5 and torch.equal(mask, before)
    assert issubclass(Cancelled, RuntimeError)


def test_cancel_is_polled_at_least_once_per_kernel_row_and_image():
    polls = _CancelAfter(10**9)
    erode(_levels((2, 1, 300, 300), seed=7), 63, cancel=polls)
    assert polls.polls >= 2 * 63


def test_an_exception_raised_by_cancel_propagates():
    class Interrupt(Exception):
        pass

    def interrupt() -> bool:
        raise Interrupt("Processing interrupted")

    with pytest.raises(Interrupt):
        dilate(_square(), 9, cancel=interrupt)


# --- feathering ------------------------------------------------------------------------------------


def test_feather_keeps_the_hole_and_adds_a_soft_edge_outside():
    mask = _square()
    soft = feather(mask, 8)
    assert torch.equal(soft[mask > 0], torch.ones(400))  # never lowered inside the hole
    row = soft[0, 0, 20].tolist()
    assert row[10:30] == [1.0] * 20
    outside = row[2:10]  # the 8 px left of the hole: falls from about 1 to about 0
    assert all(a < b for a, b in zip(outside, outside[1:])) and outside[-1] > 0.99 and outside[0] < 0.05
    assert soft[0, 0, 20, :1].max() == 0 and soft[..., :1, :].max() == 0  # exactly 0 beyond the edge
    assert soft.min() >= 0 and soft.max() <= 1
    assert torch.equal(feather(mask, 0), mask)


@pytest.mark.parametrize("width", [4.0, 10.0, 40.0])
def test_feather_never_uncovers_a_small_hole(width):
    """Feather at or above half the hole's size used to leave the object visible (issue 9)."""
    dot = torch.zeros(1, 1, 101, 101)
    dot[..., 49:52, 49:52] = 1  # 3 px
    soft = feather(dot, width)
    assert torch.equal(soft[..., 49:52, 49:52], torch.ones(1, 1, 3, 3))
    assert 0 < soft[0, 0, 50, 52] < 1 and soft[0, 0, 50, 50 + int(width) + 3] == 0


# --- hole boxes: same boxes as the max-propagation labelling they replaced --------------------------


def _random_masks():
    generator = torch.Generator().manual_seed(8)
    for _ in range(60):
        height, width = (int(v) for v in torch.randint(1, 90, (2,), generator=generator))
        density = float(torch.rand(1, generator=generator)) * 0.2
        yield (torch.rand(height, width, generator=generator) < density).float()
    # Clusters of soft blobs, holes touching every border, lines one cell apart, diagonals.
    blobs = F.max_pool2d((torch.rand(1, 1, 200, 150, generator=generator) < 0.002).float(), 13, 1, 6)[0, 0]
    yield blobs * torch.rand(200, 150, generator=generator)
    border = torch.zeros(61, 77)
    border[0, :] = border[-1, 5:9] = border[20:30, 0] = border[3, -1] = 1
    yield border
    lines = torch.zeros(96, 96)
    lines[::16] = 1
    yield lines
    yield torch.eye(90)
    yield torch.eye(90).flip(1) + torch.eye(90)
    yield torch.zeros(33, 47)
    yield torch.ones(33, 47)
    yield torch.ones(1, 1)


def test_hole_boxes_equal_the_previous_labelling_on_many_masks():
    cases = 0
    for mask in [*_random_masks(), snake(256), snake(200, pitch=10, thick=1), spiral(256), spiral(190, 9, 1)]:
        for margin in (0, 5, 40):
            for cell in (8, 3, 1) if mask.numel() <= 2500 else (8, 5):
                assert hole_boxes(mask, margin, cell=cell) == old_hole_boxes(mask, margin, cell), (mask.shape, margin, cell)
                cases += 1
    assert cases > 500


def test_hole_boxes_of_a_snake_is_one_box_and_dots_are_separate():
    assert hole_boxes(snake(512), 0) == [(0, 0, 500, 512)]
    dots = torch.zeros(300, 300)
    dots[10:14, 10:14] = dots[100:103, 250:260] = dots[290:300, 0:3] = 1
    assert hole_boxes(dots, 0) == [(10, 10, 14, 14), (100, 250, 103, 260), (290, 0, 300, 3)]
    # Context cut off by the image edge comes from the other side.
    assert hole_boxes(dots.bool(), 2) == [(8, 8, 16, 16), (98, 248, 105, 262), (286, 0, 300, 7)]


def test_merging_equals_the_previous_merge_in_any_order():
    generator = torch.Generator().manual_seed(9)
    for _ in range(200):
        n = int(torch.randint(0, 40, (1,), generator=generator))
        corner = torch.randint(0, 60, (n, 2), generator=generator)
        extent = torch.randint(1, 25, (n, 2), generator=generator)
        boxes = [(int(t), int(l), int(t + h), int(l + w)) for (t, l), (h, w) in zip(corner, extent)]
        boxes += boxes[:2]  # duplicates
        assert _merge_overlapping(boxes) == old_merge_overlapping(boxes)
        assert _merge_overlapping(boxes[::-1]) == old_merge_overlapping(boxes)
    # Boxes that only touch are not merged; a chain that only overlaps once grown is.
    assert _merge_overlapping([(0, 0, 5, 5), (5, 0, 9, 5), (0, 5, 5, 9)]) == [(0, 0, 5, 5), (0, 5, 5, 9), (5, 0, 9, 5)]
    assert _merge_overlapping([(0, 0, 4, 4), (3, 3, 6, 6), (0, 5, 2, 9)]) == [(0, 0, 6, 9)]


def test_hole_boxes_separate_merge_and_shift_context_inward():
    hole = torch.zeros(100, 200)
    hole[10:20, 10:30] = 1
    hole[60:90, 150:190] = 1
    boxes = hole_boxes(hole, 5)
    assert boxes == [(5, 5, 25, 35), (55, 145, 95, 195)]
    assert hole_boxes(hole, 5, separate=False) == [(5, 5, 95, 195)]
    assert len(hole_boxes(hole, 60)) == 1  # grown boxes overlap: merged
    # A hole at the edge gets its missing context from the other side.
    edge = torch.zeros(100, 200)
    edge[0:10, 0:10] = 1
    assert hole_boxes(edge, 20) == [(0, 0, 50, 50)]
    assert hole_boxes(torch.zeros(10, 10), 5) == []
    with pytest.raises(ValueError, match="margin"):
        hole_boxes(hole, -1)
    with pytest.raises(ValueError, match="cell: expected 1 to 254 px, got 0"):
        hole_boxes(hole, 0, cell=0)
