"""A restricted unpickler for ``torch.load(..., pickle_module=safe_pickle)``.

Lightning checkpoints (``best.ckpt``) pickle callbacks and OmegaConf configs next to the weights.
``torch.load(weights_only=True)`` refuses them and a plain ``torch.load`` would import (and run)
pytorch_lightning / omegaconf code, or any code a malicious file names. This unpickler resolves
only the globals needed to rebuild tensors and plain containers; every other global becomes an
inert stub that records its arguments and never runs anything.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import torch

__all__ = ["Unpickler", "load", "Stub"]

# (module, name) -> object, resolved normally. Nothing here can execute pickled code.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): torch.Tensor,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


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
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        self.stubbed.add(f"{module}.{name}")
        return _stub(module, name)


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted :class:`Unpickler` (used by torch for legacy files)."""
    return Unpickler(file, **kwargs).load()
