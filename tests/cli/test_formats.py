"""16-bit decoding through Pillow's own decoders, and our PNG/TIFF encoders, against independent code."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lama_image_files import read_png, read_tiff, write_png16, write_tiff16
from lama_multiscale_refine.lama_cli.formats import decode_16bit, encode_png, encode_tiff, has_16bit_bands


def _random(shape, dtype=np.uint16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("row_filter", [0, 1])
def test_16bit_png_decodes_both_bytes_of_every_sample(tmp_path, channels, row_filter):
    samples = _random((7, 11, channels), seed=channels)
    path = tmp_path / "a.png"
    write_png16(path, samples, row_filter=row_filter)

    with Image.open(path) as image:
        assert has_16bit_bands(image)
        decoded = decode_16bit(path, image)

    assert decoded.dtype == np.uint16 and np.array_equal(decoded, samples)


@pytest.mark.parametrize("channels", [2, 3])
def test_interlaced_16bit_png_decodes_too(tmp_path, channels):
    samples = _random((13, 17, channels), seed=channels)
    path = tmp_path / "a.png"
    write_png16(path, samples, interlace=True)

    with Image.open(path) as image:
        assert image.info["interlace"] and has_16bit_bands(image)
        decoded = decode_16bit(path, image)

    assert np.array_equal(decoded, samples)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("deflate", [False, True])  # raw decoder vs libtiff (native byte order)
def test_16bit_tiff_decodes_both_bytes_in_either_byte_order(tmp_path, channels, big_endian, deflate):
    samples = _random((7, 11, channels), seed=channels + 10 * big_endian)
    path = tmp_path / "a.tif"
    write_tiff16(path, samples, big_endian=big_endian, deflate=deflate)

    with Image.open(path) as image:
        assert has_16bit_bands(image)
        decoded = decode_16bit(path, image)

    assert np.array_equal(decoded, samples)


def test_pillow_native_files_are_not_split(tmp_path):
    Image.fromarray(_random((5, 5), np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(_random((5, 5, 3), np.uint8)).save(tmp_path / "rgb8.png")
    for name in ("grey16.png", "rgb8.png"):
        with Image.open(tmp_path / name) as image:
            assert not has_16bit_bands(image)


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint16, 2), (np.uint16, 3), (np.uint16, 4), (np.uint8, 3), (np.uint16, 1)])
def test_png_encoder_round_trips_with_metadata(tmp_path, dtype, channels):
    samples = _random((6, 9, channels), dtype, seed=channels)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    path = tmp_path / "a.png"
    path.write_bytes(encode_png(samples, icc_profile=b"profile" * 20, exif=exif.tobytes(), dpi=(300, 300)))

    decoded, chunks = read_png(path)
    assert np.array_equal(decoded, samples)
    with Image.open(path) as image:  # Pillow reads the metadata chunks
        assert image.info["icc_profile"] == b"profile" * 20
        assert image.getexif()[0x010F] == "TestCam"
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)


@pytest.mark.parametrize(
    ("dtype", "channels", "space", "alpha", "pillow_mode"),
    [
        (np.uint8, 1, "grey", False, "L"), (np.uint8, 2, "grey", True, "LA"), (np.uint8, 3, "rgb", False, "RGB"),
        (np.uint8, 4, "rgb", True, "RGBA"), (np.uint8, 4, "cmyk", False, "CMYK"), (np.uint16, 1, "grey", False, "I;16"),
        (np.float32, 1, "grey", False, "F"), (np.uint16, 3, "rgb", False, None), (np.uint16, 4, "rgb", True, None),
        (np.uint16, 2, "grey", True, None),
    ],
)
def test_tiff_encoder_round_trips(tmp_path, dtype, channels, space, alpha, pillow_mode):
    samples = _random((6, 9, channels), dtype, seed=channels)
    path = tmp_path / "a.tif"
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x8769] = {0x9003: "2024:05:06 07:08:09"}
    path.write_bytes(encode_tiff(samples, space=space, alpha=alpha, icc_profile=b"profile" * 20, exif=exif, dpi=(240, 240)))

    decoded, tags = read_tiff(path)
    assert np.array_equal(decoded, samples)
    assert tags[34675] == b"profile" * 20 and tags[262] == {"grey": 1, "rgb": 2, "cmyk": 5}[space]
    assert tags.get(338) == ((2,) if alpha else None)
    if channels == 2 and dtype == np.uint16:
        return  # 16-bit grey + alpha: a valid TIFF that Pillow cannot open
    with Image.open(path) as image:
        if pillow_mode is None:
            assert np.array_equal(decode_16bit(path, image), samples)
        else:
            assert image.mode == pillow_mode
            assert np.array_equal(np.asarray(image).reshape(samples.shape), samples)
        assert image.getexif()[0x010F] == "TestCam"
        assert image.getexif().get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
        assert image.info["dpi"] == pytest.approx((240, 240))
