"""refine.plan: one plan, executed as planned; auto mode; time budgets; memory; boxes on the grid."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch

from lama_multiscale_refine.ffc import fuse_for_inference
from lama_testing import image_from_case, marginal_bytes_per_pixel, random_generator
from lama_multiscale_refine.refine import RefinePlan, RefineSettings, auto_scales, estimate_refine_bytes, plan, plan_scales, refine
from lama_multiscale_refine.refine.timing import Rate, TimeProfile

planner = importlib.import_module("lama_multiscale_refine.refine.plan")  # the module (refine.plan is also the function)

# Big-LaMa-like CPU costs: a fixed cost per forward, so that many small boxes are worth merging.
FIXED_COST = TimeProfile(Rate(0.05, 1e-5), Rate(0.1, 2e-5), Rate(0.12, 3e-5), "test")


def _image(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _mask(height: int, width: int, *boxes: tuple[int, int, int, int], batch: int = 1) -> torch.Tensor:
    mask = torch.zeros(batch, 1, height, width)
    for top, left, bottom, right in boxes:
        mask[..., top:bottom, left:right] = 1
    return mask


LAYOUTS = {
    "one hole, whole image": ((64, 80), [(20, 30, 44, 60)], {}),
    "two holes, crop": ((96, 128), [(8, 8, 20, 24), (70, 100, 86, 120)], {"crop_to_mask": True, "crop_margin": 12}),
    "two holes, no crop": ((96, 128), [(8, 8, 20, 24), (70, 100, 86, 120)], {}),
    "two holes, one box": ((96, 128), [(8, 8, 20, 24), (70, 100, 86, 120)],
                           {"crop_to_mask": True, "crop_margin": 12, "separate_holes": False}),
    "odd size, hole at the border": ((67, 93), [(40, 70, 67, 93)], {}),
    "odd size, crop at the border": ((67, 93), [(0, 0, 12, 15), (50, 80, 67, 93)], {"crop_to_mask": True, "crop_margin": 6}),
    "pixel budget": ((96, 120), [(30, 40, 70, 90)], {"px_budget": 3000}),
    "pixel budget, crop": ((96, 120), [(30, 40, 70, 90)], {"px_budget": 1500, "crop_to_mask": True, "crop_margin": 10}),
    "mask touching every border": ((64, 64), [(0, 0, 64, 3), (61, 0, 64, 64), (0, 0, 64, 2), (0, 62, 64, 64)],
                                   {"crop_to_mask": True, "crop_margin": 4}),
    "three scales": ((128, 128), [(40, 40, 90, 90)], {"n_scales": 3}),
    "checkpointing on": ((64, 80), [(20, 30, 44, 60)], {"checkpointing": "on"}),
    "auto, large hole": ((160, 176), [(30, 30, 130, 150)], {"mode": "auto"}),
    "auto, small holes": ((400, 416), [(20, 20, 40, 40), (350, 370, 370, 390)], {"mode": "auto", "crop_margin": 8}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_planned_forwards_are_the_forwards_that_run(small_generator, layout):
    (height, width), holes, options = LAYOUTS[layout]
    image, mask = _image(height, width), _mask(height, width, *holes)
    settings = RefineSettings(**{"n_iters": 2, "min_side": 16, "max_scales": 2, **options})
    made = plan(small_generator, image, mask, settings)
    seen: list[dict] = []
    result, reports = refine(small_generator, image, mask, plan=made, callback=seen.append)
    assert made.forwards == len(seen) == sum(r.iterations for r in reports) > 0
    assert [info["forward"] for info in seen] == list(range(1, made.forwards + 1))
    assert all(info["n_forwards"] == made.forwards for info in seen)
    assert [r.box for r in reports[0].regions] == [region.box for region in made.regions]
    assert [r.work_size for r in reports[0].regions] == [u.work_size for u in made.units]
    known = (mask == 0).expand_as(image)
    assert torch.equal(result[known], image[known])  # unmasked pixels bit-identical
    # refine() without a plan makes the same plan.
    again, _ = refine(small_generator, image, mask, settings)
    assert torch.equal(again, result)


def test_batches_with_an_empty_image(small_generator):
    image, mask = _image(64, 80, batch=3), _mask(64, 80, (10, 10, 30, 40), batch=3)
    mask[1].zero_()
    made = plan(small_generator, image, mask, RefineSettings(n_iters=2, min_side=16))
    assert made.images[1].skipped == "empty mask" and not made.images[1].regions
    assert made.forwards == 2 * (1 + 2 * 2)  # 3 scales: 1 + n_iters per finer scale
    assert any("image 1: the mask is empty" in n.text for n in made.notes)
    seen: list[dict] = []
    result, reports = refine(small_generator, image, mask, plan=made, callback=seen.append)
    assert len(seen) == made.forwards and reports[1].skipped and torch.equal(result[1], image[1])


def test_a_plan_for_an_empty_mask(small_generator):
    image = _image(64, 80)
    made = plan(small_generator, image, torch.zeros(1, 1, 64, 80))
    assert made.forwards == 0 and made.predicted_seconds == 0 and made.predicted_peak_bytes == 0
    assert str(made) == "nothing to refine (empty mask)"
    result, reports = refine(small_generator, image, torch.zeros(1, 1, 64, 80), plan=made)
    assert torch.equal(result, image) and reports[0].skipped == "empty mask"


def test_summary_and_json(small_generator):
    image, mask = _image(96, 128), _mask(96, 128, (20, 30, 70, 100))
    made = plan(small_generator, image, mask, RefineSettings(n_iters=15, min_side=48))
    assert isinstance(made, RefinePlan)
    assert made.forwards == 1 + 15 and made.units[0].scales == ((48, 64), (96, 128))
    assert made.predicted_peak_bytes == made.units[0].estimate.total > 0
    assert made.predicted_seconds > 0 and math.isfinite(made.predicted_seconds)
    text = str(made)
    assert text.startswith("2 scales 64->128, 16 forwards, ~1 s, ~") and text.endswith("MiB")
    data = json.loads(json.dumps(made.to_dict()))
    assert data["forwards"] == 16 and data["images"][0]["regions"][0]["units"][0]["scales"] == [[48, 64], [96, 128]]
    assert data["time_source"].startswith("measured on cpu")


def test_one_scale_is_said_in_both_modes(small_generator):
    image, mask = _image(64, 80), _mask(64, 80, (20, 30, 44, 60))
    paper = plan(small_generator, image, mask, RefineSettings())
    assert paper.forwards == 1 and "no refinement: plain LaMa" in str(paper)
    assert any("1 scale for 80x64 with min_side 512" in n.text and n.level == "warning" for n in paper.notes)
    auto = plan(small_generator, image, mask, RefineSettings(mode="auto"))
    assert any("refinement would change nothing" in n.text for n in auto.notes)


@pytest.mark.parametrize(("side", "scales"), [(300, 1), (362, 1), (363, 2), (600, 2), (768, 3), (1024, 3),
                                              (1536, 4), (2048, 4), (4096, 5), (8192, 6), (20000, 6)])
def test_auto_scales_put_the_coarsest_level_near_256(side, scales):
    assert auto_scales(side, side) == scales
    assert auto_scales(side, 3 * side) == scales  # the short side decides
    if scales > 1:
        assert 181 <= side // 2 ** (scales - 1) <= 362 or scales == planner.AUTO_MAX_SCALES


def _photo(side: int, hole: float, centred: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A full-size image stand-in (only its shape is used) and a square hole of ``hole`` of the area."""
    image = torch.zeros(1, 3, 1, 1).expand(1, 3, side, side)
    size = int(side * hole**0.5)
    top = (side - size) // 2 if centred else side // 8
    return image, _mask(side, side, (top, top, top + size, top + size))


