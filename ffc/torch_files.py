"""Read the tensors of torch files without ``torch.load`` or ``torch.jit.load``: nothing in them runs.

Three layouts carry LaMa weights (``docs/lama-reference.md`` §3):

* **torch zip archives** (``torch.save`` since 1.6: Lightning ``best.ckpt``, ``.pth``) and
  **TorchScript archives** (``torch.jit.save``: ``big-lama.pt``) are the same container: a zip
  whose one top folder holds ``data.pkl`` (the object, a pickle whose tensors point at storages by
  persistent id ``("storage", <dtype>Storage, key, location, numel)``) and ``data/<key>`` (each
  storage's raw little-endian bytes). A TorchScript archive also holds ``code/`` and
  ``constants.pkl``; ``torch.jit.load`` would compile that code and run the modules'
  ``__setstate__`` methods (which can write files or loop forever). We never look at ``code/``.
* **legacy torch pickles** (``torch.save(..., _use_new_zipfile_serialization=False)``): three
  small pickles (magic number, protocol, system info), the object pickle, the list of storage
  keys, then every storage as an int64 element count followed by its bytes.

The object pickle is read with :class:`ffc.safe_pickle.Unpickler`, which imports nothing: every
class it names becomes an inert stub (TorchScript modules, Lightning callbacks, OmegaConf configs,
``os.system`` alike). Tensors are rebuilt here from the storages' bytes with
:func:`torch.frombuffer` and :func:`torch.as_strided`, after checking every size against the
file, so a hostile file cannot make us allocate more than it holds.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import safe_pickle

__all__ = ["TorchFileError", "read_zip_archive", "read_legacy_pickle", "zip_kind", "collect_tensors"]

# An object pickle larger than this is not a checkpoint's: Big-LaMa's is about 100 KB.
MAX_PICKLE_BYTES = 256 << 20
# Nesting deeper than this is not a state dict (Big-LaMa's keys are 7 levels deep).
MAX_DEPTH = 64

# The legacy format's first pickle (torch.serialization.MAGIC_NUMBER) and protocol version.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# The storage classes a pickle names -> the dtype of their elements.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class TorchFileError(ValueError):
    """The file is not a readable torch file; the message says why (the caller adds the path)."""


class _StorageKind:
    """What a ``torch.<X>Storage`` global resolves to: only its element type."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class _Storage:
    """A storage's elements as a flat tensor over bytes read from the file."""

    def __init__(self, flat: Tensor) -> None:
        self.flat = flat


