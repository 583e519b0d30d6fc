"""EXIF orientation as Pillow applies it, and the EXIF an output keeps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from lama_multiscale_refine.lama_cli.metadata import apply_orientation, exif_for_output, orientation_of, read_exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=exif.tobytes())

    with Image.open(tmp_path / "a.png") as image:
        expected = np.asarray(ImageOps.exif_transpose(image))
        assert orientation_of(image.getexif()) == orientation

    assert np.array_equal(apply_orientation(pixels, orientation), expected)


def test_output_exif_drops_storage_tags_keeps_the_rest_with_orientation_1(tmp_path):
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "TestCam", 8
    exif[0x8769] = {0x9003: "2024:05:06 07:08:09"}
    exif[0x8825] = {1: "N"}
    loaded = Image.Exif()
    loaded.load(exif.tobytes())  # Pillow's TIFF writer reads sub-directories from a loaded EXIF
    Image.new("RGB", (3, 2)).save(tmp_path / "a.tif", exif=loaded)  # a TIFF's EXIF is its whole directory

    with Image.open(tmp_path / "a.tif") as image:
        source = read_exif(image)
    assert 256 in source and 273 in source  # width, strip offsets
    kept = Image.Exif()
    kept.load(exif_for_output(source).tobytes())

    assert not {256, 257, 258, 259, 262, 273, 277, 278, 279} & set(kept)
    assert kept[0x010F] == "TestCam" and kept[0x0112] == 1
    assert kept.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09" and kept.get_ifd(0x8825)[1] == "N"
    assert exif_for_output(Image.Exif()) is None