# What auto chooses for photos with an object-sized (5 %) and a large (40 %) square hole, default
# settings (px_budget 1.8 MP, crop_margin 128), memory not limiting: crop box (side), working
# side, level sides.
AUTO_CHOICES = [
    (600, 0.05, 400, 400, (200, 400)),
    (600, 0.40, None, 600, (300, 600)),
    (1024, 0.05, 496, 496, (248, 496)),
    (1024, 0.40, None, 1024, (256, 512, 1024)),
    (2048, 0.05, 720, 720, (360, 720)),
    (2048, 0.40, None, 1341, (335, 670, 1341)),  # over the budget: refined at 1341 px, the fill upscaled
    (4096, 0.05, 1184, 1184, (296, 592, 1184)),
    (4096, 0.40, 2880, 1341, (335, 670, 1341)),  # the box covers 49 % of the photo: cropped
]


@pytest.mark.parametrize(("side", "hole", "crop", "work", "levels"), AUTO_CHOICES)
def test_auto_chooses_crop_and_scales(small_generator, side, hole, crop, work, levels):
    image, mask = _photo(side, hole, centred=hole > 0.1)
    made = plan(small_generator, image, mask, RefineSettings(mode="auto"), free_bytes=None)
    (region,) = made.regions
    box_side = region.box[2] - region.box[0]
    assert (box_side if crop is not None else None) == crop and (crop is None) == (box_side == side)
    unit = region.units[0]
    assert unit.work_size == (work, work) and tuple(max(hw) for hw in unit.scales) == levels
    assert made.forwards == 1 + 15 * (len(levels) - 1)
    assert any(("auto crops" if crop else "auto refines the whole image") in n.text for n in made.notes)


