"""Which LaMa a file holds, from tensor names and shapes only (never from the file's name).

A variant is a small declarative spec (spandrel-style): the parts of a model and the key suffix
that finds each part whatever wraps it, the configuration it covers (read from shapes by
:func:`ffc.generator.config_from_state_dict`), whether refinement can split it into front and rear,
and where such files come from. Every supported variant runs through the one FFC core
(:class:`ffc.generator.LamaGenerator`); LaMa-MPE adds its masking positional encoding module
(:mod:`ffc.mpe`). Every variant takes the same input, ``cat(image * (1 - hole), hole)`` with the
image in [0, 1] and a binary hole, and returns a sigmoid prediction in (0, 1) (checked against each
upstream's code: see ``tests/fixtures/variants/provenance.json``).

Files that look like LaMa but are another network get a named refusal (:data:`UNSUPPORTED`);
tensors that are not part of the inference model are sorted into known training state
(discriminator, evaluator, loss networks, optimizer) and tensors the loader does not know, which are
reported, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from torch import Tensor

from .errors import CheckpointError
from .generator import BIG_LAMA, LAMA_FOURIER, LamaConfig, config_from_state_dict

__all__ = [
    "Part",
    "Variant",
    "Detection",
    "GENERATOR",
    "MPE",
    "VARIANTS",
    "UNSUPPORTED",
    "detect",
    "identify",
    "locate_generator",
    "not_for_inference",
]


@dataclass(frozen=True)
class Part:
    """Tensors of one model part: found by ``anchor`` (a key suffix only this part has), stored
    under ``canonical`` in our layout. ``keys`` restricts the part to these key suffixes (None: any
    ``<index>.<path>`` key, the generator's ``nn.Sequential`` layout)."""

    name: str
    canonical: str
    anchor: str
    keys: tuple[str, ...] | None = None

    def rest(self, key: str, prefix: str) -> str | None:
        """The part-relative name of ``key`` under ``prefix``, or None if it is not this part's."""
        if not key.startswith(prefix):
            return None
        rest = key[len(prefix):]
        if self.keys is None:
            return rest if _SEQUENTIAL.match(rest) else None
        return rest if rest in self.keys else None


_SEQUENTIAL = re.compile(r"^\d+\..+$")

GENERATOR = Part("generator", "model.", "1.ffc.convl2l.weight")
MPE = Part("mpe", "mpe.", "rel_pos_emb.weight", keys=("rel_pos_emb.weight", "direct_emb.weight", "alpha5", "alpha6"))
PARTS = (GENERATOR, MPE)

# Generator wrappers seen in the wild, most specific first (used only to break ties).
_KNOWN_PREFIXES = ("model.generator.model.", "generator.model.", "model.model.", "gen_state_dict.model.", "model.", "")


Fingerprint = Callable[[LamaConfig, Mapping[str, str]], bool]  # (config, part prefixes) -> match


def _same_architecture(reference: LamaConfig) -> Fingerprint:
    return lambda config, prefixes: config == reference


@dataclass(frozen=True)
class Variant:
    """One LaMa release (or family): how to recognise it and what it is."""

    id: str
    name: str
    origin: str
    matches: Fingerprint
    # The configuration of the released model; files of another size get it in the name.
    reference: LamaConfig | None = None
    refinable: bool = True

    def display_name(self, config: LamaConfig) -> str:
        if self.reference is not None and config == self.reference:
            return self.name
        return f"{self.name} (ngf {config.ngf}, {config.n_blocks} blocks)"


# First match wins. The input/output convention is the same for all of them (module docstring).
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "lama-mpe", "LaMa-MPE",
        "manga-image-translator inpainting_lama_mpe.ckpt: LaMa-Fourier plus ZITS's masking positional encoding "
        "('gen_state_dict' + 'str_state_dict')",
        matches=lambda config, prefixes: "mpe" in prefixes,
        reference=replace(LAMA_FOURIER, mpe_positions=128),
    ),
    Variant(
        "mit-lama-large", "Big-LaMa, manga-image-translator checkpoint (lama_large)",
        "manga-image-translator lama_large_512px.ckpt ('gen_state_dict'): Big-LaMa fine-tuned on manga and anime "
        "at 512 px; same network and pre/post-processing as Big-LaMa",
        matches=lambda config, prefixes: config == BIG_LAMA and prefixes["generator"].startswith("gen_state_dict."),
        reference=BIG_LAMA,
    ),
    Variant(
        "big-lama", "Big-LaMa",
        "official big-lama best.ckpt, IOPaint big-lama.pt and anime-manga-big-lama.pt, simple-lama, "
        "ControlNetLama.pth, Big-LaMa-CelebA, safetensors re-packs",
        matches=_same_architecture(BIG_LAMA),
        reference=BIG_LAMA,
    ),
    Variant(
        "lama-fourier", "LaMa-Fourier",
        "official lama-fourier and lama-fourier-celeba",
        matches=_same_architecture(LAMA_FOURIER),
        reference=LAMA_FOURIER,
    ),
    Variant(
        "ffc-generator", "FFC generator",
        "another FFCResNetGenerator configuration (e.g. the test models)",
        matches=lambda config, prefixes: not config.has_mpe,
    ),
)


