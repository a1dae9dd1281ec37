"""Fuzz the checkpoint converter, and its agreement with the scanner.

Contract checked on every input (the whole input is one checkpoint file):

1. ``convert`` either succeeds or raises a :class:`~tensorfile.errors.TensorfileError`,
   and never unpickles (stdlib unpickling and ``torch.load`` raise
   ``AssertionError`` while it runs).
2. Refusal writes nothing: after an error the output folder holds only the
   source (no output, no temporary file).
3. The scanner and the converter agree: the scanner never calls ``safe`` a
   file the converter refuses as unsafe (``UnsafePickleError``), and every
   file the converter accepts is one the scanner calls ``safe``.
4. A successful conversion writes a valid safetensors file: the reader
   accepts it, its tensors are the ones the report names in file order,
   every alias points at a written tensor, every kept value is JSON text.
5. Salvage (``salvage_tensors=True``) holds to 1, 2 and 4 on the same input,
   whatever the scanner says, and writes no plain values.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import fuzzlib

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile import safe_open
    from tensorfile.errors import TensorfileError, UnsafePickleError
    from tensorfile.pickles import Verdict, scan
    from tensorfile.pickles.convert import ConversionReport, convert

_dir: Path | None = None


def _paths() -> tuple[Path, Path]:
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="tensorfile-fuzz-convert-"))
    return _dir / "checkpoint.pt", _dir / "out.safetensors"


def TestOneInput(data: bytes) -> None:
    src, dst = _paths()
    for stale in src.parent.iterdir():
        stale.unlink()
    src.write_bytes(data)
    _salvage(src, dst)
    with fuzzlib.no_unpickling():
        verdict = scan(src).files[0].verdict
        try:
            report = convert(src, dst)
        except TensorfileError as e:
            left = sorted(p.name for p in src.parent.iterdir())
            assert left == [src.name], f"refused ({e!r}) but left {left}"
            if isinstance(e, UnsafePickleError):
                assert verdict is not Verdict.SAFE, f"scanner says safe, converter refuses: {e}"
            return
    assert verdict is Verdict.SAFE, f"converter accepted a file the scanner calls {verdict.value}"
    _check_output(src, dst, report)


def _salvage(src: Path, dst: Path) -> None:
    with fuzzlib.no_unpickling():
        try:
            report = convert(src, dst, salvage_tensors=True)
        except TensorfileError as e:
            left = sorted(p.name for p in src.parent.iterdir())
            assert left == [src.name], f"salvage refused ({e!r}) but left {left}"
            return
    assert report.values == [], report.values
    _check_output(src, dst, report)
    dst.unlink()


def _check_output(src: Path, dst: Path, report: ConversionReport) -> None:
    assert report.outputs == [str(dst)], report.outputs
    assert sorted(os.listdir(src.parent)) == sorted([src.name, dst.name])
    with safe_open(dst) as f:
        assert f.offset_keys() == report.tensors, (f.offset_keys(), report.tensors)
        for name in report.tensors:
            f.get_tensor(name)
        metadata = f.metadata() or {}
    for alias, kept in report.aliases.items():
        assert kept in report.tensors and alias not in report.tensors, (alias, kept)
    for name in report.values:
        assert name in metadata, name
        json.loads(metadata[name])
    json.dumps(report.to_dict())


if __name__ == "__main__":
    fuzzlib.main(TestOneInput, "convert")
