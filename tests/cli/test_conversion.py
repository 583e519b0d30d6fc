"""The output plan (what each format keeps of each kind of input) and the pixel conversions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from lama_image_files import cmyk_profile, gray_profile
from lama_multiscale_refine.lama_cli.colour import read_profile, srgb_profile
from lama_multiscale_refine.lama_cli.conversion import compose_output, model_input, plan_output
from lama_multiscale_refine.lama_cli.io import LoadedImage

F32, U16, U8 = np.dtype(np.float32), np.dtype(np.uint16), np.dtype(np.uint8)
GRAY, CMYK = read_profile(gray_profile()), read_profile(cmyk_profile())


def _image(space: str, dtype, *, alpha: bool = False, profile=None, values=None) -> LoadedImage:
    channels = {"grey": 1, "rgb": 3, "cmyk": 4}[space]
    rng = np.random.default_rng(0)
    if values is not None:
        samples = np.asarray(values, dtype).reshape(1, -1, channels)
    elif np.dtype(dtype) == F32:
        samples = rng.random((6, 8, channels), dtype=np.float32)
    else:
        samples = rng.integers(0, np.iinfo(dtype).max + 1, (6, 8, channels), dtype=dtype)
    alpha_channel = np.full(samples.shape[:2], np.iinfo(dtype).max, dtype) if alpha else None
    return LoadedImage(samples, space, alpha_channel, profile, Image.Exif(), 1, samples.shape[:2], None)


@pytest.mark.parametrize(
    ("image", "output_format", "expected", "warnings"),
    [
        (_image("rgb", U8), "png", ("rgb", U8, None), []),
        (_image("rgb", U16), "png", ("rgb", U16, None), []),
        (_image("rgb", U16), "tiff", ("rgb", U16, None), []),
        (_image("rgb", U16), "jpg", ("rgb", U8, None),
         ["16-bit samples reduced to 8-bit: jpg stores 8-bit samples (use --format png or tiff to keep 16-bit)"]),
        (_image("grey", F32), "tiff", ("grey", F32, None), []),
        (_image("grey", F32), "png", ("grey", U16, None),
         ["32-bit float samples reduced to 16-bit: png stores 16-bit, 8-bit samples (use --format tiff to keep 32-bit float)"]),
        (_image("grey", F32), "webp", ("rgb", U8, None),
         ["grey converted to RGB by repeating the grey: webp cannot store grey", "32-bit float samples reduced to 8-bit"]),
        (_image("grey", U8, profile=GRAY), "png", ("grey", U8, "gray"), []),
        (_image("grey", U8, profile=GRAY), "webp", ("rgb", U8, "srgb"),
         ["grey converted to sRGB with its ICC profile 'Test Gray gamma 1.8': webp cannot store grey "
          "(use --format png or tiff or jpg to keep grey)"]),
        (_image("cmyk", U8, profile=CMYK), "png", ("rgb", U8, "srgb"),
         ["CMYK converted to sRGB with its ICC profile 'Test CMYK warm black': png cannot store CMYK "
          "(use --format tiff or jpg to keep CMYK)"]),
        (_image("cmyk", U8, profile=CMYK), "tiff", ("cmyk", U8, "cmyk"), []),
        (_image("cmyk", U8, profile=CMYK), "jpg", ("cmyk", U8, "cmyk"), []),
        (_image("cmyk", U8), "png", ("rgb", U8, None), ["CMYK converted to RGB with the naive formula, no ICC profile"]),
        (_image("cmyk", U8), "tiff", ("cmyk", U8, None), ["CMYK without an ICC profile: the fill is converted"]),
        (_image("cmyk", U16, profile=CMYK), "tiff", ("cmyk", U16, "cmyk"),
         ["16-bit CMYK: the model and its fill work at 8 bits"]),
        (_image("cmyk", U16, profile=CMYK), "png", ("rgb", U8, "srgb"),
         ["CMYK converted to sRGB", "16-bit samples reduced to 8-bit: the colour conversion works at 8 bits"]),
        (_image("grey", F32, values=[-0.5, 0.5, 2.0, np.nan]), "tiff", ("grey", F32, None),
         ["75.00% of the float samples are outside [0, 1] or not finite: the model sees them clipped, "
          "pixels outside the hole keep them"]),
        (_image("grey", F32, values=[0.5, 2.0]), "png", ("grey", U16, None),
         ["32-bit float samples reduced", "50.00% of the float samples are outside [0, 1] or not finite: the model "
          "sees them clipped, the output clips them too"]),
    ],
    ids=lambda value: None if isinstance(value, (LoadedImage, tuple, list)) else value,
)
def test_plan_keeps_what_the_format_can_store_and_says_the_rest(image, output_format, expected, warnings):
    plan = plan_output(image, output_format)

    profiles = {None: None, "gray": GRAY, "cmyk": CMYK, "srgb": srgb_profile()}
    assert (plan.space, plan.sample_type, plan.profile) == (expected[0], expected[1], profiles[expected[2]])
    assert len(plan.warnings) == len(warnings), plan.warnings
    for line, expected_start in zip(plan.warnings, warnings):
        assert expected_start in line


def test_alpha_is_kept_where_the_format_stores_it():
    image = _image("grey", U16, alpha=True)

    assert plan_output(image, "png").alpha and plan_output(image, "png").sample_type == U16
    jpg = plan_output(image, "jpg")
    assert not jpg.alpha and jpg.warnings[-1] == "alpha channel dropped: jpg cannot store it"


def test_kept_samples_are_the_input_and_the_fill_is_quantised_in_the_hole():
    image = _image("rgb", U16, alpha=True)
    hole = np.zeros((6, 8), bool)
    hole[2:4, 3:6] = True
    fill = np.full((6, 8, 3), 0.5, np.float32)

    samples, alpha = compose_output(image, plan_output(image, "png"), fill, hole)

    assert samples.dtype == U16 and np.array_equal(samples[~hole], image.samples[~hole])
    assert (samples[hole] == 32767).all()  # 0.5 * 65535, truncated
    assert alpha is image.alpha or np.array_equal(alpha, image.alpha)
    assert np.array_equal(model_input(image) * 65535, image.samples.astype(np.float32))


def test_grey_fill_is_the_luma_of_the_models_rgb():
    image = _image("grey", F32)
    hole = np.ones((6, 8), bool)
    fill = np.zeros((6, 8, 3), np.float32)
    fill[..., 1] = 1.0  # pure green

    samples, _ = compose_output(image, plan_output(image, "tiff"), fill, hole)

    assert samples.shape == (6, 8, 1) and samples[0, 0, 0] == pytest.approx(38470 / 65536)


def test_cmyk_goes_through_its_profile_both_ways():
    image = _image("cmyk", U8, profile=CMYK)
    cms = ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile()))
    as_srgb = ImageCms.profileToProfile(Image.fromarray(image.samples, "CMYK"), cms, ImageCms.createProfile("sRGB"),
                                        outputMode="RGB")
    hole = np.zeros((6, 8), bool)
    hole[1:3, 1:4] = True

    assert np.array_equal(model_input(image) * 255, np.asarray(as_srgb).astype(np.float32))
    # Written as CMYK, the fill goes back through the profile and the rest stays the input.
    samples, _ = compose_output(image, plan_output(image, "tiff"), model_input(image), hole)
    assert np.array_equal(samples[~hole], image.samples[~hole])
    back = ImageCms.profileToProfile(as_srgb, ImageCms.createProfile("sRGB"), cms, outputMode="CMYK")
    assert np.array_equal(samples[hole], np.asarray(back)[hole])
    # Written as RGB, every pixel is the profile's conversion.
    samples, _ = compose_output(image, plan_output(image, "png"), None, hole)
    assert np.array_equal(samples, np.asarray(as_srgb))
    assert not np.array_equal(samples, np.asarray(Image.fromarray(image.samples, "CMYK").convert("RGB")))
