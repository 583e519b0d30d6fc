"""Image and mask files: reading with Pillow into uint8 arrays, writing outputs atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["InputError", "LoadedImage", "read_image", "read_mask", "save_image", "OUTPUT_FORMATS"]

# --format value -> (file extension, Pillow format, save options, keeps alpha)
OUTPUT_FORMATS: dict[str, tuple[str, str, dict, bool]] = {
    "png": (".png", "PNG", {}, True),
    "webp": (".webp", "WEBP", {"lossless": True}, True),
    "jpg": (".jpg", "JPEG", {"quality": 95}, False),
}


class InputError(Exception):
    """A problem with one input file; the batch reports it and goes on with the next file."""


@dataclass
class LoadedImage:
    """An input image as 8-bit arrays, with what the output must carry over."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, passed through to the output untouched
    icc_profile: bytes | None  # so the output shows the same colours as the input

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def _open(path: Path, what: str) -> Image.Image:
    try:
        with Image.open(path) as opened:
            # Apply the EXIF orientation: masks are painted over the image as viewers show it.
            image = ImageOps.exif_transpose(opened)
            image.load()
            return image
    except FileNotFoundError as err:
        raise InputError(f"{what} {path.name}: file not found") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # What Pillow raises for unknown, truncated or malformed files.
        raise InputError(f"{what} {path.name}: cannot read ({err})") from err


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)


def read_image(path: Path) -> LoadedImage:
    """Read an image as RGB; an alpha channel (RGBA, LA, transparent palette) is kept aside."""
    image = _open(path, "image")
    alpha = None
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A")).copy()
        image = rgba
    rgb = np.asarray(image.convert("RGB")).copy()
    return LoadedImage(rgb=rgb, alpha=alpha, icc_profile=image.info.get("icc_profile"))


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as grey levels (H, W) uint8, Pillow mode "L" like the official loader.

    Colour masks count by luminance; an alpha channel is ignored (transparent black reads as 0,
    so white strokes on a transparent layer work as they look).
    """
    return np.asarray(_open(path, "mask").convert("L")).copy()


def save_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, icc_profile: bytes | None,
               output_format: str = "png") -> bool:
    """Write ``rgb`` (+ ``alpha``) to ``path``; returns False when the format had to drop alpha.

    The file appears only once complete (temporary file + rename), so an interrupted run never
    leaves a truncated output that a later run would skip as done.
    """
    _, pillow_format, options, keeps_alpha = OUTPUT_FORMATS[output_format]
    image = Image.fromarray(rgb)
    if alpha is not None and keeps_alpha:
        image = Image.fromarray(np.dstack([rgb, alpha]))
    if icc_profile:
        options = {**options, "icc_profile": icc_profile}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(temporary, format=pillow_format, **options)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return alpha is None or keeps_alpha
