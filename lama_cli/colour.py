"""ICC colour profiles: what an embedded profile describes, and conversions with Pillow's ImageCms.

The model sees RGB. A CMYK image is converted to sRGB with its own profile for the model (and
back for the fill when the output stays CMYK); an output whose colour space differs from the
input's (CMYK or grey written as RGB) is converted with the profile and tagged sRGB, so a
profile never ends up describing the wrong kind of data.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms

__all__ = ["Profile", "read_profile", "srgb_profile", "cmyk_to_rgb", "rgb_to_cmyk", "grey_to_rgb", "SPACE_NAMES"]

# ICC colour-space signature -> our colour-space names (see io.LoadedImage.space).
_SPACE_OF_PROFILE = {"RGB": "rgb", "GRAY": "grey", "CMYK": "cmyk"}
# Our colour-space names as messages write them.
SPACE_NAMES = {"rgb": "RGB", "grey": "grey", "cmyk": "CMYK"}
# LittleCMS errors: PyCMSError is what ImageCms raises; OSError for truncated or malformed data.
_CMS_ERRORS = (ImageCms.PyCMSError, OSError, ValueError, TypeError)


@dataclass(frozen=True)
class Profile:
    """An embedded ICC profile that LittleCMS can read."""

    data: bytes
    space: str | None  # "rgb", "grey", "cmyk", or None for another colour space (Lab, ...)
    description: str

    @property
    def cms(self) -> ImageCms.ImageCmsProfile:
        return ImageCms.ImageCmsProfile(io.BytesIO(self.data))


def read_profile(data: bytes) -> Profile | str:
    """The :class:`Profile` of ``data``, or a one-line reason why it cannot be used."""
    try:
        cms = ImageCms.ImageCmsProfile(io.BytesIO(data))
        signature = cms.profile.xcolor_space.strip()
        description = ImageCms.getProfileDescription(cms).strip() or "no description"
    except _CMS_ERRORS as err:
        return f"unreadable ICC profile ({err})"
    return Profile(data, _SPACE_OF_PROFILE.get(signature), description)


@functools.lru_cache(maxsize=1)
def srgb_profile() -> Profile:
    """LittleCMS's built-in sRGB, for outputs converted to sRGB (immutable, built once)."""
    cms = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return Profile(cms.tobytes(), "rgb", ImageCms.getProfileDescription(cms).strip())


def _transform(array: np.ndarray, mode_in: str, mode_out: str, source: Profile, target: Profile) -> np.ndarray:
    image = Image.fromarray(array, mode_in)
    try:
        converted = ImageCms.profileToProfile(image, source.cms, target.cms, outputMode=mode_out)
    except _CMS_ERRORS as err:
        raise ValueError(f"colour conversion {source.description!r} -> {target.description!r} failed: {err}") from err
    return np.asarray(converted).copy()


def cmyk_to_rgb(cmyk: np.ndarray, profile: Profile | None) -> np.ndarray:
    """(H, W, 4) uint8 CMYK -> (H, W, 3) uint8 sRGB with ``profile``; Pillow's naive formula without one."""
    if profile is None:
        return np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB")).copy()
    return _transform(cmyk, "CMYK", "RGB", profile, srgb_profile())


def rgb_to_cmyk(rgb: np.ndarray, profile: Profile | None) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 4) uint8 CMYK with ``profile``; Pillow's naive formula without one."""
    if profile is None:
        return np.asarray(Image.fromarray(rgb, "RGB").convert("CMYK")).copy()
    return _transform(rgb, "RGB", "CMYK", srgb_profile(), profile)


def grey_to_rgb(grey: np.ndarray, profile: Profile | None) -> np.ndarray:
    """(H, W, 1) uint8 grey -> (H, W, 3) uint8 sRGB with ``profile``; the grey repeated without one."""
    if profile is None:
        return np.repeat(grey, 3, axis=2)
    return _transform(grey[..., 0], "L", "RGB", profile, srgb_profile())
