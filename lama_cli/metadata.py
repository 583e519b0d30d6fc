"""EXIF: the orientation applied to decoded pixels, and the EXIF an output keeps."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["ORIENTATION_TAG", "read_exif", "orientation_of", "apply_orientation", "orientation_text", "exif_for_output"]

ORIENTATION_TAG = 0x0112
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
# What the viewer does to the stored pixels for each EXIF orientation (2..8); 1 is "as stored".
_ORIENTATION_TEXT = {
    2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
    5: "mirrored along the main diagonal", 6: "rotated 90° clockwise",
    7: "mirrored along the anti-diagonal", 8: "rotated 90° counter-clockwise",
}
# TIFF tags that describe how a file stores its pixels (Pillow's getexif() of a TIFF returns its
# whole first directory). They must not be copied into another file, whose own writer sets them.
_STORAGE_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 292, 293, 317,
    320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 512, 513, 514, 515, 517, 518, 519, 520,
    521, 529, 530, 531, 532, 34675,  # 34675: the ICC profile, written separately
})


def read_exif(image: Image.Image) -> Image.Exif:
    """The EXIF of an open image, sub-directories included: Pillow reads those lazily from the
    file, which is closed by the time the output is written."""
    exif = image.getexif()
    # Only those present: get_ifd() of a missing one would add an empty directory to the output.
    for tag in (_EXIF_IFD, _GPS_IFD):
        if tag in exif:
            exif.get_ifd(tag)
    if _EXIF_IFD in exif and _INTEROP_IFD in exif.get_ifd(_EXIF_IFD):
        exif.get_ifd(_INTEROP_IFD)
    return exif


def orientation_of(exif: Image.Exif) -> int:
    """EXIF orientation 1..8; anything else (missing, malformed) counts as 1, as Pillow does."""
    value = exif.get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, ...) stored pixels -> as viewers show them (what ``ImageOps.exif_transpose`` does)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def orientation_text(orientation: int) -> str:
    """``"EXIF orientation 6: rotated 90° clockwise"``."""
    return f"EXIF orientation {orientation}: {_ORIENTATION_TEXT.get(orientation, 'as stored')}"


def exif_for_output(exif: Image.Exif) -> Image.Exif | None:
    """The input's EXIF for the output (modified in place): storage tags dropped, orientation set to 1
    because the output's pixels are already oriented. None when nothing is left."""
    for tag in [tag for tag in exif if tag in _STORAGE_TAGS]:
        del exif[tag]
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    return exif if len(exif) else None
