"""Image and mask files: decoding at the file's own precision, and atomic writing of outputs.

An image is decoded into its own sample type (8-bit, 16-bit or 32-bit float) and colour space
(grey, RGB or CMYK), with the EXIF orientation applied, its alpha kept aside and its ICC profile
and EXIF kept for the output. What the output can keep is decided in :mod:`.conversion`.

Outputs are written to a temporary file that is renamed over the target when complete, so an
interrupted run never leaves a truncated output that a later run would skip as done. The
temporary files are named ``.<output name>.<host>.<pid>.lama_cli.tmp``: ones left by a killed run
are recognised and removed by the next run (:func:`prepare_output_folder`).
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import formats
from .colour import SPACE_NAMES, Profile, read_profile
from .metadata import apply_orientation, orientation_of, orientation_text, read_exif
from .pixels import luma, to_unit

__all__ = [
    "InputError", "OutputFormat", "OUTPUT_FORMATS", "LoadedImage", "LoadedMask", "read_image", "read_mask",
    "save_image", "temporary_path", "prepare_output_folder", "TEMPORARY_SUFFIX",
]

U8, U16, F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)


class InputError(Exception):
    """A problem with one input file; the batch reports it and goes on with the next file."""


@dataclass(frozen=True)
class OutputFormat:
    """What one ``--format`` can store."""

    extension: str
    spaces: tuple[str, ...]  # colour spaces
    sample_types: tuple[np.dtype, ...]
    alpha: bool
    pillow: str  # Pillow's format name, for what Pillow writes itself
    options: dict = field(default_factory=dict)


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "png": OutputFormat(".png", ("grey", "rgb"), (U16, U8), True, "PNG"),
    "tiff": OutputFormat(".tif", ("grey", "rgb", "cmyk"), (F32, U16, U8), True, "TIFF"),
    "webp": OutputFormat(".webp", ("rgb",), (U8,), True, "WEBP", {"lossless": True}),
    "jpg": OutputFormat(".jpg", ("grey", "rgb", "cmyk"), (U8,), False, "JPEG", {"quality": 95}),
}
_CHANNELS = {"grey": 1, "rgb": 3, "cmyk": 4}
# Pillow modes written by Pillow itself: (colour space, sample type, with alpha) -> mode.
_PILLOW_MODES = {
    ("grey", U8, False): "L", ("grey", U8, True): "LA", ("rgb", U8, False): "RGB", ("rgb", U8, True): "RGBA",
    ("cmyk", U8, False): "CMYK", ("grey", U16, False): "I;16", ("grey", F32, False): "F",
}


@dataclass
class LoadedImage:
    """A decoded image, oriented as viewers show it, with what the output must carry over."""

    samples: np.ndarray  # (H, W, C): C = 1 grey, 3 RGB, 4 CMYK; uint8, uint16 or float32 as in the file
    space: str  # "grey", "rgb" or "cmyk"
    alpha: np.ndarray | None  # (H, W), same type as samples; passed through to the output untouched
    profile: Profile | None  # the embedded ICC profile, when readable and describing ``space``
    exif: Image.Exif  # the file's EXIF (empty when none)
    orientation: int  # EXIF orientation applied to the pixels (1 = none)
    stored_size: tuple[int, int]  # (height, width) in the file, before the orientation
    dpi: tuple[float, float] | None
    warnings: list[str] = field(default_factory=list)  # what reading changed, one line each

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as viewers show it."""
        return self.samples.shape[0], self.samples.shape[1]

    def size_text(self) -> str:
        """``"64x48 px"``, or with an orientation ``"64x48 px as shown (stored 48x64 px, EXIF orientation 6: ...)"``."""
        (height, width), (stored_h, stored_w) = self.size, self.stored_size
        if self.orientation == 1:
            return f"{width}x{height} px"
        return f"{width}x{height} px as shown (stored {stored_w}x{stored_h} px, {orientation_text(self.orientation)})"


@dataclass
class LoadedMask:
    """A decoded mask: hole strength per pixel."""

    values: np.ndarray  # (H, W) float32 in [0, 1]; 1 = white = fill
    image: LoadedImage  # what it was decoded from (size, orientation)
    warnings: list[str] = field(default_factory=list)


def _colour_key_alpha(samples: np.ndarray, key) -> np.ndarray | None:
    """Alpha of a PNG colour key (tRNS in a grey or RGB file): 0 where a pixel equals the key."""
    key = np.atleast_1d(np.asarray(key))
    if key.size != samples.shape[2]:
        return None
    opaque = np.iinfo(samples.dtype).max
    return np.where((samples == key.astype(samples.dtype)).all(axis=2), 0, opaque).astype(samples.dtype)


def _split_alpha(array: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray | None]:
    channels = _CHANNELS[space]
    if array.shape[2] == channels:
        return array, None
    return array[..., :channels], array[..., channels]