@dataclass(frozen=True)
class Unsupported:
    """A network that is not one of ours although it looks related; ``matches`` returns the key
    that gives it away, or None."""

    name: str
    reason: str
    matches: Callable[[Mapping[str, Tensor]], str | None]


def _key_with_suffix(suffix: str) -> Callable[[Mapping[str, Tensor]], str | None]:
    return lambda tensors: next((k for k in tensors if k == suffix or k.endswith("." + suffix)), None)


def _regular_lama(tensors: Mapping[str, Tensor]) -> str | None:
    # pix2pixHD global generator: a 7x7 input convolution with bias on 4 channels, no FFC anywhere.
    if any("ffc." in k for k in tensors):
        return None
    for key, value in tensors.items():
        if (key == "model.1.weight" or key.endswith(".model.1.weight")) and tuple(value.shape[1:]) == (4, 7, 7):
            return key
    return None


def _small_kernel_lama(tensors: Mapping[str, Tensor]) -> str | None:
    # Called with the canonical generator: 3x3 input and 4x4 strided convolutions.
    init, down = tensors.get("model.1.ffc.convl2l.weight"), tensors.get("model.2.ffc.convl2l.weight")
    if init is not None and down is not None and init.ndim == 4 and down.ndim == 4:
        if init.shape[-1] == 3 and down.shape[-1] == 4:
            return "model.1.ffc.convl2l.weight"
    return None


UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported(
        "ZITS (ZITS_inpainting's own LaMa layout, also in IOPaint's zits-*.pt)",
        "a different network (plain convolutions with biases, ResnetBlock_remove_IN blocks, structure features "
        "from a transformer as extra inputs), not LaMa's FFCResNetGenerator",
        _key_with_suffix("middle.0.ffc1.ffc.convl2l.weight"),
    ),
    Unsupported(
        "LaMa-regular (pix2pixHD ResNet generator without Fourier convolutions)",
        "the official 'lama-regular' / 'big-lama-regular' models have no FFC layers; only LaMa's FFC generators "
        "are supported",
        _regular_lama,
    ),
)
# Checked on the canonical generator tensors, once a generator was found.
UNSUPPORTED_GENERATORS: tuple[Unsupported, ...] = (
    Unsupported(
        "manga-image-translator inpainting_lama.py generator",
        "3x3 input and 4x4 strided convolutions, the mask as the first input channel and no output activation; "
        "that code is marked unused and no weights for it were released",
        _small_kernel_lama,
    ),
)


# Training state that is in checkpoints but not part of the inference model, by the first key
# component: Lightning's LaMa training module (discriminator, evaluators, loss networks) and
# optimizer states.
_NOT_FOR_INFERENCE = re.compile(
    r"^(discriminator|val_evaluator|test_evaluator|evaluator|loss_[A-Za-z0-9_]+|optimizer[A-Za-z0-9_]*|"
    r"optimizer_states|lr_schedulers)(\.|$)"
)