# --- tensors from storages ---------------------------------------------------------------------


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *_: object) -> Tensor:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)``,
    with every number checked against the storage; hooks and metadata are dropped."""
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor refers to {type(storage).__name__}, not to a storage of the file")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or any(s < 0 for s in size + stride):
        raise TorchFileError(f"a tensor has an invalid layout (offset {offset!r}, size {size}, stride {stride})")
    available = storage.flat.numel()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= available:
        raise TorchFileError(f"a tensor of size {list(size)} reaches element {last} of a storage of {available}")
    return torch.as_strided(storage.flat, size, stride, offset)


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or not all(type(v) is int for v in value):
        raise TorchFileError(f"a tensor's {what} is not a tuple of integers ({value!r})")
    return tuple(value)


def _rebuild_parameter(data: object, *_: object) -> object:
    """``torch._utils._rebuild_parameter*``: we only need the values, not a Parameter."""
    return data


def _rebuild_from_type(function: object, new_type: object, args: object, state: object) -> object:
    """``torch._tensor._rebuild_from_type_v2``: a tensor subclass; keep the plain tensor."""
    if function not in (_rebuild_tensor, _rebuild_parameter) or not isinstance(args, tuple):
        raise TorchFileError("a tensor is rebuilt by an unexpected function")
    return function(*args)


# The only callables a torch file may name, mapped to the checked versions above.
_REBUILDERS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
}


class _TensorUnpickler(safe_pickle.Unpickler):
    """The restricted unpickler plus storages: ``load_storage(kind, key, numel)`` supplies bytes."""

    def __init__(self, stream: io.BytesIO, load_storage: Any) -> None:
        super().__init__(stream)
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REBUILDERS:
            return _REBUILDERS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            if name not in _STORAGE_DTYPES:
                raise TorchFileError(f"unsupported storage type torch.{name}")
            return _StorageKind(name, _STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> _Storage:
        # Zip archives: ("storage", kind, key, location, numel); legacy files add a view field.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchFileError(f"unexpected persistent id {str(pid)[:80]!r}")
        kind, key, _location, numel = pid[1:5]
        if not isinstance(kind, _StorageKind) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise TorchFileError(f"invalid storage reference {str(pid)[:80]!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise TorchFileError("storage views of torch < 1.0 files are not supported; re-save the file")
        if key not in self._storages:
            self._storages[key] = _Storage(self._load_storage(kind, key, numel))
        storage = self._storages[key]
        if storage.flat.dtype != kind.dtype or storage.flat.numel() != numel:
            raise TorchFileError(f"storage {key!r} is used with two different types or sizes")
        return storage


def _unpickle(stream: io.BytesIO, load_storage: Any) -> object:
    """One pickle from ``stream``; the stream is left just after its STOP opcode."""
    try:
        return _TensorUnpickler(stream, load_storage).load()
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, struct.error, RecursionError, UnicodeDecodeError, MemoryError) as err:
        # What a damaged pickle stream raises; the restricted unpickler runs nothing that raises others.
        raise TorchFileError(f"the pickled data is truncated or corrupt ({type(err).__name__}: {err})") from err


def _flat_tensor(buffer: bytearray, dtype: torch.dtype, numel: int) -> Tensor:
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype, count=numel)


# --- zip archives (torch.save, torch.jit.save) --------------------------------------------------


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise TorchFileError(f"zip archive is truncated or corrupt ({err})") from err
    except UnicodeDecodeError as err:
        raise TorchFileError(f"zip archive has an entry name that is not valid UTF-8 ({err.reason})") from err


def _archive_root(archive: zipfile.ZipFile) -> str:
    """The folder (``"archive/"``) that holds ``data.pkl``: torch writes exactly one."""
    roots = [n[: -len("data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        found = "no" if not roots else f"{len(roots)}"
        raise TorchFileError(f"not a torch archive ({found} top-level data.pkl found)")
    return roots[0]


def zip_kind(path: str) -> str:
    """``torchscript`` when a torch zip archive carries TorchScript code, else ``torch-zip``."""
    with _open_zip(path) as archive:
        root = _archive_root(archive)
        names = set(archive.namelist())
    if f"{root}constants.pkl" in names or any(n.startswith(f"{root}code/") for n in names):
        return "torchscript"
    return "torch-zip"


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytearray:
    if info.compress_type != zipfile.ZIP_STORED:
        # torch writes every record uncompressed; a compressed one could expand without bound.
        raise TorchFileError(f"entry {info.filename!r} is compressed, which torch never writes")
    if info.file_size > limit:
        raise TorchFileError(f"entry {info.filename!r} is {info.file_size} bytes, more than expected ({limit})")
    buffer = bytearray(info.file_size)
    try:
        with archive.open(info) as entry:
            view, done = memoryview(buffer), 0
            while done < len(buffer):
                got = entry.readinto(view[done:])
                if not got:
                    break
                done += got
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise TorchFileError(f"entry {info.filename!r} is truncated or corrupt ({err})") from err
    if done != len(buffer):
        raise TorchFileError(f"entry {info.filename!r} is truncated ({done} of {len(buffer)} bytes)")
    return buffer


def read_zip_archive(path: str) -> object:
    """The object a torch zip archive (``torch.save`` or TorchScript) holds, tensors on the CPU.

    For TorchScript archives the object is the root module as a :class:`~ffc.safe_pickle.Stub`
    whose ``stub_state`` maps attribute names to tensors and submodule stubs.

    Raises:
        TorchFileError: the file is not a readable archive, or something in it is inconsistent.
    """
    with _open_zip(path) as archive:
        root = _archive_root(archive)
        entries = {info.filename: info for info in archive.infolist()}
        byteorder = entries.get(f"{root}byteorder")
        if byteorder is not None and bytes(_read_entry(archive, byteorder, 16)).strip() not in (b"little", b""):
            raise TorchFileError("big-endian archives are not supported; re-save the file on a little-endian machine")

        def load_storage(kind: _StorageKind, key: str, numel: int) -> Tensor:
            info = entries.get(f"{root}data/{key}")
            if info is None:
                raise TorchFileError(f"storage record data/{key} is missing")
            expected = numel * kind.dtype.itemsize
            if info.file_size != expected:
                raise TorchFileError(f"storage record data/{key} holds {info.file_size} bytes, "
                                     f"its tensor needs {expected} ({numel} x {kind.name})")
            return _flat_tensor(_read_entry(archive, info, expected), kind.dtype, numel)

        data = _read_entry(archive, entries[f"{root}data.pkl"], MAX_PICKLE_BYTES)
        return _unpickle(io.BytesIO(bytes(data)), load_storage)


# --- legacy pickles ------------------------------------------------------------------------------


def read_legacy_pickle(path: str) -> object:
    """The object a legacy (non-zip) ``torch.save`` file holds, tensors on the CPU.

    Raises:
        TorchFileError: the file is not a readable legacy torch file.
    """
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as err:
        raise TorchFileError(f"cannot read ({err.strerror or err})") from err
    stream = io.BytesIO(content)

    def small_pickle() -> object:
        # Magic number, protocol and system info: plain values, no class is needed.
        return _unpickle(stream, _no_storages)

    if small_pickle() != _LEGACY_MAGIC:
        raise TorchFileError("not a torch file (no torch magic number at the start)")
    if small_pickle() != _LEGACY_PROTOCOL:
        raise TorchFileError("unsupported legacy torch protocol version")
    sys_info = small_pickle()
    if isinstance(sys_info, Mapping) and sys_info.get("little_endian") is False:
        raise TorchFileError("big-endian files are not supported; re-save the file on a little-endian machine")

    wanted: dict[str, tuple[_StorageKind, int]] = {}
    placeholders: dict[str, Tensor] = {}

    def load_storage(kind: _StorageKind, key: str, numel: int) -> Tensor:
        # The bytes follow the object pickle: hand out an empty tensor now and fill it below.
        if numel * kind.dtype.itemsize > len(content):
            raise TorchFileError(f"storage {key!r} claims {numel * kind.dtype.itemsize} bytes, more than the file has")
        wanted[key] = (kind, numel)
        placeholders[key] = torch.empty(numel, dtype=kind.dtype)
        return placeholders[key]

    obj = _unpickle(stream, load_storage)
    keys = _unpickle(stream, _no_storages)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(wanted):
        raise TorchFileError("the list of storages does not match the tensors")
    for key in keys:
        kind, numel = wanted[key]
        header = stream.read(8)
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel:
            raise TorchFileError(f"storage {key!r} is truncated or has the wrong size")
        raw = bytearray(stream.read(numel * kind.dtype.itemsize))
        if len(raw) != numel * kind.dtype.itemsize:
            raise TorchFileError(f"storage {key!r} is truncated")
        placeholders[key].copy_(_flat_tensor(raw, kind.dtype, numel))
    return obj


def _no_storages(kind: _StorageKind, key: str, numel: int) -> Tensor:
    raise TorchFileError("a header pickle refers to tensor data")


# --- tensors of an unpickled object ----------------------------------------------------------------


def collect_tensors(obj: object) -> dict[str, Tensor]:
    """Every tensor reachable in ``obj`` as ``{dotted.key: tensor}``.

    Dicts contribute their string keys; stubs of pickled modules contribute their attributes:
    TorchScript modules keep tensors and submodules as attributes, ``torch.save(module)`` keeps
    them in ``_parameters`` / ``_buffers`` / ``_modules``, which are walked like a state dict. Each
    object is visited once, so shared references cannot make the walk explode.
    """
    out: dict[str, Tensor] = {}
    seen: set[int] = set()

    def walk(value: object, prefix: str, depth: int) -> None:
        if isinstance(value, Tensor):
            out.setdefault(prefix.rstrip("."), value)
            return
        if depth > MAX_DEPTH or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, safe_pickle.Stub):
            value = getattr(value, "stub_state", None)
            if isinstance(value, Mapping) and any(k in value for k in ("_parameters", "_buffers", "_modules")):
                for part in ("_parameters", "_buffers", "_modules"):
                    walk(value.get(part), prefix, depth + 1)
                return
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str):
                    walk(item, f"{prefix}{key}.", depth + 1)

    walk(obj, "", 0)
    return out

