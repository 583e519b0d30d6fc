"""``python -m lama_multiscale_refine.nodes [--style v1|v3] [--out FILE]``: write the pack's ``/object_info`` JSON.

After ``pip install -e .`` (README); ComfyUI is not needed (the model list is then empty, as on a
server without model files).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._spec import object_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lama_multiscale_refine.nodes", description=__doc__.splitlines()[0])
    parser.add_argument("--style", choices=("v1", "v3"), default="v1",
                        help="combo layout: v1 [[options], {...}] or v3 ['COMBO', {'options': [...]}]")
    parser.add_argument("--out", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    info = object_info(style=args.style)
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
