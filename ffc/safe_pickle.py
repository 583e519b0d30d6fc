"""A restricted unpickler: it imports nothing a file names and runs none of its code.

Lightning checkpoints (``best.ckpt``) pickle callbacks and OmegaConf configs next to the weights,
TorchScript archives pickle their modules as ``__torch__.*`` classes, and a malicious file can
name ``os.system``. torch's ``weights_only`` loading refuses the first two and a plain unpickler
would import (and run) them all. This one resolves only plain containers and a few inert torch
value types; every other global becomes an inert stub that records what it was given and never
runs anything. :mod:`ffc.torch_files` adds the tensor rebuilding on top.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import torch

__all__ = ["Unpickler", "Stub"]

# (module, name) -> object, resolved normally. Each builds a plain value from plain values and
# allocates no more than its arguments hold (bytearray(n) would: it is not here).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}
# torch.float32 and kin pickle as ("torch", "float32"); read from the module's namespace, so a
# name that is not a dtype never reaches torch's lazy attribute loader.
_DTYPES: dict[str, torch.dtype] = {k: v for k, v in vars(torch).items() if isinstance(v, torch.dtype)}


class Stub:
    """Stand-in for a class or function the unpickler refused to import.

    Pickle may build it with ``__new__`` only (no ``__init__``), so every method tolerates
    missing attributes. It keeps what it was given, for inspection, and does nothing else.
    """

    __stub_name__ = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stub_args, self.stub_kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__["stub_state"] = state

    # dict / list subclasses (e.g. Lightning's AttributeDict) are rebuilt with SETITEMS / APPENDS.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("stub_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("stub_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("stub_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<stub {self.__stub_name__}>"


def _stub(module: str, name: str) -> type[Stub]:
    return type(name, (Stub,), {"__stub_name__": f"{module}.{name}", "__module__": "ffc.safe_pickle.stubs"})


class Unpickler(pickle.Unpickler):
    """Resolve allow-listed globals; replace every other global with a fresh :class:`Stub` class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stubbed: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        self.stubbed.add(f"{module}.{name}")
        return _stub(module, name)

