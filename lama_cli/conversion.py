"""What an output keeps of its input, and the pixel conversions between file, model and output.

One decision per file, :func:`plan_output`: the output's colour space, sample type, alpha and
profile follow the input as far as the output format allows; every difference is a warning. The
model sees float32 RGB in [0, 1] computed from the input's own samples (never through 8 bits
unless the file is 8-bit); its fill is converted to the output's space and type, and pixels outside
the hole are the input's samples at the output's type: identical when the type and space are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .colour import SPACE_NAMES, Profile, cmyk_to_rgb, grey_to_rgb, rgb_to_cmyk, srgb_profile
from .io import OUTPUT_FORMATS, LoadedImage
from .pixels import SAMPLE_TYPES, convert_depth, depth_name, luma, outside_unit_fraction, quantize, to_unit

__all__ = ["OutputPlan", "plan_output", "model_input", "compose_output"]

U8 = np.dtype(np.uint8)


@dataclass(frozen=True)
class OutputPlan:
    """What one output file stores."""

    output_format: str
    space: str  # "grey", "rgb" or "cmyk"
    sample_type: np.dtype
    alpha: bool
    profile: Profile | None  # embedded in the output
    warnings: tuple[str, ...]  # each difference from the input, one line each


def _keep_hint(wanted: str, condition) -> str:
    """`` (use --format tiff to keep 32-bit float)``: the formats that would keep it, or nothing."""
    names = [name for name, spec in OUTPUT_FORMATS.items() if condition(spec)]
    return f" (use --format {' or '.join(names)} to keep {wanted})" if names else ""


def plan_output(image: LoadedImage, output_format: str) -> OutputPlan:
    """The output of ``image`` in ``output_format``, and a warning for everything it cannot keep."""
    spec = OUTPUT_FORMATS[output_format]
    warnings: list[str] = []
    source_type = image.samples.dtype

    space = image.space if image.space in spec.spaces else "rgb"
    if space != image.space:
        name = SPACE_NAMES[image.space]
        hint = _keep_hint(name, lambda s: image.space in s.spaces)
        how = (f"with its ICC profile {image.profile.description!r}" if image.profile is not None
               else "with the naive formula, no ICC profile (colours may be off)" if image.space == "cmyk"
               else "by repeating the grey")
        warnings.append(f"{name} converted to {'sRGB' if image.profile else 'RGB'} {how}: "
                        f"{output_format} cannot store {name}{hint}")

    # The best type the format stores that is not finer than the input's; ImageCms converts at 8 bits.
    converts_with_cms = space != image.space and (image.space == "cmyk" or image.profile is not None)
    candidates = SAMPLE_TYPES[SAMPLE_TYPES.index(source_type):]
    sample_type = U8 if converts_with_cms else next(t for t in candidates if t in spec.sample_types)
    if sample_type != source_type:
        if converts_with_cms:
            reason = "the colour conversion works at 8 bits"
        else:
            kept = ", ".join(depth_name(t) for t in spec.sample_types)
            hint = _keep_hint(depth_name(source_type), lambda s: source_type in s.sample_types and image.space in s.spaces)
            reason = f"{output_format} stores {kept} samples{hint}"
        warnings.append(f"{depth_name(source_type)} samples reduced to {depth_name(sample_type)}: {reason}")

    if space == image.space == "cmyk":
        if image.profile is None:
            warnings.append("CMYK without an ICC profile: the fill is converted from the model's RGB with the "
                            "naive formula (colours may be off)")
        if sample_type != U8:
            warnings.append(f"{depth_name(sample_type)} CMYK: the model and its fill work at 8 bits (the colour "
                            f"conversion); pixels outside the hole keep their {depth_name(sample_type)}")

    outside = outside_unit_fraction(image.samples)
    if outside:
        where = ("pixels outside the hole keep them" if sample_type == source_type
                 else "the output clips them too")
        warnings.append(f"{100 * outside:.2f}% of the float samples are outside [0, 1] or not finite: "
                        f"the model sees them clipped, {where}")

    alpha = image.alpha is not None and spec.alpha
    if image.alpha is not None and not spec.alpha:
        warnings.append(f"alpha channel dropped: {output_format} cannot store it")

    profile = image.profile if space == image.space else (srgb_profile() if image.profile is not None else None)
    return OutputPlan(output_format, space, sample_type, alpha, profile, tuple(warnings))


def _as_rgb8(image: LoadedImage) -> np.ndarray:
    """The image as (H, W, 3) uint8 sRGB, converted with its profile (CMYK and grey only)."""
    samples8 = convert_depth(image.samples, U8)
    if image.space == "cmyk":
        return cmyk_to_rgb(samples8, image.profile)
    return grey_to_rgb(samples8, image.profile)


def model_input(image: LoadedImage) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] for the model, from the image's own samples.

    Grey is repeated into RGB; CMYK is converted to sRGB with its profile (Pillow's naive formula
    without one), which is 8-bit.
    """
    if image.space == "rgb":
        return to_unit(image.samples)
    if image.space == "grey":
        return np.repeat(to_unit(image.samples), 3, axis=2)
    return to_unit(_as_rgb8(image))


def _base(image: LoadedImage, plan: OutputPlan) -> np.ndarray:
    """The input's pixels in the output's space and type: the input itself when both are kept."""
    if plan.space == image.space:
        return convert_depth(image.samples, plan.sample_type)
    if image.space == "grey" and image.profile is None:  # grey written as RGB: repeated at any depth
        return convert_depth(np.repeat(image.samples, 3, axis=2), plan.sample_type)
    return convert_depth(_as_rgb8(image), plan.sample_type)


def _fill(rgb_unit: np.ndarray, image: LoadedImage, plan: OutputPlan) -> np.ndarray:
    """The model's (H, W, 3) float output in the output's space and type."""
    if plan.space == "rgb":
        return quantize(rgb_unit, plan.sample_type)
    if plan.space == "grey":
        return quantize(luma(rgb_unit), plan.sample_type)
    cmyk = rgb_to_cmyk(quantize(rgb_unit, U8), image.profile)
    return convert_depth(cmyk, plan.sample_type)


def compose_output(image: LoadedImage, plan: OutputPlan, fill_rgb: np.ndarray | None,
                   hole: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples, alpha or None) of the output: the fill inside ``hole`` (H, W) bool, the input elsewhere.

    ``fill_rgb``: (H, W, 3) float32 in [0, 1] from the model, or None when nothing was filled.
    """
    base = _base(image, plan)
    if fill_rgb is not None and hole.any():
        # Only the hole's pixels are converted: a CMYK fill goes through ImageCms, which is per pixel.
        base = base.copy() if base is image.samples else base
        base[hole] = _fill(fill_rgb[hole][None], image, plan)[0]
    alpha = convert_depth(image.alpha, plan.sample_type) if plan.alpha else None
    return base, alpha
