"""What Pillow cannot do with an array: decode and encode 16-bit colour, and TIFF with EXIF compressed.

Pillow has no 16-bit colour mode: it decodes a 16-bit RGB(A), grey+alpha or CMYK file into 8-bit
bands, keeping the high byte of each sample. :func:`decode_16bit` gets both bytes from Pillow's own
decoder (so PNG filtering, TIFF compression and predictors stay Pillow's): the decoding is run
twice, with the unpacker of each byte order, which keeps the other byte of every sample. The
encoders write 16-bit PNG and every TIFF this command line produces.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin, TiffTags

__all__ = ["READ_FORMATS", "open_image", "has_16bit_bands", "decode_16bit", "encode_png", "encode_tiff", "TIFF_PHOTOMETRIC"]

# The decoders Pillow may use. Pillow picks a decoder from a file's content, not its name, and some
# hand the file to other programs (EPS to Ghostscript): a "photo.png" must be decoded as one of these.
READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")


def open_image(path: Path) -> Image.Image:
    """``Image.open`` limited to :data:`READ_FORMATS` (UnidentifiedImageError, an OSError, otherwise)."""
    return Image.open(path, formats=READ_FORMATS)

# Bands whose 16-bit unpackers exist in both byte orders ("RGB;16B" and "RGB;16L", ...).
_SPLIT_BANDS = ("RGB", "RGBA", "RGBX", "CMYK")
# PNG grey+alpha 16-bit: Pillow decodes it to RGBA with this rawmode; plain "RGBA" copies its 4 bytes.
_PNG_LA16 = "LA;16B"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA
_IDAT_SIZE = 1 << 20
# TIFF photometric interpretation of each colour space.
TIFF_PHOTOMETRIC = {"grey": 1, "rgb": 2, "cmyk": 5}
_EXIF_GROUPS = tuple(TiffTags.TAGS_V2_GROUPS)  # Exif, GPS, Interop sub-directories


def _rawmode(tile) -> str:
    args = tile[3]
    return args if isinstance(args, str) else args[0]


def _with_rawmode(tile, rawmode: str):
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    fields = (tile[0], tile[1], tile[2], args)
    return type(tile)._make(fields) if hasattr(type(tile), "_make") else fields


def _byte_rawmodes(rawmode: str) -> tuple[str, str] | None:
    """(high byte, low byte) unpackers for a 16-bit multi-band rawmode, or None."""
    bands, _, suffix = rawmode.partition(";")
    if bands not in _SPLIT_BANDS or suffix not in ("16B", "16L", "16N"):
        return None
    big = suffix == "16B" or (suffix == "16N" and sys.byteorder == "big")
    first, second = f"{bands};16B", f"{bands};16L"  # unpack the first / the second byte of each sample
    return (first, second) if big else (second, first)


def has_16bit_bands(image: Image.Image) -> bool:
    """True when Pillow would cut this opened (not yet loaded) image's 16-bit samples to 8 bits."""
    rawmodes = {_rawmode(tile) for tile in image.tile}
    return len(rawmodes) == 1 and (rawmodes == {_PNG_LA16} or _byte_rawmodes(rawmodes.pop()) is not None)


def _decode(path: Path, rawmode: str) -> np.ndarray:
    with open_image(path) as image:
        image.tile = [_with_rawmode(tile, rawmode) for tile in image.tile]
        image.load()
        return np.asarray(image)


def decode_16bit(path: Path, image: Image.Image) -> np.ndarray:
    """(H, W, C) uint16 samples of the file ``image`` was opened from (see :func:`has_16bit_bands`).

    C is the file's own band count: 2 (grey + alpha), 3 (RGB) or 4 (RGBA, CMYK). RGBX keeps 3.
    """
    rawmode = _rawmode(image.tile[0])
    if rawmode == _PNG_LA16:
        raw = _decode(path, "RGBA").astype(np.uint16)
        return np.stack([raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3]], axis=-1)
    high, low = _byte_rawmodes(rawmode)
    return _decode(path, high).astype(np.uint16) << 8 | _decode(path, low).astype(np.uint16)


# --- PNG ----------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(samples: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None,
               dpi: tuple[float, float] | None = None) -> bytes:
    """The PNG file of (H, W, C) uint8 or uint16 ``samples``, C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.

    For 16-bit colour, which Pillow cannot write. Rows use the Sub filter; metadata chunks come
    before the image data, as Pillow and browsers expect.
    """
    height, width, channels = samples.shape
    depth = samples.dtype.itemsize * 8
    data = samples.astype(samples.dtype.newbyteorder(">"), copy=False).reshape(height, -1).view(np.uint8)
    step = channels * depth // 8
    filtered = data.copy()
    filtered[:, step:] -= data[:, :-step]  # uint8 arithmetic wraps modulo 256, as the filter needs
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1).tobytes()

    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOUR_TYPE[channels], 0, 0, 0))]
    if dpi:
        chunks.append(_chunk(b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in dpi), 1)))
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    compressed = zlib.compress(scanlines, 6)
    chunks += [_chunk(b"IDAT", compressed[i : i + _IDAT_SIZE]) for i in range(0, len(compressed), _IDAT_SIZE)]
    return _PNG_SIGNATURE + b"".join(chunks) + _chunk(b"IEND", b"")


# --- TIFF ---------------------------------------------------------------------------------------

def encode_tiff(samples: np.ndarray, *, space: str, alpha: bool, icc_profile: bytes | None = None,
                exif: Image.Exif | None = None, dpi: tuple[float, float] | None = None) -> bytes:
    """The Deflate-compressed TIFF file of (H, W, C) uint8, uint16 or float32 ``samples`` in ``space``.

    ``alpha``: the last channel is unassociated alpha. Integer samples use the horizontal
    differencing predictor. EXIF tags, with their Exif/GPS sub-directories, go into the TIFF's
    own directory, as in a camera TIFF (Pillow's compressed TIFF writer cannot write them).
    """
    height, width, channels = samples.shape
    floating = samples.dtype == np.float32
    stored = samples.astype(samples.dtype.newbyteorder("<"), copy=False)
    if not floating:  # predictor 2: each sample minus its left neighbour, modulo 2^bits
        stored = stored.copy()
        stored[:, 1:] -= samples[:, :-1]
    strip = zlib.compress(stored.tobytes(), 6)

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif is not None:
        for tag, value in exif.items():
            # A sub-directory is an offset into the file it was read from, or a dict when built in memory.
            ifd[tag] = exif.get_ifd(tag) if tag in _EXIF_GROUPS and not isinstance(value, dict) else value
    ifd[256], ifd[257] = width, height
    ifd[258] = (samples.dtype.itemsize * 8,) * channels
    ifd[259] = 8  # Adobe Deflate
    ifd[262] = TIFF_PHOTOMETRIC[space]
    ifd[273] = (0,)  # strip offset, made absolute by the directory writer (data follows it)
    ifd[277] = channels
    ifd[278] = height
    ifd[279] = (len(strip),)
    ifd[282], ifd[283] = (dpi or (72, 72))
    ifd[284] = 1  # chunky
    ifd[296] = 2  # inch
    if not floating:
        ifd[317] = 2
    if alpha:
        ifd[338] = (2,)  # unassociated alpha
    ifd[339] = ((3 if floating else 1),) * channels
    if icc_profile:
        ifd[34675] = icc_profile
        ifd.tagtype[34675] = TiffTags.UNDEFINED
    file = io.BytesIO()
    ifd.save(file)
    return file.getvalue() + strip