def test_auto_fits_max_seconds_by_lowering_iterations_then_size_then_scales(small_generator):
    image = torch.zeros(1, 3, 1, 1).expand(1, 3, 720, 736)  # 2 scales down to ~512 px
    mask = _mask(720, 736, (50, 50, 650, 680))
    auto = RefineSettings(mode="auto")
    free = plan(small_generator, image, mask, auto, timing=FIXED_COST)
    full = free.predicted_seconds
    assert free.units[0].n_iters == 15 and free.units[0].n_scales == 2

    fewer = plan(small_generator, image, mask, RefineSettings(mode="auto", max_seconds=full * 0.6), timing=FIXED_COST)
    assert 5 <= fewer.units[0].n_iters < 15 and fewer.predicted_seconds <= full * 0.6
    assert fewer.units[0].work_size == (720, 736)
    assert any("n_iters lowered from 15 to" in n.text for n in fewer.notes)

    min_iters = plan(small_generator, image, mask, RefineSettings(mode="auto", n_iters=5), timing=FIXED_COST)
    smaller = plan(small_generator, image, mask, RefineSettings(mode="auto", max_seconds=min_iters.predicted_seconds * 0.9),
                   timing=FIXED_COST)
    assert smaller.units[0].n_iters == 5 and smaller.units[0].work_size < (720, 736)
    assert smaller.units[0].n_scales == 2 and any("and the working size to" in n.text for n in smaller.notes)

    none = plan(small_generator, image, mask, RefineSettings(mode="auto", max_seconds=0.01), timing=FIXED_COST)
    assert none.units[0].n_scales == 1 and none.units[0].work_size == (720, 736) and none.forwards == 1
    assert any("too short for any refinement" in n.text for n in none.notes)


@pytest.mark.parametrize("value", [0, 0.0, -5, float("nan"), float("inf"), "60", True])
def test_nonsense_time_budgets_are_refused(small_generator, value):
    with pytest.raises(ValueError, match="max_seconds: expected None"):
        plan(small_generator, _image(64, 80), _mask(64, 80, (1, 1, 9, 9)), RefineSettings(mode="auto", max_seconds=value))


def test_paper_mode_ignores_max_seconds_and_says_so(small_generator):
    made = plan(small_generator, _image(64, 80), _mask(64, 80, (10, 10, 30, 30)),
                RefineSettings(min_side=16, max_seconds=1e-6))
    assert made.units[0].n_iters == 15
    assert any("max_seconds is used by mode auto only" in n.text for n in made.notes)


def test_many_tiny_holes_are_merged_when_that_is_cheaper(small_generator):
    side = 1024
    mask = torch.zeros(1, 1, side, side)
    g = torch.Generator().manual_seed(3)
    for y, x in torch.randint(0, side - 3, (300, 2), generator=g).tolist():
        mask[..., y : y + 2, x : x + 2] = 1
    image = torch.zeros(1, 3, 1, 1).expand(1, 3, side, side)
    found = len(__import__("ffc").masks.hole_boxes(mask[0, 0], 8))
    settings = RefineSettings(n_iters=15, min_side=256, crop_to_mask=True, crop_margin=8)
    made = plan(small_generator, image, mask, settings, timing=FIXED_COST, free_bytes=None)
    whole = plan(small_generator, image, mask, RefineSettings(n_iters=15, min_side=256), timing=FIXED_COST,
                 free_bytes=None)
    assert found > 200 and len(made.regions) < found / 4
    assert made.predicted_seconds <= whole.predicted_seconds
    assert made.predicted_seconds < found * made.units[0].forwards * FIXED_COST.step.fixed  # vs one box per hole
    assert any(n.text.startswith(f"image 0: merged {found} hole boxes into {len(made.regions)}") for n in made.notes)


