"""An exception raised in a progress callback (the usual way to cancel)
reaches the caller as itself (issue 22 item 8), never as
``BufferError: cannot close exported pointers exist``.

The file is big enough (64 MiB) for BLAKE3 to hash it from a mapping, the
path that raised BufferError.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tensorfile
from tensorfile import integrity
from tensorfile.integrity.hashing import PARALLEL_DIGEST_BYTES


class Cancel(Exception):
    pass


def _cancel(done: int, total: int) -> None:
    raise Cancel(f"cancelled at {done} of {total}")


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, integrity.KeyPair]:
    root = tmp_path_factory.mktemp("cancel")
    model = root / "m"
    model.mkdir()
    n = PARALLEL_DIGEST_BYTES // 4 + 1024
    tensorfile.save_file({"w": np.ones(n, np.float32)}, model / "model.safetensors")
    keys = integrity.generate_key(root / "key.pem")
    integrity.sign(model, keys.private_key)
    return model, keys


@pytest.mark.parametrize("job", ["hash", "sign", "verify", "verify_deep"])
def test_callback_exception_reaches_the_caller(
    signed: tuple[Path, integrity.KeyPair], job: str
) -> None:
    model, keys = signed
    jobs: dict[str, Callable[[], object]] = {
        "hash": lambda: integrity.hash_model(model, progress=_cancel),
        "sign": lambda: integrity.sign(model, keys.private_key, model.parent / "x.sig",
                                       progress=_cancel),
        "verify": lambda: integrity.verify(model, key=keys.public_key, progress=_cancel),
        "verify_deep": lambda: integrity.verify(model, key=keys.public_key, deep=True,
                                                progress=_cancel),
    }
    with pytest.raises(Cancel):
        jobs[job]()


def test_convert_callback_exception_reaches_the_caller(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tensorfile.pickles.convert import convert

    src = tmp_path / "m"
    src.mkdir()
    torch.save({"a": torch.ones(100_000), "b": torch.ones(1000)}, src / "pytorch_model.bin")
    with pytest.raises(Cancel):
        convert(src / "pytorch_model.bin", tmp_path / "out.safetensors", progress=_cancel)
    with pytest.raises(Cancel):
        convert(src, progress=_cancel)
    assert sorted(p.name for p in src.iterdir()) == ["pytorch_model.bin"]
    assert not (tmp_path / "out.safetensors").exists()