def _pixels_of(image: Image.Image, what: str, name: str) -> tuple[np.ndarray, str, np.ndarray | None]:
    """(samples (H, W, C), colour space, alpha or None) of a loaded Pillow image, as stored."""
    mode = image.mode
    key = image.info.get("transparency")
    if mode in ("P", "PA"):
        rgba = mode == "PA" or key is not None
        image, mode, key = image.convert("RGBA" if rgba else "RGB"), "RGBA" if rgba else "RGB", None
    elif mode == "1":
        image, mode, key = image.convert("L"), "L", (None if key is None else 255 * bool(key))
    elif mode in ("La", "RGBa", "RGBX", "YCbCr"):
        target = {"La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB"}[mode]
        image, mode = image.convert(target), target
    array = np.asarray(image)

    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        space = {"L": "grey", "LA": "grey", "RGB": "rgb", "RGBA": "rgb", "CMYK": "cmyk"}[mode]
        samples, alpha = _split_alpha(array.reshape(*array.shape[:2], -1), space)
    elif mode.startswith("I;16"):
        samples, alpha, space = array.astype(U16)[..., None], None, "grey"
    elif mode == "I":  # 32-bit integers: exact only when they fit 16 bits
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 65535:
            raise InputError(f"{what} {name}: 32-bit integer samples span {low}..{high}; only 0..65535 "
                             "(16-bit) can be inpainted without rescaling; save it as 16-bit or float")
        samples, alpha, space = array.astype(U16)[..., None], None, "grey"
    elif mode == "F":
        samples, alpha, space = array.astype(F32)[..., None], None, "grey"
    else:
        raise InputError(f"{what} {name}: Pillow mode {mode} is not supported "
                         "(expected grey, RGB, CMYK or palette, 8-bit, 16-bit or float)")
    if alpha is None and key is not None and samples.dtype != F32:
        alpha = _colour_key_alpha(samples, key)
    return samples, space, alpha


def _decode_16bit(path: Path, image: Image.Image) -> tuple[np.ndarray, str, np.ndarray | None]:
    array = formats.decode_16bit(path, image)
    space = "cmyk" if image.mode == "CMYK" else ("grey" if array.shape[2] == 2 else "rgb")
    samples, alpha = _split_alpha(array, space)
    key = image.info.get("transparency")
    if alpha is None and key is not None:
        alpha = _colour_key_alpha(samples, key)
    return samples, space, alpha


def _decode(path: Path, what: str) -> LoadedImage:
    try:
        with formats.open_image(path) as image:
            decoded, note = None, None
            # Before anything that loads the pixels (a PNG's getexif() does), which drops the tiles.
            if formats.has_16bit_bands(image):
                try:
                    decoded = _decode_16bit(path, image)
                except (ValueError, OSError) as err:  # a Pillow whose decoders differ from the ones pinned in tests
                    note = f"{what} read at 8 bits per sample: this Pillow cannot decode its 16 bits ({err})"
            if decoded is None:
                image.load()
                decoded = _pixels_of(image, what, path.name)
            samples, space, alpha = decoded
            exif = read_exif(image)
            info = dict(image.info)
            frames = getattr(image, "n_frames", 1)
    except FileNotFoundError as err:
        raise InputError(f"{what} {path.name}: file not found") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # What Pillow raises for unknown, truncated or malformed files.
        raise InputError(f"{what} {path.name}: cannot read ({err})") from err

    orientation = orientation_of(exif)
    oriented = LoadedImage(
        samples=np.ascontiguousarray(apply_orientation(samples, orientation)),
        space=space,
        alpha=None if alpha is None else np.ascontiguousarray(apply_orientation(alpha, orientation)),
        profile=None, exif=exif, orientation=orientation, stored_size=samples.shape[:2], dpi=info.get("dpi"),
    )
    if note:
        oriented.warnings.append(note)
    if frames > 1:
        oriented.warnings.append(f"{what} has {frames} frames or pages; only the first is used")
    if orientation != 1:
        kept = "; the output's orientation tag is 1" if what == "image" else ""
        oriented.warnings.append(f"{what} {orientation_text(orientation)}, applied to the pixels{kept}")
    icc = info.get("icc_profile")
    if icc and what == "image":
        profile = read_profile(icc)
        if isinstance(profile, str):
            oriented.warnings.append(f"colour profile dropped: {profile}")
        elif profile.space != space:
            described = SPACE_NAMES.get(profile.space, "another colour space")
            oriented.warnings.append(f"colour profile {profile.description!r} dropped: it describes "
                                     f"{described}, the image is {SPACE_NAMES[space]}")
        else:
            oriented.profile = profile
    return oriented


def read_image(path: Path) -> LoadedImage:
    """Decode an image at its own precision; see :class:`LoadedImage`.

    Raises:
        InputError: the file is missing, unreadable, or of a kind that cannot be inpainted exactly.
    """
    return _decode(path, "image")


