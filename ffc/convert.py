"""Convert any LaMa checkpoint to a canonical, safe ``.safetensors`` file.

    python -m ffc.convert big-lama.pt big-lama.safetensors
    python -m ffc.convert big-lama/models/best.ckpt big-lama.safetensors

The output holds only the model (canonical ``model.<i>.*`` keys, plus ``mpe.*`` for LaMa-MPE;
float32, BatchNorm ``num_batches_tracked`` as int64) plus metadata: variant, source format and
source SHA-256.
Loading it needs neither pickle nor TorchScript.
"""

from __future__ import annotations

import argparse
import os
import sys

from safetensors import SafetensorError
from safetensors.torch import save_file

from .checkpoint import FORMAT_TAG, CheckpointError, ModelInfo, file_sha256, load_generator
from .generator import LamaGenerator

__all__ = ["save_canonical", "convert", "main"]


def save_canonical(generator: LamaGenerator, info: ModelInfo, out_path: str, source_sha256: str) -> None:
    """Write ``generator`` to ``out_path`` as canonical safetensors with provenance metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    metadata = {
        "format": FORMAT_TAG,
        "variant": info.variant,
        "variant_id": info.variant_id,
        "n_blocks": str(info.config.n_blocks),
        "parameters": str(info.parameters),
        "source_format": info.metadata.get("source_format", info.source_format),
        "source_file": info.metadata.get("source_file", os.path.basename(info.path)),
        "source_sha256": info.metadata.get("source_sha256", source_sha256),
    }
    save_file(state, out_path, metadata=metadata)
    # safetensors writes through a private temporary file (mode 0600); give the result the mode any
    # new file of this user gets, so that e.g. a ComfyUI service account can read it.
    os.chmod(out_path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def convert(in_path: str, out_path: str, *, overwrite: bool = False) -> ModelInfo:
    """Load ``in_path`` (any supported format) and write the canonical safetensors ``out_path``."""
    if not out_path.endswith(".safetensors"):
        raise ValueError(f"output: expected a path ending in .safetensors, got {out_path!r}")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder!r} is not writable")
    if os.path.exists(out_path):
        if os.path.samefile(in_path, out_path):
            raise ValueError(f"output {out_path!r} is the input file; choose another name")
        if not overwrite:
            raise FileExistsError(f"output {out_path!r} exists; pass --force to overwrite it")
    generator, info = load_generator(in_path)
    save_canonical(generator, info, out_path, file_sha256(in_path))
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffc.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="big-lama.pt (TorchScript), best.ckpt (Lightning), .pth or .safetensors")
    parser.add_argument("output", help="where to write the canonical .safetensors file")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    args = parser.parse_args(argv)
    try:
        info = convert(args.input, args.output, overwrite=args.force)
    except (CheckpointError, ValueError, OSError, SafetensorError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {info.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
