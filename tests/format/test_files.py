"""Every path tensorfile reads must be a regular file, refused at once otherwise.

A FIFO opened for reading blocks until a writer appears: each reader below
(model file, shard index, signature bundle, key) must fail fast with its
usual error instead of hanging, and a folder passed to ``safe_open`` gets a
pointer to the sharded-model API.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import tensorfile
from tensorfile._io.files import open_regular, read_small
from tensorfile.errors import BundleError, KeyLoadError, ShardIndexError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _outcome(fn: Callable[[], object], seconds: float = 5.0) -> BaseException | None:
    """What ``fn`` raised (None if nothing), run on a daemon thread; fail if it
    is still running after ``seconds``."""
    got: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            got.append(None)
        except BaseException as e:
            got.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung: a FIFO opened for reading waits for a writer"
    return got[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_open_regular_refuses_fifos_folders_and_symlinks(tmp_path: Path, fifo: Path) -> None:
    err = _outcome(lambda: open_regular(fifo))
    assert isinstance(err, OSError) and "not a regular file" in str(err) and str(fifo) in str(err)
    err = _outcome(lambda: open_regular(tmp_path, folder_hint=": try X"))
    assert isinstance(err, IsADirectoryError) and str(err).endswith(f"is a folder: try X: '{tmp_path}'")
    real = tmp_path / "real"
    real.write_bytes(b"abc")
    (tmp_path / "link").symlink_to(real)
    fd, size = open_regular(tmp_path / "link")
    os.close(fd)
    assert size == 3
    with pytest.raises(OSError):
        open_regular(tmp_path / "link", follow_symlinks=False)
    assert read_small(real, 2) == b"abc" and read_small(real, 1) == b"ab"


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_safe_open(tmp_path: Path, fifo: Path, backend: str) -> None:
    err = _outcome(lambda: tensorfile.safe_open(fifo, "np", backend=backend))
    assert isinstance(err, OSError) and "not a regular file" in str(err)
    err = _outcome(lambda: tensorfile.safe_open(tmp_path, "np", backend=backend))
    assert isinstance(err, IsADirectoryError) and "open_sharded" in str(err)


def test_shard_index(fifo: Path) -> None:
    from tensorfile.sharded import read_index

    index = fifo.with_name("model.safetensors.index.json")
    fifo.rename(index)
    err = _outcome(lambda: read_index(index))
    assert isinstance(err, ShardIndexError) and "cannot read index" in str(err)


def test_signature_and_key_files(tmp_path: Path, fifo: Path) -> None:
    from tensorfile.integrity import generate_key, verify
    from tensorfile.integrity.bundle import read_bundle
    from tensorfile.integrity.keys import load_public_key

    err = _outcome(lambda: read_bundle(fifo))
    assert isinstance(err, BundleError) and "cannot read signature" in str(err)
    err = _outcome(lambda: load_public_key(fifo))
    assert isinstance(err, KeyLoadError)
    model = tmp_path / "model"
    model.mkdir()
    import numpy as np

    tensorfile.save_file({"a": np.zeros(4, np.float32)}, model / "model.safetensors")
    generate_key(tmp_path / "k.pem", tmp_path / "k.pub")
    os.mkfifo(model / "model.sig")
    err = _outcome(lambda: verify(model, tmp_path / "k.pub"))
    assert isinstance(err, BundleError), err
