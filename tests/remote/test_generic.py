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