def not_for_inference(key: str) -> bool:
    """Whether ``key`` is known training state (discriminator, evaluator, loss network, optimizer)."""
    return bool(_NOT_FOR_INFERENCE.match(key))


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found: the variant, its canonical tensors and what was left over."""

    variant: Variant
    config: LamaConfig
    prefixes: dict[str, str]  # part name -> prefix in the file, e.g. {"generator": "gen_state_dict.model."}
    state: dict[str, Tensor]  # canonical keys ("model.<i>...", "mpe....")
    sources: dict[str, str]  # canonical key -> key in the file
    ignored: tuple[str, ...] = ()  # known training state, not needed for inference
    unused: tuple[str, ...] = ()  # tensors the loader does not know: reported, never dropped silently

    @property
    def name(self) -> str:
        return self.variant.display_name(self.config)

    def file_key(self, canonical: str) -> str:
        """The name a canonical key has (or would have) in the file."""
        if canonical in self.sources:
            return self.sources[canonical]
        for part in PARTS:
            if canonical.startswith(part.canonical) and part.name in self.prefixes:
                return self.prefixes[part.name] + canonical[len(part.canonical):]
        return canonical


def _part_prefixes(tensors: Mapping[str, Tensor], part: Part) -> list[str]:
    prefixes = [k[: -len(part.anchor)] for k in tensors if k.endswith(part.anchor)]
    return [p for p in prefixes if p == "" or p.endswith(".")]


def locate_generator(tensors: Mapping[str, Tensor], path: str) -> str:
    """The prefix in front of the generator's ``<index>.`` keys (e.g. ``"generator.model."``).

    Raises:
        CheckpointError: no generator (naming a related network when it is one), or several.
    """
    prefixes = _part_prefixes(tensors, GENERATOR)
    if not prefixes:
        for network in UNSUPPORTED:
            key = network.matches(tensors)
            if key is not None:
                raise CheckpointError(f"{path}: this is {network.name} (tensor '{key}'), which is not supported: {network.reason}")
        sample = ", ".join(sorted(tensors)[:3])
        raise CheckpointError(
            f"{path}: not a LaMa generator (no tensor named '...{GENERATOR.anchor}', the FFC input convolution; "
            f"found {len(tensors)} tensors such as {sample})"
        )
    if len(prefixes) > 1:
        ranked = [p for p in _KNOWN_PREFIXES if p in prefixes]
        if not ranked:
            raise CheckpointError(f"{path}: several generators in one file ({', '.join(sorted(prefixes))}); convert one")
        prefixes = ranked[:1]
    return prefixes[0]


def _locate_mpe(tensors: Mapping[str, Tensor], path: str) -> str | None:
    prefixes = _part_prefixes(tensors, MPE)
    if len(prefixes) > 1:
        raise CheckpointError(f"{path}: several masking positional encodings in one file ({', '.join(sorted(prefixes))})")
    return prefixes[0] if prefixes else None


def identify(config: LamaConfig, prefixes: Mapping[str, str] | None = None) -> Variant:
    """The first variant of :data:`VARIANTS` whose fingerprint matches (prefixes: part -> file prefix)."""
    prefixes = {"generator": "model.", **(prefixes or {})}
    if config.has_mpe:
        prefixes.setdefault("mpe", "mpe.")
    return next(v for v in VARIANTS if v.matches(config, prefixes))


def detect(tensors: Mapping[str, Tensor], path: str = "<state dict>") -> Detection:
    """Find the model parts of a flat ``{key: tensor}`` file and name its variant.

    Only names and shapes are read. Shapes are checked against the variant by the caller
    (:func:`ffc.checkpoint.generator_from_detection`), which names the first offending tensor.

    Raises:
        CheckpointError: not a LaMa file, a related but unsupported network, or an MPE module
            without a generator it fits.
    """
    prefixes = {"generator": locate_generator(tensors, path)}
    mpe = _locate_mpe(tensors, path)
    if mpe is not None:
        prefixes["mpe"] = mpe
    state: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for part in PARTS:
        if part.name not in prefixes:
            continue
        for key, value in tensors.items():
            rest = part.rest(key, prefixes[part.name])
            if rest is not None:
                state[part.canonical + rest] = value
                sources[part.canonical + rest] = key
    for network in UNSUPPORTED_GENERATORS:
        key = network.matches(state)
        if key is not None:
            raise CheckpointError(
                f"{path}: this looks like {network.name} (tensor '{sources[key]}' has shape {list(state[key].shape)}), "
                f"which is not supported: {network.reason}"
            )
    try:
        config = config_from_state_dict(state)
    except ValueError as err:
        guess = "LaMa-MPE" if mpe is not None else "a LaMa generator"
        # Name tensors as the file names them, not by their canonical keys.
        message = re.sub(r"'((?:model|mpe)\.[^']+)'", lambda m: f"'{sources.get(m.group(1), m.group(1))}'", str(err))
        raise CheckpointError(f"{path}: looks like {guess} (keys '{prefixes['generator']}<i>.*') but {message}") from err
    used = set(sources.values())
    leftover = [k for k in tensors if k not in used]
    return Detection(
        variant=identify(config, prefixes),
        config=config,
        prefixes=prefixes,
        state=state,
        sources=sources,
        ignored=tuple(k for k in leftover if not_for_inference(k)),
        unused=tuple(k for k in leftover if not not_for_inference(k)),
    )
