"""joblib files read as joblib.load reads them (spec/SCANNING.md, "joblib").

Benign files are real ``joblib.dump`` output (every compression joblib
writes); hostile ones are the same payloads compressed the way ``joblib.load``
detects them, checked against the real ``joblib.load`` in a subprocess with a
canary.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from loader_kit import loads_ok, runs_payload
from pickle_kit import os_system

from tensorfile.pickles import Verdict, scan

joblib = pytest.importorskip("joblib")
lz4_frame = pytest.importorskip("lz4.frame")

COMPRESSIONS = [0, "zlib", "gzip", "bz2", "lzma", "xz", "lz4"]


class Model:  # a sklearn-like estimator: a plain object of the saving script
    def __init__(self) -> None:
        self.coef_ = np.arange(4.0)
        self.n_features_in_ = 4


BENIGN: dict[str, Callable[[], object]] = {
    "arrays and plain data": lambda: {"w": np.arange(6, dtype="<f4").reshape(2, 3),
                                      "f": np.ones((3, 2), order="F"), "e": np.zeros(0),
                                      "be": np.arange(5, dtype=">i4"), "n": [1, "x", None],
                                      "s": np.float64(3.5)},
    "big array": lambda: np.arange(200_000, dtype=np.int64),
    # joblib pickles an object array as a nested pickle after the wrapper, with
    # a memo of its own; read on by pickle.load with the outer memo, its first
    # memo reference here is the wrapper: "STACK_GLOBAL requires str", it stops.
    "object array": lambda: np.array([np.arange(2), "t", None], dtype=object),
}


def test_object_arrays_in_a_container_are_not_safe_for_pickle_load(tmp_path: Path) -> None:
    # The nested pickle's memo references land on the outer stream's strings:
    # pickle.load tries to import a module named NumpyArrayWrapper. No such
    # module exists in practice, but the scanner cannot know that: unknown.
    path = tmp_path / "model.joblib"
    joblib.dump({"c": np.array(["a", None], dtype=object)}, path)
    (f,) = scan(path).files
    assert f.verdict is not Verdict.SAFE
    assert any("NumpyArrayWrapper." in g for s in f.streams for g in s.globals)
    joblib_reading = [s for s in f.streams if "as joblib.load reads it" in s.location]
    assert joblib_reading and joblib_reading[0].verdict is Verdict.SAFE


@pytest.mark.parametrize("compress", COMPRESSIONS)
@pytest.mark.parametrize("name", sorted(BENIGN))
def test_real_joblib_dumps_are_safe(name: str, compress: object, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(BENIGN[name](), path, compress=compress)
    (f,) = scan(path).files
    assert f.verdict is Verdict.SAFE, f


@pytest.mark.parametrize("compress", ["zlib", "lz4"])
def test_plain_objects_are_not_safe_unless_allowlisted(compress: str, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(Model(), path, compress=compress)
    (f,) = scan(path).files
    assert f.verdict is Verdict.UNKNOWN
    assert any("Model" in (fi.global_name or "") for s in f.streams for fi in s.findings)


def _zf(data: bytes) -> bytes:  # joblib < 0.10: 'ZF', a hex length, zlib data
    return b"ZF" + f"{len(data):#x}".ljust(19).encode() + zlib.compress(data)


def _lzma_alone(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.compress, "gzip": gzip.compress, "bz2": bz2.compress,
    "lzma alone": _lzma_alone, "xz": lzma.compress, "lz4": lz4_frame.compress, "ZF": _zf,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_compressed_payloads_are_found(name: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "model.pkl"
    path.write_bytes(HOSTILE[name](os_system(canary)))
    (f,) = scan(path).files
    assert f.verdict is Verdict.DANGEROUS, f
    assert runs_payload("joblib", path, canary)  # the oracle: joblib.load runs it


def test_compression_bomb_is_not_safe(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pkl"
    path.write_bytes(zlib.compress(b"\x80\x02N" * 1 + b"N" * (300 << 20) + b"."))
    (f,) = scan(path).files
    assert f.verdict is Verdict.ERROR and "compression bomb" in str(f.streams[0].error)


def test_huge_array_shape_is_not_safe(tmp_path: Path) -> None:
    # The wrapper's shape asks numpy.empty for 8 TiB before any data is read.
    path = tmp_path / "model.joblib"
    joblib.dump(np.arange(4, dtype=np.int64), path)
    data = path.read_bytes()
    old = b"K\x04\x85"  # shape (4,)
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85"))
    (f,) = scan(path).files
    assert f.verdict is not Verdict.SAFE
    assert any("numpy allocates" in str(s.error) for s in f.streams)


def test_real_dump_loads_in_joblib(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(BENIGN["arrays and plain data"](), path, compress="lz4")
    assert loads_ok("joblib", path)
