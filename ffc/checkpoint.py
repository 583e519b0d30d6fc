"""Read every LaMa checkpoint format users have and canonicalise it (``docs/lama-reference.md`` §3).

Formats are detected from the file's content, not its extension:

* safetensors (any key prefix, including our own canonical conversion);
* TorchScript archives (``big-lama.pt`` from IOPaint / lama-cleaner with ``generator.model.*``
  keys, or from ``bin/to_jit.py`` with ``model.generator.model.*``);
* torch pickles: Lightning ``best.ckpt`` (weights under ``state_dict`` with prefix
  ``generator.``, plus callbacks and OmegaConf configs) and plain ``.pth``/``.ckpt`` state dicts,
  zip or legacy, including whole pickled modules (``torch.save(model)``).

Nothing in a file runs: safetensors holds only tensors, and every torch file is read by
:mod:`ffc.torch_files`, which unpickles with :mod:`ffc.safe_pickle` (no class a file names is
imported) and rebuilds tensors from the stored bytes itself. ``torch.load`` and
``torch.jit.load`` are never called: the latter compiles a TorchScript file's code and runs its
modules' ``__setstate__``, which can write files or never return.

Which LaMa a file holds (Big-LaMa, LaMa-Fourier, LaMa-MPE, manga-image-translator's lama_large, ...)
is decided from tensor names and shapes by :mod:`ffc.variants`; tensors no known model uses are
reported in :class:`ModelInfo`, never dropped silently. The canonical layout is
``model.<index>.<path>`` plus ``mpe.*`` for LaMa-MPE (``LamaGenerator.state_dict()``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import torch_files, variants
from .errors import CheckpointError
from .generator import LamaConfig, LamaGenerator
from .variants import Detection

__all__ = [
    "CheckpointError",
    "ModelInfo",
    "detect_format",
    "read_tensors",
    "canonicalize",
    "load_generator",
    "generator_from_state_dict",
    "generator_from_detection",
    "file_sha256",
]

log = logging.getLogger(__name__)

# Metadata key our converter writes into canonical safetensors files.
FORMAT_TAG = "lama-ffc-canonical/1"
# How many unknown tensor names a one-line description lists.
_SHOWN_UNUSED = 3


@dataclass(frozen=True)
class ModelInfo:
    """What the loader found in a file."""

    path: str
    source_format: str  # safetensors | torchscript | lightning-ckpt | torch-pickle
    key_prefix: str  # what preceded "<index>." in the file, e.g. "generator.model."
    config: LamaConfig
    parameters: int
    ignored_keys: int = 0  # known training state (discriminator, evaluator, loss networks, optimizer)
    metadata: dict[str, str] = field(default_factory=dict)
    variant: str = ""  # display name, e.g. "Big-LaMa" or "LaMa-MPE"
    variant_id: str = ""  # stable id from ffc.variants.VARIANTS, e.g. "big-lama", "lama-mpe"
    refinable: bool = True  # the network splits into front and rear (multiscale refinement works)
    unused_keys: tuple[str, ...] = ()  # tensors the loader does not know, as named in the file
    part_prefixes: dict[str, str] = field(default_factory=dict)  # e.g. {"mpe": "str_state_dict."}

    @property
    def warnings(self) -> list[str]:
        """What a UI should show next to the model (empty when everything in the file was used)."""
        if not self.unused_keys:
            return []
        shown = ", ".join(self.unused_keys[:_SHOWN_UNUSED])
        more = f" and {len(self.unused_keys) - _SHOWN_UNUSED} more" if len(self.unused_keys) > _SHOWN_UNUSED else ""
        return [f"{len(self.unused_keys)} tensor(s) in the file are not part of any model the loader knows and were "
                f"not used: {shown}{more}"]

    def describe(self) -> str:
        """One line for logs and UIs."""
        origin = self.metadata.get("source_format", "")
        # Metadata is the file's text: shown only when it is one of our format names.
        known = origin in ("safetensors", "torchscript", "lightning-ckpt", "torch-pickle")
        via = f", converted from {origin}" if known and self.source_format == "safetensors" else ""
        mpe = self.part_prefixes.get("mpe")
        parts = f", MPE '{mpe}*'" if mpe is not None else ""
        extra = f", {self.ignored_keys} training tensors ignored" if self.ignored_keys else ""
        refine = "refinable" if self.refinable else "not refinable"
        line = (
            f"{self.variant}: {self.config.n_blocks} blocks, {self.parameters:,} parameters, "
            f"{self.source_format} file{via} (keys '{self.key_prefix}<i>.*'{parts}), {refine}{extra}"
        )
        return "; ".join([line, *self.warnings])


def detect_format(path: str) -> str:
    """Return ``safetensors``, ``torchscript``, ``torch-zip`` or ``torch-legacy`` from the file's bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise CheckpointError(f"{path}: cannot open ({err.strerror or err})") from err
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated ({size} bytes)")
    if head.startswith(b"PK\x03\x04"):
        try:
            return torch_files.zip_kind(path)
        except torch_files.TorchFileError as err:
            raise CheckpointError(f"{path}: {err}") from err
    header_len = struct.unpack("<Q", head[:8])[0]
    if head[8:9] == b"{" and 0 < header_len < size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-legacy"
    raise CheckpointError(
        f"{path}: unknown file format (expected safetensors, a TorchScript .pt or a torch .ckpt/.pth)"
    )