def read_mask(path: Path) -> LoadedMask:
    """Decode a mask into hole strengths in [0, 1] at its own precision.

    Colour masks count by luminance (Pillow's ``convert("L")`` weights), CMYK ones through Pillow's
    RGB conversion. A mask with transparency counts as drawn over black: its grey level times its
    alpha, so white strokes on a transparent layer are the hole and the transparent rest is not.
    """
    decoded = _decode(path, "mask")
    samples = decoded.samples
    if decoded.space == "cmyk":
        samples = np.asarray(Image.fromarray(samples, "CMYK").convert("RGB"))
    grey = luma(samples) if samples.shape[2] == 3 else samples
    values = to_unit(grey[..., 0])
    mask = LoadedMask(values, decoded, decoded.warnings)
    if decoded.alpha is not None:
        opacity = to_unit(decoded.alpha)
        changed = float(((values > 0) & (opacity < 1)).mean())
        if changed:
            mask.values = values * opacity
            mask.warnings.append(f"mask alpha used: {100 * changed:.1f}% of its pixels are not black but (partly) "
                                 "transparent; they count as drawn over black")
    return mask


# --- writing ------------------------------------------------------------------------------------

TEMPORARY_SUFFIX = ".lama_cli.tmp"
# A temporary file younger than this may still be written by a run on another machine.
_STALE_AFTER_S = 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: hidden, and named after this host and process."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}{TEMPORARY_SUFFIX}")


def _process_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; rely on the file's age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path) -> bool:
    parts = path.name[: -len(TEMPORARY_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return False
    _, host, pid = parts
    if host == _host() and int(pid) != os.getpid() and not _process_exists(int(pid)):
        return True
    try:
        return time.time() - path.stat().st_mtime > _STALE_AFTER_S
    except FileNotFoundError:
        return False


def prepare_output_folder(folder: Path) -> list[str]:
    """Create ``folder``, prove that files can be written there, and remove temporary files of
    ours left by killed runs. Returns the names removed.

    Raises:
        OSError: the folder cannot be created or written to.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = temporary_path(folder / ".write-test")
    with open(probe, "wb") as file:
        file.write(b"lama_cli")
    probe.unlink()
    removed = []
    for path in sorted(folder.glob(f".*{TEMPORARY_SUFFIX}")):
        if path.is_file() and _is_stale(path):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def _encode(samples: np.ndarray, alpha: np.ndarray | None, space: str, output_format: str,
            icc_profile: bytes | None, exif: Image.Exif | None, dpi) -> tuple[bytes | Image.Image, dict]:
    """The file's bytes (our encoders) or a Pillow image and its save options."""
    spec = OUTPUT_FORMATS[output_format]
    pixels = samples if alpha is None else np.concatenate([samples, alpha[..., None]], axis=2)
    if output_format == "tiff":
        return formats.encode_tiff(pixels, space=space, alpha=alpha is not None, icc_profile=icc_profile,
                                   exif=exif, dpi=dpi), {}
    exif_bytes = exif.tobytes() if exif is not None else None
    mode = _PILLOW_MODES.get((space, samples.dtype, alpha is not None))
    if mode is None:  # 16-bit grey + alpha or colour: Pillow has no such mode
        assert output_format == "png", f"{output_format} cannot store {samples.dtype} {space}"
        return formats.encode_png(pixels, icc_profile=icc_profile, exif=exif_bytes, dpi=dpi), {}
    stored = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)  # I;16 is little-endian
    image = Image.frombytes(mode, (pixels.shape[1], pixels.shape[0]), stored.tobytes())
    options = dict(spec.options)
    for name, value in (("icc_profile", icc_profile), ("exif", exif_bytes), ("dpi", dpi)):
        if value:
            options[name] = value
    return image, options


def save_image(path: Path, samples: np.ndarray, alpha: np.ndarray | None, space: str, output_format: str, *,
               icc_profile: bytes | None = None, exif: Image.Exif | None = None,
               dpi: tuple[float, float] | None = None) -> list[str]:
    """Write (H, W, C) ``samples`` (+ (H, W) ``alpha``) to ``path`` atomically; returns warnings.

    ``samples`` must be what ``output_format`` stores (see :func:`.conversion.plan_output`). EXIF
    that cannot be encoded is dropped with a warning rather than failing the file.
    """
    try:
        _write(path, _encode(samples, alpha, space, output_format, icc_profile, exif, dpi), output_format)
    except (ValueError, TypeError, KeyError, OverflowError) as err:  # what Pillow raises for EXIF it cannot store
        if exif is None:
            raise
        _write(path, _encode(samples, alpha, space, output_format, icc_profile, None, dpi), output_format)
        return [f"EXIF dropped: it cannot be written to {output_format} ({err})"]
    return []


def _write(path: Path, encoded: tuple[bytes | Image.Image, dict], output_format: str) -> None:
    content, options = encoded
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            if isinstance(content, bytes):
                file.write(content)
            else:
                content.save(file, format=OUTPUT_FORMATS[output_format].pillow, **options)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
