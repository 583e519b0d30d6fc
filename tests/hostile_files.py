"""Hostile checkpoint files for the loader's security tests (importable: pytest puts tests/ on the path).

Each builder writes a file that is a *valid* LaMa checkpoint (the tiny fixture weights load from
it) plus something that runs code when the file is opened the usual way:

* a TorchScript archive whose extra scripted submodule's ``__setstate__`` writes a file
  (``torch.jit.load`` runs it; the payload is ordinary TorchScript, nothing exotic);
* the same with a ``__setstate__`` that never returns;
* pickles (zip, legacy, and a TorchScript ``data.pkl``) with a global that calls ``os.system``.

They are built with ``torch.jit.script``/``trace`` and ``torch.save`` of the installed torch, so the
tests also pin the file layouts the loader relies on.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import torch
from torch import nn

__all__ = [
    "GeneratorWrapper",
    "JitWrapper",
    "trace_to",
    "script_mirror_to",
    "file_writing_torchscript",
    "endless_torchscript",
    "OsSystem",
    "torchscript_with_pickle",
]


class GeneratorWrapper(nn.Module):
    """What the official training module looks like to TorchScript: tensors under ``generator.``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        predicted = self.generator(torch.cat([image * (1 - mask), mask], dim=1))
        return mask * predicted + (1 - mask) * image


class JitWrapper(nn.Module):
    """``bin/to_jit.py``'s wrapper: tensors under ``model.generator.``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.model = GeneratorWrapper(generator)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(image, mask)


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()


def trace_to(path: Path, module: nn.Module) -> Path:
    """``torch.jit.trace`` ``module`` (called with an image and a mask) and save it to ``path``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned into constants
        traced = torch.jit.trace(module.eval(), _example())
    traced.save(str(path))
    return path


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def script_mirror_to(path: Path, state: dict[str, torch.Tensor], prefix: str = "generator.") -> Path:
    """A ``torch.jit.script`` file holding ``state`` under ``prefix`` (our generator itself is not
    scriptable, so a tree of plain modules mirrors its names; parameters and buffers alike)."""
    root = _Holder()
    for key, tensor in state.items():
        *parts, leaf = (prefix + key).split(".")
        module = root
        for part in parts:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        if tensor.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(tensor.clone(), requires_grad=False))
        else:
            module.register_buffer(leaf, tensor.clone())
    torch.jit.script(root).save(str(path))
    return path


class _WriteFile(nn.Module):
    """On load, ``__setstate__`` writes ``data`` to ``path`` (creating it) through torch.from_file."""

    def __init__(self, path: str, data: torch.Tensor) -> None:
        super().__init__()
        self.path = path
        self.data = data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return (self.path, self.data, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.training = state[2]
        target = torch.from_file(self.path, True, state[1].numel(), dtype=torch.uint8)
        target.copy_(state[1])
        self.data = target  # used, so the compiler keeps the write


class _NeverReturns(nn.Module):
    """On load, ``__setstate__`` loops forever."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:
        return (self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:
        self.training = state[1]
        n = state[0]
        while n >= 0:
            n = (n + 1) % 1000
        self.n = n


class _WithPayload(nn.Module):
    """A LaMa wrapper (tensors under ``generator.``) carrying a scripted payload it calls."""

    def __init__(self, generator: nn.Module, payload: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.generator = generator
        self.payload = payload

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        predicted = self.generator(torch.cat([image * (1 - mask), self.payload(mask)], dim=1))
        return mask * predicted + (1 - mask) * image


def file_writing_torchscript(path: Path, generator: nn.Module, target: Path, content: bytes) -> Path:
    """A valid traced LaMa whose payload writes ``content`` to ``target`` when torch.jit.load runs it."""
    data = torch.frombuffer(bytearray(content), dtype=torch.uint8).clone()
    payload = torch.jit.script(_WriteFile(os.fspath(target), data))
    return trace_to(path, _WithPayload(generator, payload))


def endless_torchscript(path: Path, generator: nn.Module) -> Path:
    """A valid traced LaMa whose payload never returns from torch.jit.load."""
    return trace_to(path, _WithPayload(generator, torch.jit.script(_NeverReturns())))


class OsSystem:
    """Pickles as a call to ``os.system(command)``: a loader that runs pickled code would run it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def torchscript_with_pickle(source: Path, path: Path, extra: object) -> Path:
    """Copy the TorchScript archive ``source`` to ``path`` with its ``data.pkl`` replaced by a
    pickle of ``{"extra": extra}`` (e.g. :class:`OsSystem`); the code and tensors stay as they were."""
    import pickle

    with zipfile.ZipFile(source) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    root = next(info.filename for info, _ in entries if info.filename.endswith("/data.pkl"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info, data in entries:
            if info.filename == root:
                data = pickle.dumps({"extra": extra, "n": 1}, protocol=2)
            out.writestr(info, data)
    return path