def _read_safetensors(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, metadata
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors file, it may be truncated or corrupt ({err})") from err


def _read_torch_file(path: str, kind: str) -> object:
    reader = torch_files.read_legacy_pickle if kind == "torch-legacy" else torch_files.read_zip_archive
    try:
        return reader(path)
    except torch_files.TorchFileError as err:
        hint = ""
        if kind == "torchscript":
            hint = (" -- the pack reads TorchScript weights without running the file's code; if you trust this "
                    "file, export its state_dict() to .safetensors yourself and load that")
        raise CheckpointError(f"{path}: cannot read this {kind} file: {err}{hint}") from err


def read_tensors(path: str) -> tuple[dict[str, Tensor], str, dict[str, str]]:
    """Read all tensors of a checkpoint as a flat ``{key: tensor}`` dict, running nothing in the file.

    Returns:
        (tensors, source_format, metadata). For pickles, a top-level ``state_dict`` entry is
        unwrapped (Lightning); other nested dicts and pickled modules keep their names as key
        prefixes; a TorchScript module's tensors are keyed like its ``state_dict()``.
    """
    kind = detect_format(path)
    if kind == "safetensors":
        tensors, metadata = _read_safetensors(path)
        return tensors, "safetensors", metadata
    obj = _read_torch_file(path, kind)
    source = "torchscript" if kind == "torchscript" else "torch-pickle"
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        source = "lightning-ckpt" if any(k in obj for k in ("pytorch-lightning_version", "epoch", "global_step")) else source
        obj = obj["state_dict"]
    tensors = torch_files.collect_tensors(obj)
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found in this {kind} file")
    return tensors, source, {}


def canonicalize(tensors: Mapping[str, Tensor], path: str = "<state dict>") -> tuple[dict[str, Tensor], str, int]:
    """Map a LaMa generator with any wrapper prefix to canonical ``model.<i>.*`` keys.

    The prefix is whatever precedes ``1.ffc.convl2l.weight`` (the init conv); other keys
    (discriminator, evaluator, optimizer, an MPE module) are left out and counted.
    :func:`ffc.variants.detect` is the full analysis (every part, leftovers by kind).

    Returns:
        (canonical tensors, detected prefix, number of keys left out)
    """
    prefix = variants.locate_generator(tensors, path)
    canonical = {}
    for key, value in tensors.items():
        rest = variants.GENERATOR.rest(key, prefix)
        if rest is not None:
            canonical["model." + rest] = value
    return canonical, prefix, len(tensors) - len(canonical)


def generator_from_detection(detection: Detection, path: str = "<state dict>") -> LamaGenerator:
    """Build the detected variant and load its tensors strictly.

    Raises:
        CheckpointError: naming the file, the variant and the first missing, unexpected or
            mis-shaped tensor (as it is named in the file).
    """
    state, name = detection.state, detection.name
    generator = LamaGenerator(detection.config)
    expected = generator.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(
                f"{path}: looks like {name} but tensor '{detection.file_key(key)}' is missing "
                f"(expected shape {list(tensor.shape)})"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: looks like {name} but tensor '{detection.file_key(key)}' has shape {list(state[key].shape)}, "
                f"expected {list(tensor.shape)}"
            )
    for key in state:
        if key not in expected:
            raise CheckpointError(
                f"{path}: looks like {name} but has tensor '{detection.file_key(key)}', which that network does not "
                "have (an unsupported LaMa variant?)"
            )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor '{detection.file_key(key)}' contains NaN or infinite values (corrupt file?)")
    generator.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return generator.eval().requires_grad_(False)


def generator_from_state_dict(state: Mapping[str, Tensor], path: str = "<state dict>") -> LamaGenerator:
    """Build a generator whose configuration matches canonical ``state`` and load it strictly.

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor.
    """
    return generator_from_detection(variants.detect(state, path), path)


def load_generator(path: str | os.PathLike[str]) -> tuple[LamaGenerator, ModelInfo]:
    """Load any supported LaMa file as a float32 CPU :class:`LamaGenerator` in eval mode.

    The returned generator's parameters do not require grad (inference and refinement only
    need gradients with respect to features). Tensors the loader does not know are listed in
    ``info.unused_keys`` (and logged as a warning), never dropped silently.

    Raises:
        CheckpointError: unreadable, truncated, non-LaMa or unsupported files, and missing or
            mis-shaped tensors (naming the file, the variant and the tensor).
    """
    path = os.fspath(path)
    tensors, source_format, metadata = read_tensors(path)
    detection = variants.detect(tensors, path)
    generator = generator_from_detection(detection, path)
    info = ModelInfo(
        path=path,
        source_format=source_format,
        key_prefix=detection.prefixes["generator"],
        config=generator.config,
        parameters=generator.num_parameters(),
        ignored_keys=len(detection.ignored),
        metadata=metadata,
        variant=detection.name,
        variant_id=detection.variant.id,
        refinable=detection.variant.refinable,
        unused_keys=detection.unused,
        part_prefixes=dict(detection.prefixes),
    )
    log.info("Loaded %s: %s", os.path.basename(path), info.describe())
    for warning in info.warnings:
        log.warning("%s: %s", os.path.basename(path), warning)
    return generator, info


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
