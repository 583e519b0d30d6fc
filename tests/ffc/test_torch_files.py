"""Torch files are read without running anything in them (issue: a TorchScript big-lama.pt ran code).

Pins what the loader relies on in torch: the zip layout of ``torch.save`` and ``torch.jit.save``
(``data.pkl`` + ``data/<key>``), the legacy layout, and how tensors are pickled; and that hostile
files are read (or refused) without their code running, within bounded time.
"""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from lama_multiscale_refine.ffc import CheckpointError, detect_format, load_generator, read_tensors
from lama_multiscale_refine.ffc.convert import convert
from lama_multiscale_refine.ffc.torch_files import collect_tensors, read_legacy_pickle, read_zip_archive
from hostile_files import (
    GeneratorWrapper,
    JitWrapper,
    OsSystem,
    endless_torchscript,
    file_writing_torchscript,
    script_mirror_to,
    torchscript_with_pickle,
    trace_to,
)

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = b"raise SystemExit('this file was written by a model file')\n"
# Generous: reading these tiny files takes well under a second; only a hang comes near it.
HANG_LIMIT_S = 60


def _same_as(generator, state: dict[str, torch.Tensor]) -> None:
    loaded = generator.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def _run_python(code: str, timeout: float = HANG_LIMIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


# --- the layouts users' files have ---------------------------------------------------------------


@pytest.mark.parametrize(("wrapper", "prefix"), [(GeneratorWrapper, "generator.model."), (JitWrapper, "model.generator.model.")])
def test_traced_torchscript_layouts(tmp_path, tiny_generator, tiny_state, wrapper, prefix):
    path = trace_to(tmp_path / "big-lama.pt", wrapper(tiny_generator))
    assert detect_format(str(path)) == "torchscript"
    generator, info = load_generator(path)
    _same_as(generator, tiny_state)
    assert (info.source_format, info.key_prefix, info.ignored_keys) == ("torchscript", prefix, 0)


def test_scripted_torchscript_file(tmp_path, tiny_state):
    path = script_mirror_to(tmp_path / "scripted.pt", tiny_state, prefix="generator.")
    generator, info = load_generator(path)
    _same_as(generator, tiny_state)
    assert (info.source_format, info.key_prefix) == ("torchscript", "generator.model.")


@pytest.mark.parametrize("zip_format", [True, False])
def test_tensor_layouts_survive_the_round_trip(tmp_path, zip_format):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    values = {
        "view": base[1:, 2:],  # offset and stride into a shared storage
        "transposed": base.t(),
        "same": base,
        "half": torch.linspace(-1, 1, 7).half(),
        "bf16": torch.linspace(-1, 1, 5).bfloat16(),
        "count": torch.tensor(12345678901, dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "param": nn.Parameter(torch.ones(2, 2)),
        "nested": OrderedDict(inner=torch.full((2,), 3.0)),
    }
    path = tmp_path / "t.pth"
    torch.save(values, path, _use_new_zipfile_serialization=zip_format)
    obj = (read_zip_archive if zip_format else read_legacy_pickle)(str(path))
    tensors = collect_tensors(obj)
    expected = {k: v for k, v in values.items() if k != "nested"} | {"nested.inner": values["nested"]["inner"]}
    assert tensors.keys() == expected.keys()
    for key, value in expected.items():
        assert tensors[key].dtype == value.dtype and torch.equal(tensors[key], value.detach()), key
    assert type(tensors["param"]) is torch.Tensor  # values only: no Parameter, no hooks


def test_whole_pickled_module(tmp_path, tiny_generator, tiny_state):
    path = tmp_path / "model.pth"
    torch.save(GeneratorWrapper(tiny_generator), path)  # pickles our classes by reference
    generator, info = load_generator(path)  # read without importing them
    _same_as(generator, tiny_state)
    assert info.key_prefix == "generator.model."


# --- hostile files ---------------------------------------------------------------------------------


def test_torchscript_payload_that_writes_a_file_never_runs(tmp_path, tiny_generator, tiny_state):
    target = tmp_path / "custom_nodes" / "planted.py"
    target.parent.mkdir()
    path = file_writing_torchscript(tmp_path / "big-lama.pt", tiny_generator, target, PAYLOAD)

    generator, info = load_generator(path)
    _same_as(generator, tiny_state)
    assert info.source_format == "torchscript"
    assert not target.exists()
    convert(str(path), str(tmp_path / "safe.safetensors"))
    assert not target.exists()

    # Control: the payload is real. torch.jit.load (which the loader never calls) writes the file.
    control = _run_python(f"import torch; torch.jit.load({str(path)!r})")
    assert control.returncode == 0, control.stderr
    assert target.read_bytes() == PAYLOAD


def test_torchscript_payload_that_never_returns_does_not_hang_loading(tmp_path, tiny_generator):
    path = endless_torchscript(tmp_path / "big-lama.pt", tiny_generator)
    result = _run_python(f"""
        from lama_multiscale_refine.ffc import load_generator
        generator, info = load_generator({str(path)!r})
        print(info.source_format, info.parameters)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torchscript", f"{tiny_generator.num_parameters()}"]
    # Control: torch.jit.load of the same file does not come back.
    with pytest.raises(subprocess.TimeoutExpired):
        _run_python(f"import torch; torch.jit.load({str(path)!r})", timeout=5)


def _pickle_exploit(kind: str, tmp_path: Path, tiny_generator, marker: Path) -> Path:
    exploit = OsSystem(f"touch {marker}")
    if kind == "torchscript":
        source = trace_to(tmp_path / "clean.pt", GeneratorWrapper(tiny_generator))
        return torchscript_with_pickle(source, tmp_path / "evil.pt", exploit)
    path = tmp_path / "evil.pth"
    state = {"generator." + k: v for k, v in tiny_generator.state_dict().items()}
    torch.save({"state_dict": state, "x": exploit}, path, _use_new_zipfile_serialization=kind == "zip")
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy", "torchscript"])
def test_pickled_os_system_is_never_called(tmp_path, tiny_generator, kind):
    marker = tmp_path / "pwned"
    path = _pickle_exploit(kind, tmp_path, tiny_generator, marker)
    try:
        load_generator(path)
    except CheckpointError:
        pass  # refusing the file is fine; running the command is not
    assert not marker.exists()


def test_shared_references_cannot_blow_up_the_walk(tmp_path):
    # 2**60 paths through 60 dicts: a walk that follows each path would never finish.
    level: dict = {"weight": torch.ones(1)}
    for _ in range(60):
        level = {"a": level, "b": level}
    path = tmp_path / "laughs.pth"
    torch.save(level, path)
    result = _run_python(f"""
        from lama_multiscale_refine.ffc import read_tensors
        tensors, _, _ = read_tensors({str(path)!r})
        print(len(tensors))
    """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 1


def _zip_with(path: Path, records: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return path


class _Pointer:
    """Pickles as a persistent id pointing at a storage record (a hand-made torch archive)."""

    def __init__(self, numel: int, kind=torch.FloatStorage) -> None:
        self.numel, self.kind = numel, kind


def _archive_pickle(size: tuple[int, ...], numel: int) -> bytes:
    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Pointer):
                return ("storage", obj.kind, "0", "cpu", obj.numel)
            return None

    buffer = io.BytesIO()
    stride = tuple(int(torch.tensor(size[i + 1:]).prod()) for i in range(len(size)))
    rebuild = torch._utils._rebuild_tensor_v2
    Writer(buffer, protocol=2).dump({"t": _Reduce(rebuild, (_Pointer(numel), 0, size, stride, False, OrderedDict()))})
    return buffer.getvalue()


class _Reduce:
    def __init__(self, function, args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_storage_sizes_are_checked_before_anything_is_allocated(tmp_path):
    # A tiny record that claims 10**12 floats: refused from its size, never allocated.
    path = _zip_with(tmp_path / "liar.pth", {"a/data.pkl": _archive_pickle((10**12,), 10**12), "a/data/0": b"\0" * 16})
    with pytest.raises(CheckpointError, match=r"liar\.pth: .*data/0 holds 16 bytes"):
        read_tensors(str(path))
    # A tensor whose size runs past its storage.
    path = _zip_with(tmp_path / "overrun.pth", {"a/data.pkl": _archive_pickle((8,), 4), "a/data/0": b"\0" * 16})
    with pytest.raises(CheckpointError, match="reaches element 7 of a storage of 4"):
        read_tensors(str(path))
    # The honest version of the same file reads.
    path = _zip_with(tmp_path / "fine.pth", {"a/data.pkl": _archive_pickle((4,), 4), "a/data/0": b"\0" * 16})
    tensors, source, _ = read_tensors(str(path))
    assert source == "torch-pickle" and torch.equal(tensors["t"], torch.zeros(4))


def test_compressed_records_and_other_zips_are_refused(tmp_path):
    records = {"a/data.pkl": _archive_pickle((4,), 4), "a/data/0": b"\0" * 16}
    with pytest.raises(CheckpointError, match="compressed"):
        read_tensors(str(_zip_with(tmp_path / "deflated.pth", records, zipfile.ZIP_DEFLATED)))
    with pytest.raises(CheckpointError, match=r"photos\.zip: not a torch archive"):
        read_tensors(str(_zip_with(tmp_path / "photos.zip", {"cat.jpg": b"\xff\xd8"})))


def test_big_endian_archives_are_refused(tmp_path):
    records = {"a/data.pkl": _archive_pickle((4,), 4), "a/data/0": b"\0" * 16, "a/byteorder": b"big"}
    with pytest.raises(CheckpointError, match="big-endian"):
        read_tensors(str(_zip_with(tmp_path / "be.pth", records)))


def test_zip_entry_names_that_are_not_utf8(tmp_path):
    path = _zip_with(tmp_path / "names.pth", {"a/data.pkl": _archive_pickle((4,), 4), "a/data/\u00e9": b""})
    raw = path.read_bytes().replace("\u00e9".encode(), b"\xff\xfe")  # UTF-8 flag set, bytes invalid
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"names\.pth: .*not valid UTF-8"):
        load_generator(path)


def test_legacy_files_cannot_claim_more_bytes_than_they_have(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"t": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    # The element count of the storage (BININT1 4 after its location) becomes 2**31 - 1.
    patched = re.sub(rb"(X\x03\x00\x00\x00cpuq.)K\x04", lambda m: m.group(1) + b"J\xff\xff\xff\x7f", data,
                     count=1, flags=re.S)
    assert patched != data
    (tmp_path / "liar.pth").write_bytes(patched)
    with pytest.raises(CheckpointError, match="more than the file has"):
        read_tensors(str(tmp_path / "liar.pth"))


def test_no_load_path_calls_torch_load_or_jit_load():
    # The security property must not depend on what torch.load or torch.jit.load do with a file.
    for folder in ("ffc", "refine", "nodes", "lama_cli"):
        for file in (REPO / folder).rglob("*.py"):
            text = file.read_text()
            assert "torch.load(" not in text and "jit.load(" not in text, file
