"""Issue 9 section 2 end to end: files the command line used to ruin while reporting success.

Each case writes its input here, runs ``main()`` with the tiny fixture model, and reads the output
back with code independent of the command line (``lama_image_files``) to check it at the input's own
precision: every unmasked sample unchanged when the output keeps the input's type and colour
space, and every difference a warning on the file's line and in the summary.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from lama_multiscale_refine.lama_cli import cli as lama_cli_module
from lama_image_files import cmyk_profile, gray_profile, read_png, read_tiff, write_png16, write_tiff16
from lama_multiscale_refine.lama_cli.io import TEMPORARY_SUFFIX, temporary_path

REPO = Path(__file__).resolve().parents[2]
H, W = 48, 64
HOLE = np.zeros((H, W), bool)
HOLE[12:36, 16:48] = True


@pytest.fixture()
def pair(ws, model_file, run_cli):
    """``pair(image_name, *options, mask=...)``: the image written by the test plus a box mask; runs the CLI."""

    def run(image_name: str, *options, mask: np.ndarray | None = None, output: str = "out"):
        if mask is None:
            Image.fromarray(HOLE.astype(np.uint8) * 255).save(ws.path("in/mask.png"))
        else:
            Image.fromarray(mask).save(ws.path("in/mask.png"))
        return run_cli("--model", model_file, "--image", ws.path(f"in/{image_name}"), "--mask", ws.path("in/mask.png"),
                       "-o", ws.path(output), *options)

    ws.path("in").mkdir()
    return run


def _warnings(result) -> list[str]:
    return [line.split(": warning: ", 1)[1] for line in result.err.splitlines() if ": warning: " in line]


def _summary_warnings(result) -> list[str]:
    lines = result.err[result.err.index("Summary:"):].splitlines()
    if "warnings:" not in lines:
        return []
    section = lines[lines.index("warnings:") + 1:]
    return [line.split(": ", 1)[1] for line in section if line.startswith("  ")]


def _assert_kept_and_filled(output: np.ndarray, source: np.ndarray) -> None:
    assert output.dtype == source.dtype and output.shape == source.shape
    assert np.array_equal(output[~HOLE], source[~HOLE])  # bit for bit at the input's precision
    assert not np.array_equal(output[HOLE], source[HOLE])


@pytest.mark.parametrize(("source_name", "output_format"), [("grey16.png", "tiff"), ("grey16.tif", "png")])
def test_16_bit_grey_keeps_every_unmasked_sample(ws, pair, source_name, output_format):
    # Uniform 16-bit noise: 99.6% of it is above 255, which the old 8-bit path turned white.
    grey = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(grey).save(ws.path(f"in/{source_name}"))

    result = pair(source_name, "--format", output_format)

    assert result.code == 0, result.err
    stem = source_name.split(".")[0]
    output = read_png(ws.path(f"out/{stem}.png"))[0] if output_format == "png" else read_tiff(ws.path(f"out/{stem}.tif"))[0]
    _assert_kept_and_filled(output[..., 0], grey)
    assert _warnings(result) == []


# Every decoder byte order is pinned in test_formats.py; here each kind of file once, into each format.
@pytest.mark.parametrize(
    ("source_name", "channels", "writer", "output_format"),
    [("rgb16.png", 3, "png", "tiff"), ("rgba16.png", 4, "png", "png"), ("greyalpha16.png", 2, "png", "png"),
     ("greyalpha16.png", 2, "png", "tiff"), ("rgb16le.tif", 3, "tiff", "png"), ("rgb16be.tif", 3, "tiff-be", "tiff"),
     ("rgba16.tif", 4, "tiff-deflate", "tiff")],
)
def test_16_bit_colour_stays_16_bit(ws, pair, source_name, channels, writer, output_format):
    source = np.random.default_rng(channels).integers(0, 65536, (H, W, channels), dtype=np.uint16)
    if writer == "png":
        write_png16(ws.path(f"in/{source_name}"), source)
    else:
        write_tiff16(ws.path(f"in/{source_name}"), source, big_endian=writer == "tiff-be", deflate=writer == "tiff-deflate")

    result = pair(source_name, "--format", output_format)

    assert result.code == 0, result.err
    stem = source_name.split(".")[0]
    output = read_png(ws.path(f"out/{stem}.png"))[0] if output_format == "png" else read_tiff(ws.path(f"out/{stem}.tif"))[0]
    colour = channels - (channels in (2, 4))
    _assert_kept_and_filled(output[..., :colour], source[..., :colour])
    assert np.array_equal(output[..., colour:], source[..., colour:])  # alpha passed through, 16-bit
    assert _warnings(result) == []


def test_float_tiff_stays_float_in_tiff_and_says_what_png_does(ws, pair):
    values = np.random.default_rng(2).random((H, W), dtype=np.float32)
    Image.fromarray(values).save(ws.path("in/float.tif"))

    as_tiff = pair("float.tif", output="result/float.tif")
    assert as_tiff.code == 0, as_tiff.err
    with Image.open(ws.path("result/float.tif")) as image:
        assert image.mode == "F"
        kept = np.asarray(image)
    _assert_kept_and_filled(kept, values)
    assert ((kept[HOLE] >= 0) & (kept[HOLE] <= 1)).all()
    assert _warnings(as_tiff) == []

    as_png = pair("float.tif")
    assert as_png.code == 0, as_png.err
    reduced = read_png(ws.path("out/float.png"))[0][..., 0]
    assert reduced.dtype == np.uint16
    assert np.array_equal(reduced[~HOLE], np.round(values[~HOLE].astype(np.float64) * 65535))
    expected = ("32-bit float samples reduced to 16-bit: png stores 16-bit, 8-bit samples "
                "(use --format tiff to keep 32-bit float)")
    assert _warnings(as_png) == [expected] and _summary_warnings(as_png) == [expected]


def test_float_values_outside_the_unit_range_are_kept_and_reported(ws, pair):
    values = np.random.default_rng(3).random((H, W), dtype=np.float32) * 3 - 1
    values[0, 0] = np.nan
    Image.fromarray(values).save(ws.path("in/hdr.tif"))

    result = pair("hdr.tif", "--format", "tiff")

    assert result.code == 0, result.err
    output = read_tiff(ws.path("out/hdr.tif"))[0][..., 0]
    assert np.array_equal(output[~HOLE], values[~HOLE], equal_nan=True)
    assert np.isfinite(output[HOLE]).all() and output[HOLE].min() >= 0 and output[HOLE].max() <= 1
    [warning] = _warnings(result)
    assert "% of the float samples are outside [0, 1] or not finite: the model sees them clipped, " \
           "pixels outside the hole keep them" in warning


def test_16_bit_into_an_8_bit_format_says_so(ws, pair):
    Image.fromarray(np.random.default_rng(4).integers(0, 65536, (H, W), dtype=np.uint16)).save(ws.path("in/g.png"))

    result = pair("g.png", "--format", "jpg")

    assert result.code == 0, result.err
    assert _warnings(result) == ["16-bit samples reduced to 8-bit: jpg stores 8-bit samples "
                                 "(use --format png or tiff to keep 16-bit)"]


def _space(icc: bytes | None) -> str | None:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip() if icc else None


def test_grey_with_a_profile_keeps_it_or_is_converted_with_it(ws, pair):
    grey = np.random.default_rng(5).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(grey).save(ws.path("in/grey.png"), icc_profile=gray_profile())

    kept = pair("grey.png")
    assert kept.code == 0, kept.err
    with Image.open(ws.path("out/grey.png")) as image:
        assert image.mode == "L" and image.info["icc_profile"] == gray_profile()
        _assert_kept_and_filled(np.asarray(image), grey)

    converted = pair("grey.png", "--format", "webp")
    assert converted.code == 0, converted.err
    with Image.open(ws.path("out/grey.webp")) as image:
        assert image.mode == "RGB" and _space(image.info["icc_profile"]) == "RGB"  # not the GRAY profile
        srgb = ImageCms.profileToProfile(Image.fromarray(grey), ImageCms.ImageCmsProfile(io.BytesIO(gray_profile())),
                                         ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"])), outputMode="RGB")
        assert np.array_equal(np.asarray(image)[~HOLE], np.asarray(srgb)[~HOLE])
    assert _warnings(converted)[0].startswith("grey converted to sRGB with its ICC profile 'Test Gray gamma 1.8'")


@pytest.mark.parametrize("source_name", ["cmyk.tif", "cmyk.jpg"])
def test_cmyk_is_converted_with_its_profile_or_kept_as_cmyk(ws, pair, source_name):
    cmyk = np.random.default_rng(6).integers(0, 256, (H, W, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(ws.path(f"in/{source_name}"), icc_profile=cmyk_profile(),
                                       **({"quality": 100} if source_name.endswith("jpg") else {}))

    as_png = pair(source_name)
    assert as_png.code == 0, as_png.err
    with Image.open(ws.path("out/cmyk.png")) as image:
        assert image.mode == "RGB" and _space(image.info["icc_profile"]) == "RGB"
        rgb, tag = np.asarray(image), image.info["icc_profile"]
    with Image.open(ws.path(f"in/{source_name}")) as image:
        stored, naive = np.asarray(image), np.asarray(image.convert("RGB"))
        # From the input's profile into the sRGB profile the output is tagged with.
        managed = np.asarray(ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile())),
                                                       ImageCms.ImageCmsProfile(io.BytesIO(tag)), outputMode="RGB"))
    assert np.array_equal(rgb[~HOLE], managed[~HOLE]) and not np.array_equal(rgb[~HOLE], naive[~HOLE])
    assert _warnings(as_png) == ["CMYK converted to sRGB with its ICC profile 'Test CMYK warm black': png cannot "
                                 "store CMYK (use --format tiff or jpg to keep CMYK)"]

    as_tiff = pair(source_name, "--format", "tiff")
    assert as_tiff.code == 0, as_tiff.err
    with Image.open(ws.path("out/cmyk.tif")) as image:
        assert image.mode == "CMYK" and image.info["icc_profile"] == cmyk_profile()
        _assert_kept_and_filled(np.asarray(image), stored)
    assert _warnings(as_tiff) == []


def test_16_bit_cmyk_tiff_keeps_its_16_bits_outside_the_hole(ws, pair):
    cmyk = np.random.default_rng(9).integers(0, 65536, (H, W, 4), dtype=np.uint16)
    write_tiff16(ws.path("in/c16.tif"), cmyk, cmyk=True, icc_profile=cmyk_profile())

    result = pair("c16.tif", "--format", "tiff")

    assert result.code == 0, result.err
    output, tags = read_tiff(ws.path("out/c16.tif"))
    assert tags[262] == 5 and tags[34675] == cmyk_profile()
    _assert_kept_and_filled(output, cmyk)
    assert _warnings(result) == ["16-bit CMYK: the model and its fill work at 8 bits (the colour conversion); "
                                 "pixels outside the hole keep their 16-bit"]


def test_mask_drawn_on_a_transparent_layer_fills_only_the_strokes(ws, pair):
    image = ws.image("in/photo.png")
    layer = np.full((H, W, 4), 255, np.uint8)  # white everywhere, opaque only in the hole
    layer[..., 3] = np.where(HOLE, 255, 0)

    result = pair("photo.png", mask=layer)

    assert result.code == 0, result.err
    output = ws.read("out/photo.png")
    _assert_kept_and_filled(output, image)  # before: 100% of the image was repainted
    expected = ("mask alpha used: 75.0% of its pixels are not black but (partly) transparent; "
                "they count as drawn over black")
    assert _warnings(result) == [expected] and _summary_warnings(result) == [expected]


def _jpeg_with_exif(path: Path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "TestCam", orientation
    exif[0x8769] = {0x9003: "2024:05:06 07:08:09"}
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)


@pytest.mark.parametrize("output_format", ["png", "tiff", "jpg", "webp"])
def test_exif_is_kept_with_the_orientation_applied_and_set_to_1(ws, pair, output_format):
    stored = np.random.default_rng(7).integers(0, 256, (W, H, 3), dtype=np.uint8)  # portrait, shown landscape
    _jpeg_with_exif(ws.path("in/photo.jpg"), stored, orientation=6)
    with Image.open(ws.path("in/photo.jpg")) as image:
        shown = np.asarray(ImageOps.exif_transpose(image))

    result = pair("photo.jpg", "--format", output_format)

    assert result.code == 0, result.err
    extension = {"tiff": "tif"}.get(output_format, output_format)
    with Image.open(ws.path(f"out/photo.{extension}")) as image:
        exif = image.getexif()
        assert exif[0x010F] == "TestCam" and exif[0x0112] == 1
        assert exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
        if output_format != "jpg":
            assert np.array_equal(np.asarray(image)[~HOLE], shown[~HOLE])
    assert _warnings(result) == ["image EXIF orientation 6: rotated 90° clockwise, applied to the pixels; "
                                 "the output's orientation tag is 1"]


def test_size_mismatch_after_the_exif_rotation_says_so(ws, pair):
    _jpeg_with_exif(ws.path("in/photo.jpg"), np.zeros((W, H, 3), np.uint8), orientation=6)

    result = pair("photo.jpg", mask=np.zeros((W, H), np.uint8))  # drawn over the stored, unrotated pixels

    assert result.code == 1
    assert ("FAILED: mask mask.png is 48x64 px but image photo.jpg is 64x48 px as shown (stored 48x64 px, "
            "EXIF orientation 6: rotated 90° clockwise); masks are matched to the image as viewers show it") in result.err


def test_unwritable_output_folder_fails_before_the_model_loads(ws, pair, monkeypatch):
    loads = []
    monkeypatch.setattr(lama_cli_module, "load_generator", lambda *a, **k: loads.append(a))
    ws.image("in/photo.png")
    ws.path("in/notes.txt").write_text("a file, so no folder can be made under it")

    result = pair("photo.png", output="in/notes.txt/out")

    assert result.code == 1
    assert "error: cannot write to the output folder" in result.err and "notes.txt" in result.err
    assert loads == [] and "model:" not in result.err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a POSIX user that permissions apply to")
def test_read_only_output_folder_fails_before_the_model_loads(ws, pair, monkeypatch):
    loads = []
    monkeypatch.setattr(lama_cli_module, "load_generator", lambda *a, **k: loads.append(a))
    ws.image("in/photo.png")
    ws.path("locked").mkdir(mode=0o500)

    result = pair("photo.png", output="locked")

    assert result.code == 1 and "cannot write to the output folder" in result.err and loads == []


def test_stale_temporary_file_of_a_killed_run_is_removed(ws, pair):
    ws.image("in/photo.png")
    ws.path("out").mkdir()
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host = temporary_path(ws.path("out/x")).name.split(".")[-4]
    stale = ws.path(f"out/.photo.png.{host}.{process.pid}{TEMPORARY_SUFFIX}")
    stale.write_bytes(b"half a file")

    result = pair("photo.png")

    assert result.code == 0, result.err
    assert f"removed {stale.name}: a temporary file left by an interrupted run" in result.err
    assert sorted(p.name for p in ws.path("out").iterdir()) == ["photo.png"]


_SIGTERM_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys
    import PIL.Image

    def save(self, file, *args, **kwargs):  # half a file, then the signal
        file.write(b"half a file")
        os.kill(os.getpid(), signal.SIGTERM)

    PIL.Image.Image.save = save
    from lama_multiscale_refine.lama_cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_while_saving_leaves_no_file_and_exits_143(ws, model_file):
    ws.image("in/photo.png")
    ws.mask("in/photo_mask.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    argv = ["--model", model_file, "--image", ws.path("in/photo.png"), "--mask", ws.path("in/photo_mask.png"),
            "-o", ws.path("out")]

    process = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_SAVING, *map(str, argv)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)

    assert process.returncode == 143, process.stderr
    assert "Terminated (SIGTERM) after 0 of 1 files (0 done)" in process.stderr
    assert list(ws.path("out").iterdir()) == []


def test_sigterm_handler_is_restored_after_main(ws, pair):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    ws.image("in/photo.png")
    assert pair("photo.png").code == 0
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(("output", "message"), [
    ("x.gif", "cannot write .gif files; use .png, .tif, .webp or .jpg"),
    ("x.bmp", "cannot write .bmp files"),
])
def test_an_output_file_name_we_cannot_write_is_a_usage_error(ws, pair, output, message):
    ws.image("in/photo.png")

    result = pair("photo.png", output=output)

    assert result.code == 2 and message in result.err
    assert not ws.path(output).exists()  # before: "x.gif" became a folder


def test_folder_mode_refuses_an_output_named_like_a_file(ws, model_file, run_cli):
    ws.image("in/a.png")
    ws.mask("in/a_mask.png")

    result = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("results.png"))

    assert result.code == 2 and "with --input-dir the output is a folder" in result.err
    assert not ws.path("results.png").exists()


def test_tiff_in_folder_mode_and_warnings_even_when_quiet(ws, model_file, run_cli):
    ws.path("in").mkdir()
    Image.fromarray(np.random.default_rng(8).random((H, W), dtype=np.float32)).save(ws.path("in/f.tif"))
    ws.mask("in/f_mask.png")
    ws.image("in/rgb.png")
    ws.mask("in/rgb_mask.png")

    as_tiff = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("tiffs"), "--format", "tiff")
    assert as_tiff.code == 0, as_tiff.err
    assert sorted(p.name for p in ws.path("tiffs").iterdir()) == ["f.tif", "rgb.tif"]

    quiet = run_cli("--model", model_file, "--input-dir", ws.path("in"), "-o", ws.path("pngs"), "--quiet")
    assert quiet.code == 0
    assert quiet.err.splitlines() == ["[1/2] f.tif: warning: 32-bit float samples reduced to 16-bit: png stores "
                                      "16-bit, 8-bit samples (use --format tiff to keep 32-bit float)"]