def test_far_apart_holes_stay_separate_when_that_is_cheaper(small_generator):
    mask = _mask(1024, 1024, (10, 10, 40, 40), (980, 980, 1010, 1010))
    image = torch.zeros(1, 3, 1, 1).expand(1, 3, 1024, 1024)
    made = plan(small_generator, image, mask, RefineSettings(crop_to_mask=True, crop_margin=16), timing=FIXED_COST,
                free_bytes=None)
    assert len(made.regions) == 2


@pytest.mark.parametrize("options", [{"min_side": 16, "max_scales": 2}, {"n_scales": 3}, {"mode": "auto"}])
def test_crop_boxes_are_on_the_grid_of_every_level(small_generator, options):
    height, width = 203, 341
    mask = _mask(height, width, (37, 51, 61, 99), (150, 260, 190, 330))
    settings = RefineSettings(crop_to_mask=True, crop_margin=13, **options)
    made = plan(small_generator, _image(height, width), mask, settings)
    for unit in made.units:
        grid = 8 * 2 ** (unit.n_scales - 1)
        top, left, bottom, right = unit.box
        assert top % grid == 0 and left % grid == 0
        assert bottom % grid == 0 or bottom == height
        assert right % grid == 0 or right == width


def test_snapped_crops_agree_with_the_whole_image(tiny_generator, load_case):
    """The issue's measurement: a crop off the stride grid differs visibly from the whole-image fill."""
    image, _ = image_from_case(load_case("refine_2scales"))
    mask = _mask(512, 512, (120, 140, 170, 200))
    hole = mask.bool().expand(-1, 3, -1, -1)
    settings = RefineSettings(n_iters=3, n_scales=2, checkpointing="off")
    whole, _ = refine(tiny_generator, image, mask, settings)
    cropped, reports = refine(tiny_generator, image, mask, RefineSettings(
        n_iters=3, n_scales=2, checkpointing="off", crop_to_mask=True, crop_margin=40))
    (region,) = reports[0].regions
    assert region.box[0] % 16 == 0 and region.box[1] % 16 == 0 and region.box != (0, 0, 512, 512)
    diff = (cropped - whole).abs()[hole]
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 0.03  # measured: 9.1e-4 / 0.011
    # The same box shifted off the grid by 8 px: an order of magnitude worse (measured 0.015 / 0.25).
    top, left, bottom, right = region.box
    off = (top - 8, left + 4, bottom, right)
    crop, _ = refine(tiny_generator, image[..., off[0]:off[2], off[1]:off[3]].contiguous(),
                     mask[..., off[0]:off[2], off[1]:off[3]].contiguous(), settings)
    shifted = whole.clone()
    shifted[..., off[0]:off[2], off[1]:off[3]] = crop
    assert float((shifted - whole).abs()[hole].mean()) > 5 * float(diff.mean())


def test_memory_checkpointing_only_when_the_estimate_is_smaller():
    generator = random_generator(ngf=8, n_blocks=6)
    image, mask = _image(320, 320), _mask(320, 320, (100, 100, 200, 200))
    settings = RefineSettings(n_iters=2, min_side=32)
    fused = fuse_for_inference(generator)
    plain_bytes = estimate_refine_bytes(fused, 320, 320).total
    saved_bytes = estimate_refine_bytes(fused, 320, 320, checkpoint_rear=True).total
    free = int(plain_bytes * 0.95 / settings.memory_fraction)
    made = plan(generator, image, mask, settings, free_bytes=free)
    unit = made.units[0]
    if saved_bytes < plain_bytes * 0.95:
        assert unit.checkpoint_rear and unit.work_size == (320, 320)
        assert any("checkpointing the rear" in n.text for n in made.notes)
    else:  # checkpointing would need more: never chosen, the size goes down instead
        assert not unit.checkpoint_rear and unit.work_size < (320, 320)
        assert any("lowering the pixel budget" in n.text for n in made.notes)
    # The eager model keeps every activation: there checkpointing is smaller, and chosen.
    eager = RefineSettings(n_iters=2, min_side=32, fused=False)
    need = estimate_refine_bytes(generator, 320, 320)
    need_saved = estimate_refine_bytes(generator, 320, 320, checkpoint_rear=True)
    assert need_saved.total < need.total
    made = plan(generator, image, mask, eager, free_bytes=int((need.total + need_saved.total) / 2 / eager.memory_fraction))
    assert made.units[0].checkpoint_rear and made.units[0].work_size == (320, 320)
    assert unit.predicted_peak_bytes <= free * settings.memory_fraction or unit.work_size[0] * unit.work_size[1] <= 256**2


