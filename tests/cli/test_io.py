"""Decoding every Pillow mode at its own precision, masks with alpha, temporary files."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lama_image_files import cmyk_profile, gray_profile, write_png16, write_tiff16
from lama_multiscale_refine.lama_cli.io import (
    TEMPORARY_SUFFIX, InputError, prepare_output_folder, read_image, read_mask, save_image, temporary_path,
)

RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (6, 8), dtype=np.uint8)
U16 = RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _save(tmp_path, name, image: Image.Image, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def _palette() -> Image.Image:
    image = Image.fromarray(U8 % 4).convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    return image


@pytest.mark.parametrize(
    ("name", "make", "space", "dtype", "expected"),
    [
        ("1.png", lambda: Image.fromarray(U8 > 127), "grey", np.uint8, (U8 > 127).astype(np.uint8)[..., None] * 255),
        ("l.png", lambda: Image.fromarray(U8), "grey", np.uint8, U8[..., None]),
        ("p.png", _palette, "rgb", np.uint8, np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)[U8 % 4]),
        ("cmyk.tif", lambda: Image.fromarray(np.dstack([RGB8, U8]), "CMYK"), "cmyk", np.uint8, np.dstack([RGB8, U8])),
        ("i16.png", lambda: Image.fromarray(U16), "grey", np.uint16, U16[..., None]),
        ("i16.tif", lambda: Image.fromarray(U16), "grey", np.uint16, U16[..., None]),
        ("i16b.tif", lambda: Image.frombytes("I;16B", (8, 6), U16.astype(">u2").tobytes()), "grey", np.uint16, U16[..., None]),
        ("i32.tif", lambda: Image.fromarray(U16.astype(np.int32)), "grey", np.uint16, U16[..., None]),
        ("f.tif", lambda: Image.fromarray(U16.astype(np.float32) / 65535), "grey", np.float32,
         (U16.astype(np.float32) / 65535)[..., None]),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else "",
)
def test_every_mode_is_read_at_its_own_precision(tmp_path, name, make, space, dtype, expected):
    image = read_image(_save(tmp_path, name, make()))

    assert (image.space, image.samples.dtype, image.alpha) == (space, np.dtype(dtype), None)
    assert np.array_equal(image.samples, expected)
    assert image.warnings == []


def test_alpha_of_every_kind_is_kept_aside_at_its_precision(tmp_path):
    la = read_image(_save(tmp_path, "la.png", Image.fromarray(np.dstack([U8, 255 - U8]), "LA")))
    assert la.space == "grey" and np.array_equal(la.alpha, 255 - U8)

    palette = _palette()
    palette.info["transparency"] = 1  # red is transparent
    transparent = read_image(_save(tmp_path, "pt.png", palette, transparency=1))
    assert transparent.space == "rgb" and np.array_equal(transparent.alpha, np.where(U8 % 4 == 1, 0, 255))

    key = int(U16[0, 0])
    keyed = read_image(_save(tmp_path, "key16.png", Image.fromarray(U16), transparency=key))
    assert keyed.alpha.dtype == np.uint16 and np.array_equal(keyed.alpha, np.where(U16 == key, 0, 65535))

    rgba16 = np.dstack([RNG.integers(0, 65536, (6, 8, 4), dtype=np.uint16)])
    write_png16(tmp_path / "rgba16.png", rgba16)
    wide = read_image(tmp_path / "rgba16.png")
    assert np.array_equal(wide.samples, rgba16[..., :3]) and np.array_equal(wide.alpha, rgba16[..., 3])


def test_16_bit_cmyk_keeps_its_16_bits_and_profile(tmp_path):
    cmyk = RNG.integers(0, 65536, (6, 8, 4), dtype=np.uint16)
    write_tiff16(tmp_path / "c16.tif", cmyk, cmyk=True, icc_profile=cmyk_profile())

    image = read_image(tmp_path / "c16.tif")

    assert image.space == "cmyk" and image.alpha is None and np.array_equal(image.samples, cmyk)
    assert image.profile.description == "Test CMYK warm black"


def test_out_of_range_32_bit_integers_are_refused(tmp_path):
    path = _save(tmp_path, "big.tif", Image.fromarray(np.array([[0, 70000]], np.int32)))

    with pytest.raises(InputError, match=r"image big.tif: 32-bit integer samples span 0..70000; only 0..65535"):
        read_image(path)


def test_profiles_are_kept_only_when_they_describe_the_image(tmp_path):
    grey = read_image(_save(tmp_path, "grey.png", Image.fromarray(U8), icc_profile=gray_profile()))
    assert grey.profile.space == "grey" and grey.profile.data == gray_profile()

    wrong = read_image(_save(tmp_path, "rgb.png", Image.fromarray(RGB8), icc_profile=gray_profile()))
    assert wrong.profile is None
    assert wrong.warnings == ["colour profile 'Test Gray gamma 1.8' dropped: it describes grey, the image is RGB"]

    broken = read_image(_save(tmp_path, "broken.png", Image.fromarray(RGB8), icc_profile=b"not a profile"))
    assert broken.profile is None and broken.warnings[0].startswith("colour profile dropped: unreadable ICC profile")

    cmyk = read_image(_save(tmp_path, "c.jpg", Image.fromarray(np.dstack([RGB8, U8]), "CMYK"), icc_profile=cmyk_profile()))
    assert cmyk.space == "cmyk" and cmyk.profile.description == "Test CMYK warm black"


def test_multi_page_files_say_that_only_the_first_page_is_used(tmp_path):
    path = tmp_path / "pages.tif"
    Image.fromarray(RGB8).save(path, save_all=True, append_images=[Image.fromarray(RGB8)])

    assert read_image(path).warnings == ["image has 2 frames or pages; only the first is used"]


def test_mask_on_a_transparent_layer_uses_its_alpha(tmp_path):
    layer = np.zeros((6, 8, 4), np.uint8)
    layer[..., :3] = 255  # white everywhere ...
    layer[2:4, 2:6, 3] = 255  # ... but opaque only here
    mask = read_mask(_save(tmp_path, "m.png", Image.fromarray(layer)))

    assert np.array_equal(mask.values > 0, layer[..., 3] > 0)
    assert mask.warnings == ["mask alpha used: 83.3% of its pixels are not black but (partly) transparent; "
                             "they count as drawn over black"]

    layer[..., 3] = 255  # fully opaque: alpha changes nothing and is not mentioned
    assert read_mask(_save(tmp_path, "opaque.png", Image.fromarray(layer))).warnings == []

    half = read_mask(_save(tmp_path, "la.png", Image.fromarray(np.dstack([np.full((6, 8), 255, np.uint8),
                                                                           np.full((6, 8), 128, np.uint8)]), "LA")))
    assert np.allclose(half.values, 128 / 255)


def test_masks_are_read_at_their_precision(tmp_path):
    faint = np.zeros((6, 8), np.uint16)
    faint[1, 1], faint[2, 2] = 100, 40000  # 100 / 65535 is 0 in 8 bits
    assert np.array_equal(read_mask(_save(tmp_path, "m16.png", Image.fromarray(faint))).values, faint / np.float32(65535))

    colour = read_mask(_save(tmp_path, "rgb.png", Image.fromarray(RGB8))).values
    assert np.array_equal(colour, np.asarray(Image.fromarray(RGB8).convert("L")) / np.float32(255))

    floats = np.linspace(-1, 2, 48, dtype=np.float32).reshape(6, 8)
    assert np.array_equal(read_mask(_save(tmp_path, "f.tif", Image.fromarray(floats))).values, np.clip(floats, 0, 1))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporary_files_of_ours_are_removed_and_nothing_else(tmp_path):
    host = temporary_path(tmp_path / "x").name.split(".")[-4]
    names = {
        "dead": f".a.png.{host}.{_dead_pid()}{TEMPORARY_SUFFIX}",
        "alive": f".b.png.{host}.1{TEMPORARY_SUFFIX}",  # pid 1 always exists
        "other host, fresh": f".c.png.elsewhere.123{TEMPORARY_SUFFIX}",
        "other host, old": f".d.png.elsewhere.123{TEMPORARY_SUFFIX}",
        "not ours": ".e.png.123.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / names["other host, old"], (old, old))

    removed = prepare_output_folder(tmp_path)

    assert removed == sorted([names["dead"], names["other host, old"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[k] for k in ("alive", "other host, fresh", "not ours"))


def test_an_unwritable_folder_is_reported_by_the_check(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        prepare_output_folder(tmp_path / "file" / "out")  # a folder cannot be made under a file
    if os.name == "posix" and os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        with pytest.raises(PermissionError):
            prepare_output_folder(tmp_path / "locked")
    prepare_output_folder(tmp_path / "new" / "out")
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the write test leaves nothing


def test_a_failed_write_leaves_neither_output_nor_temporary_file(tmp_path, monkeypatch):
    def broken_save(self, file, *args, **kwargs):
        file.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        save_image(tmp_path / "out.png", RGB8, None, "rgb", "png")

    assert list(tmp_path.iterdir()) == []


def test_only_the_listed_decoders_run_whatever_the_file_name(tmp_path):
    # Pillow picks its decoder from the content: a file named photo.png could be EPS (handed to
    # Ghostscript). A PPM stands in for it here: Pillow reads PPM by itself, so only the limit stops it.
    disguised = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(disguised, format="PPM")
    assert Image.open(disguised).format == "PPM"
    with pytest.raises(InputError, match=r"photo\.png: cannot read"):
        read_image(disguised)
    real = tmp_path / "real.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(real)
    assert read_image(real).samples.shape == (8, 8, 3)
