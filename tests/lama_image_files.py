"""Test files for the command line (tests/cli) that Pillow cannot write, and independent readers of its outputs.

Pillow has no in-memory mode for 16-bit colour, so 16-bit RGB(A) and grey+alpha PNG/TIFF inputs
are encoded here by hand, and the command line's 16-bit outputs are decoded here by hand (not
with the code under test). The ICC profiles are minimal but valid version 2 profiles that
LittleCMS (Pillow's ImageCms) accepts: a grey one with a gamma curve, and a CMYK one built from
8-bit lookup tables whose black is warm, so that converting with it differs from Pillow's naive
CMYK -> RGB formula.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import TiffImagePlugin

__all__ = ["write_png16", "read_png", "write_tiff16", "read_tiff", "gray_profile", "cmyk_profile"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# Adam7 passes: (first row, first column, row step, column step).
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


def _scanlines(pixels: np.ndarray, row_filter: int) -> bytes:
    height, width, channels = pixels.shape
    if not pixels.size:
        return b""
    raw = pixels.reshape(height, -1).view(np.uint8)
    rows = raw.astype(np.int32)
    if row_filter == 1:  # Sub: each byte minus the same byte of the pixel on the left
        rows[:, 2 * channels :] -= raw[:, : -2 * channels]
    return np.concatenate([np.full((height, 1), row_filter), rows % 256], axis=1).astype(np.uint8).tobytes()


def write_png16(path: Path, array: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None,
                row_filter: int = 1, interlace: bool = False) -> None:
    """A 16-bit PNG of (H, W) or (H, W, C) uint16 ``array``, rows filtered with ``row_filter`` (0 or 1),
    optionally Adam7-interlaced."""
    pixels = np.asarray(array, ">u2")
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    scanlines = b"".join(_scanlines(pixels[y::dy, x::dx], row_filter) for y, x, dy, dx in passes)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, int(interlace))
    chunks = [_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"test\0\0" + zlib.compress(icc_profile)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    chunks += [_chunk(b"IDAT", zlib.compress(scanlines)), _chunk(b"IEND", b"")]
    path.write_bytes(_PNG_SIGNATURE + b"".join(chunks))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def read_png(path: Path) -> tuple[np.ndarray, dict[bytes, bytes]]:
    """Decode a non-interlaced 8- or 16-bit grey/RGB(A) PNG: ((H, W, C) array, {chunk type: data})."""
    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE, f"{path} is not a PNG"
    chunks: dict[bytes, bytes] = {}
    idat = b""
    position = 8
    while position < len(data):
        (length,), kind = struct.unpack(">I", data[position : position + 4]), data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert interlace == 0 and depth in (8, 16) and colour_type in (0, 2, 4, 6)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    bpp = channels * depth // 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.uint8)
    previous = np.zeros(width * bpp, np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        row = np.zeros_like(line)
        for x in range(line.size):
            a = int(row[x - bpp]) if x >= bpp else 0
            b = int(previous[x])
            c = int(previous[x - bpp]) if x >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            row[x] = (line[x] + predictor) % 256
        out[y], previous = row, row
    pixels = out.view(">u2").astype(np.uint16) if depth == 16 else out
    return pixels.reshape(height, width, channels), chunks


def write_tiff16(path: Path, array: np.ndarray, *, big_endian: bool = False, deflate: bool = False,
                 icc_profile: bytes | None = None, cmyk: bool = False) -> None:
    """A single-strip 16-bit TIFF of (H, W, C) uint16 ``array`` (C = 3 RGB, 4 RGBA or CMYK)."""
    pixels = np.asarray(array, np.uint16)
    height, width, channels = pixels.shape
    prefix = b"MM" if big_endian else b"II"
    strip = pixels.astype(">u2" if big_endian else "<u2").tobytes()
    strip = zlib.compress(strip) if deflate else strip
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=prefix)
    ifd[256], ifd[257], ifd[258], ifd[259] = width, height, (16,) * channels, 8 if deflate else 1
    ifd[262], ifd[273], ifd[277], ifd[278], ifd[279] = 5 if cmyk else 2, (0,), channels, height, (len(strip),)
    ifd[284], ifd[339] = 1, (1,) * channels
    if channels == 4 and not cmyk:
        ifd[338] = (2,)  # unassociated alpha
    if icc_profile:
        ifd[34675] = icc_profile
    with path.open("wb") as file:
        ifd.save(file)  # the strip offset is relative to the end of the directory
        file.write(strip)


def read_tiff(path: Path) -> tuple[np.ndarray, dict[int, object]]:
    """Decode a single-strip, uncompressed or Deflate, chunky TIFF: ((H, W, C) array, tags).

    Reads what Pillow itself cannot open (16-bit grey + alpha), for checking outputs.
    """
    data = path.read_bytes()
    ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
    with path.open("rb") as file:
        file.seek(ifd.next)
        ifd.load(file)
    tags = dict(ifd)
    assert tags.get(284, 1) == 1 and len(tags[273]) == 1, "test reader: one chunky strip only"
    strip = data[tags[273][0] : tags[273][0] + tags[279][0]]
    strip = zlib.decompress(strip) if tags[259] in (8, 32946) else strip
    bits = tags[258][0]
    kind = {(16, 1): "u2", (8, 1): "u1", (32, 3): "f4"}[(bits, tags.get(339, (1,))[0])]
    pixels = np.frombuffer(strip, (">" if data[:2] == b"MM" else "<") + kind)
    if tags.get(317, 1) == 2:  # horizontal differencing predictor
        pixels = np.cumsum(pixels.reshape(tags[257], tags[256], tags[277]), axis=1, dtype=pixels.dtype)
    return pixels.reshape(tags[257], tags[256], tags[277]).astype(pixels.dtype.newbyteorder("=")), tags


# --- ICC profiles -------------------------------------------------------------------------------

_D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * (8 + 3 + 67)


def _profile(device_class: bytes, colour_space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I4sI4s4s4s", offset + len(body), b"lcms", 0x02100000, device_class, colour_space, pcs)
    header += b"\0" * 12 + b"acsp" + b"\0" * 28 + _s15(_D50[0]) + _s15(_D50[1]) + _s15(_D50[2]) + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + body


def gray_profile(gamma: float = 1.8, name: str = "Test Gray gamma 1.8") -> bytes:
    """A grey display profile: one gamma curve (kTRC)."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    return _profile(b"mntr", b"GRAY", b"XYZ ", [(b"desc", _desc_tag(name)), (b"wtpt", _xyz_tag(*_D50)),
                                                (b"cprt", b"text\0\0\0\0none\0"), (b"kTRC", curve)])


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                       [0.0139322, 0.0971045, 0.7141733]])
    xyz = to_xyz @ linear / np.array(_D50)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array(_D50)
    to_rgb = np.array([[3.1338561, -1.6168667, -0.4906146], [-0.9787684, 1.9161415, 0.0334540],
                       [0.0719453, -0.2289914, 1.4052427]])
    linear = np.clip(to_rgb @ xyz, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _lab8(lab: np.ndarray) -> list[int]:
    # lut8 Lab encoding: L* 0..100 -> 0..255, a*/b* -128..127 -> 0..255.
    return [round(float(np.clip(v, 0, 255))) for v in (lab[0] * 255 / 100, lab[1] + 128, lab[2] + 128)]


def _lut8_tag(n_in: int, n_out: int, grid: int, table: list[int]) -> bytes:
    identity = bytes(range(256))
    head = b"mft1\0\0\0\0" + bytes([n_in, n_out, grid, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return head + identity * n_in + bytes(table) + identity * n_out


def cmyk_profile(name: str = "Test CMYK warm black") -> bytes:
    """A printer profile: CMYK -> Lab on a 2-point grid (a warm black), Lab -> CMYK on a 9-point grid."""
    to_lab = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = np.array([(1 - c) * (1 - 0.85 * k), (1 - m) * (1 - 0.9 * k), (1 - y) * (1 - 0.95 * k)])
                    to_lab += _lab8(_srgb_to_lab(rgb))
    grid, to_cmyk = 9, []
    for li in range(grid):
        for ai in range(grid):
            for bi in range(grid):
                lab = np.array([li * 100, ai * 255, bi * 255]) / (grid - 1) - np.array([0, 128, 128])
                rgb = _lab_to_srgb(lab)
                black = 1 - rgb.max()
                cmy = (1 - rgb - black) / (1 - black) if black < 1 else np.zeros(3)
                to_cmyk += [round(float(v) * 255) for v in (*cmy, black)]
    return _profile(b"prtr", b"CMYK", b"Lab ", [(b"desc", _desc_tag(name)), (b"wtpt", _xyz_tag(*_D50)),
                                                (b"cprt", b"text\0\0\0\0none\0"),
                                                (b"A2B0", _lut8_tag(4, 3, 2, to_lab)),
                                                (b"B2A0", _lut8_tag(3, 4, grid, to_cmyk))])
