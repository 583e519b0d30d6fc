"""Sample precision: a file's 8-bit, 16-bit or 32-bit float samples <-> the model's float32 in [0, 1].

Nothing here goes through 8 bits unless 8 bits is what the file holds or the output can store.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLE_TYPES", "depth_name", "to_unit", "outside_unit_fraction", "quantize", "convert_depth", "luma"]

# The sample types a decoded image may have, best precision first.
SAMPLE_TYPES = (np.dtype(np.float32), np.dtype(np.uint16), np.dtype(np.uint8))
_MAX = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_NAMES = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit", np.dtype(np.float32): "32-bit float"}
# ITU-R 601 luma, the weights of Pillow's RGB -> L conversion (16-bit fixed point there).
_LUMA_FIXED = (19595, 38470, 7471)


def _check_type(samples: np.ndarray) -> np.dtype:
    if samples.dtype not in _NAMES:
        raise TypeError(f"samples: expected uint8, uint16 or float32, got {samples.dtype}")
    return samples.dtype


def depth_name(dtype: np.dtype | type) -> str:
    """``"8-bit"``, ``"16-bit"`` or ``"32-bit float"``."""
    return _NAMES[np.dtype(dtype)]


def to_unit(samples: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] of the same shape: integers divided by their maximum, floats clipped.

    Non-finite floats become 0 (NaN, -inf) or 1 (+inf), so that one bad sample cannot spread through
    the model's Fourier convolutions over the whole fill.
    """
    dtype = _check_type(samples)
    if dtype == np.float32:
        return np.nan_to_num(np.clip(samples, 0, 1), nan=0.0, posinf=1.0, neginf=0.0)
    return samples.astype(np.float32) / np.float32(_MAX[dtype])


def outside_unit_fraction(samples: np.ndarray) -> float:
    """Fraction of float samples outside [0, 1] or not finite (what :func:`to_unit` changes); 0 for integers."""
    if _check_type(samples) != np.float32 or samples.size == 0:
        return 0.0
    inside = (samples >= 0) & (samples <= 1)  # False for NaN
    return float(1 - inside.mean())


def quantize(unit: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Model output in [0, 1] -> ``dtype`` samples; integers truncate, as the official predict script
    and ComfyUI's SaveImage write their 8-bit files."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return unit.astype(np.float32, copy=True)
    top = _MAX[dtype]
    return np.clip(unit * np.float32(top), 0, top).astype(dtype)


def convert_depth(samples: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Existing samples at another precision, rounded to nearest (8 -> 16 bit is exact: x 257)."""
    source, dtype = _check_type(samples), np.dtype(dtype)
    if source == dtype:
        return samples
    if dtype == np.float32:
        return to_unit(samples)
    if source == np.uint8:  # to uint16
        return samples.astype(np.uint16) * np.uint16(257)
    if source == np.uint16:  # to uint8
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    top = _MAX[dtype]  # float to integers
    return np.round(to_unit(samples).astype(np.float64) * top).astype(dtype)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W, 1) grey of the same type, with Pillow's RGB -> L weights.

    Integers use Pillow's own fixed-point formula, so an 8-bit colour mask reads exactly as
    ``convert("L")`` reads it.
    """
    dtype = _check_type(rgb)
    if dtype == np.float32:
        weights = np.array(_LUMA_FIXED, np.float32) / np.float32(65536)
        return (rgb @ weights)[..., None].astype(np.float32)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    grey = (r * _LUMA_FIXED[0] + g * _LUMA_FIXED[1] + b * _LUMA_FIXED[2] + 0x8000) >> 16
    return grey.astype(dtype)[..., None]
