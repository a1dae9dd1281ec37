"""Any other fsspec file system (here fsspec's own memory://): ranges by
cat_file, lengths checked, hostile objects refused as local files are."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from remote_kit import same, tensors

import tensorfile
from tensorfile.errors import FormatError, TruncatedFileError
from tensorfile.numpy import save
from tensorfile.remote import RemoteOptions, is_url


def test_memory_url_round_trip() -> None:
    t = tensors(3)
    fs = fsspec.filesystem("memory")
    fs.pipe("/tf/m.safetensors", save(t))
    same(tensorfile.load_file("memory://tf/m.safetensors", remote=RemoteOptions(block_size=7_000)), t)
    with tensorfile.safe_open("memory://tf/m.safetensors") as f:
        np.testing.assert_array_equal(f.get_slice("embed")[-3:], t["embed"][-3:])


def test_truncated_and_empty_objects_are_refused() -> None:
    fs = fsspec.filesystem("memory")
    data = save(tensors(4))
    fs.pipe("/tf/cut.safetensors", data[:-10])
    with pytest.raises(FormatError):
        tensorfile.load_file("memory://tf/cut.safetensors")
    fs.pipe("/tf/empty.safetensors", b"")
    with pytest.raises(TruncatedFileError):
        tensorfile.safe_open("memory://tf/empty.safetensors")
    with pytest.raises(FileNotFoundError):
        tensorfile.safe_open("memory://tf/none.safetensors")


def test_is_url() -> None:
    assert is_url("s3://b/k") and is_url("https://h/x") and is_url("memory://x")
    assert not is_url("model.safetensors") and not is_url("C://x") and not is_url("/a://b")


def test_sharded_model_on_any_backend_and_an_index_of_many_missing_shards() -> None:
    import json

    from tensorfile.errors import ShardIndexError
    from tensorfile.sharded import open_sharded

    t = tensors(5)
    fs = fsspec.filesystem("memory")
    names = sorted(t)
    fs.pipe("/shm/a.safetensors", save({n: t[n] for n in names[:3]}))
    fs.pipe("/shm/b.safetensors", save({n: t[n] for n in names[3:]}))
    index = {"weight_map": {n: "a.safetensors" if i < 3 else "b.safetensors" for i, n in enumerate(names)}}
    fs.pipe("/shm/weights.safetensors.index.json", json.dumps(index).encode())
    # A folder URL: the backend lists it, its only index is found.
    with open_sharded("memory://shm") as m:
        same(m.tensors(), t)
    # 5,000 shards that do not exist: the first missing one ends the open;
    # the requests still queued are never made (Executor.map cancels them).
    calls = []
    real = fsspec.implementations.memory.MemoryFileSystem.info

    def counting(self: object, path: str, **kw: object) -> object:
        calls.append(path)
        return real(self, path, **kw)  # type: ignore[arg-type]

    many = {"weight_map": {f"t{i}": f"s{i}.safetensors" for i in range(5000)}}
    fs.pipe("/many/model.safetensors.index.json", json.dumps(many).encode())
    mp = pytest.MonkeyPatch()
    mp.setattr(fsspec.implementations.memory.MemoryFileSystem, "info", counting)
    try:
        with pytest.raises(FileNotFoundError):
            open_sharded("memory://many/model.safetensors.index.json")
    finally:
        mp.undo()
    assert len(calls) < 500, len(calls)
    with pytest.raises(ShardIndexError):
        fs.pipe("/bad/model.safetensors.index.json", b'{"weight_map": {"a": "../x.safetensors"}}')
        open_sharded("memory://bad")