def test_plans_are_checked_against_what_they_were_made_for(small_generator):
    image, mask = _image(64, 80), _mask(64, 80, (10, 10, 30, 30))
    made = plan(small_generator, image, mask, RefineSettings(min_side=16, n_iters=2))
    with pytest.raises(ValueError, match="plan: made for another mask"):
        refine(small_generator, image, _mask(64, 80, (10, 10, 31, 30)), plan=made)
    with pytest.raises(ValueError, match="plan: made for 1 images of 80x64"):
        refine(small_generator, _image(64, 96), _mask(64, 96, (1, 1, 5, 5)), plan=made)
    with pytest.raises(ValueError, match="other settings"):
        refine(small_generator, image, mask, RefineSettings(), plan=made)


@pytest.mark.parametrize(("dtype", "precision", "message"), [
    (torch.float16, "fp32", "float16 weights are not supported"),
    (torch.float16, "bf16", "float16 weights are not supported"),
    (torch.bfloat16, "fp32", "bfloat16 weights need precision='bf16'"),
])
def test_half_precision_generators_get_a_clear_error(dtype, precision, message):
    generator = random_generator().to(dtype)
    image, mask = _image(64, 80), _mask(64, 80, (10, 10, 30, 30))
    with pytest.raises(ValueError, match=message):
        refine(generator, image, mask, RefineSettings(precision=precision, min_side=16, n_iters=2))


def test_bfloat16_generator_with_bf16_precision_runs():
    generator = random_generator().to(torch.bfloat16)
    image, mask = _image(64, 80), _mask(64, 80, (10, 10, 30, 30))
    result, _ = refine(generator, image, mask, RefineSettings(precision="bf16", min_side=16, n_iters=2))
    known = (mask == 0).expand_as(image)
    assert result.dtype == image.dtype and torch.equal(result[known], image[known]) and torch.isfinite(result).all()


def test_plan_scales_is_the_official_rule():
    assert plan_scales(724, 900, RefineSettings()) == 1
    assert plan_scales(725, 900, RefineSettings()) == 2


def test_full_size_buffers_of_a_resized_refinement_are_what_the_plan_counts(small_generator):
    sizes = (512, 1024)
    settings = RefineSettings(n_iters=2, min_side=16, max_scales=2, checkpointing="off", px_budget=128 * 128)
    scenes = {s: (_image(s, s), _mask(s, s, (s // 8, s // 8, 7 * s // 8, 7 * s // 8))) for s in sizes}
    plans = {s: plan(small_generator, *scenes[s], settings) for s in sizes}  # (its probes profile on their own)
    measured = marginal_bytes_per_pixel(lambda s: refine(small_generator, *scenes[s], plan=plans[s]), sizes)
    assert 12 < measured <= planner.RESIZED_FULL_SIZE_BYTES_PER_PIXEL, measured  # 12: the output itself
    (unit,) = plans[1024].units
    working = estimate_refine_bytes(fuse_for_inference(small_generator), *unit.work_size).total
    assert unit.resized and unit.predicted_peak_bytes - working == planner.RESIZED_FULL_SIZE_BYTES_PER_PIXEL * 1024**2


def test_a_crop_within_the_budget_counts_the_whole_image_output_and_hole(small_generator):
    settings = RefineSettings(n_iters=2, min_side=16, max_scales=2, checkpointing="off", crop_to_mask=True)
    made = plan(small_generator, _image(1024, 1024), _mask(1024, 1024, (500, 500, 540, 560)), settings)
    (unit,) = made.units
    assert not unit.resized and unit.box != (0, 0, 1024, 1024)
    working = estimate_refine_bytes(fuse_for_inference(small_generator), *unit.work_size).total
    assert unit.predicted_peak_bytes - working == planner.IMAGE_BYTES_PER_PIXEL * 1024**2
