"""``python -m lama_multiscale_refine.lama_cli`` (the same as ``lama-inpaint``): see :mod:`.cli`."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
