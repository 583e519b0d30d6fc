"""``python -m lama_cli``: see :mod:`lama_cli.cli`."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
