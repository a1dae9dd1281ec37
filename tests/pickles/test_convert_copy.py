"""How the converter moves tensor bytes: file to file in the kernel, or through the map.

A contiguous little-endian tensor is handed to the writer as a
:class:`~tensorfile._io.writer.FileSpan` of the checkpoint and copied with
``os.copy_file_range``; views, big-endian records and nested streams go
through the memory map. Both paths, and the buffered fallback the writer takes
where the kernel copy is refused (another filesystem, an old kernel), must
write the same bytes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch_pickle_kit as kit  # on sys.path through conftest.py

import tensorfile.convert._convert as convert_module
from tensorfile._io import writer
from tensorfile.pickles.convert import convert

torch = pytest.importorskip("torch")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """Contiguous tensors (several of them sharing one storage), views, 0-d and empty."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 24, generator=g)
    state = {
        "big": torch.randn(2100, 1025, generator=g),  # 8.6 MB: two of the fallback's buffers
        "half": torch.randn(33, 7, generator=g).half(),
        "rows": base[5:17],  # contiguous window of a shared storage, at an offset
        "t": base.t(),  # non-contiguous view of the same storage
        "every_other": torch.arange(100, dtype=torch.int64)[10:60:2],
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "bf16": torch.randn(5, 3, generator=g).bfloat16(),
    }
    path = tmp_path / "ck.pt"
    torch.save(state, path)
    return path


def _convert(src: Path, out: Path) -> bytes:
    convert(src, out)
    return out.read_bytes()


def _spans(monkeypatch: pytest.MonkeyPatch) -> list[writer.FileSpan]:
    """Record every span the writer copies."""
    seen: list[writer.FileSpan] = []
    real = writer.copy_span

    def spy(f: Any, span: writer.FileSpan) -> None:
        seen.append(span)
        real(f, span)

    monkeypatch.setattr(writer, "copy_span", spy)
    return seen


@pytest.mark.skipif(not writer.KERNEL_COPY, reason="os.copy_file_range is Linux-only")
def test_kernel_copy_and_map_paths_write_identical_files(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _spans(monkeypatch)
    fast = _convert(checkpoint, tmp_path / "fast.safetensors")
    # Contiguous tensors with bytes went as file spans; the two views and the
    # empty tensor did not.
    assert sorted(s.length for s in spans) == sorted([2100 * 1025 * 4, 33 * 7 * 2, 12 * 24 * 4,
                                                      4, 5 * 3 * 2])
    monkeypatch.setattr(convert_module, "KERNEL_COPY", False)
    spans.clear()
    mapped = _convert(checkpoint, tmp_path / "mapped.safetensors")
    assert spans == []
    assert fast == mapped
    # And the tensors are torch's, bit for bit (the reference reader loads them).
    st = pytest.importorskip("safetensors.torch")
    loaded, back = torch.load(checkpoint, weights_only=True), st.load_file(tmp_path / "fast.safetensors")
    for name, want in loaded.items():
        have = back[name]
        assert have.dtype == want.dtype and have.shape == want.shape, name
        assert torch.equal(have.reshape(-1).view(torch.uint8),
                           want.contiguous().reshape(-1).view(torch.uint8)), name


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
def test_refused_kernel_copy_falls_back_to_the_same_bytes(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    want = _convert(checkpoint, tmp_path / "want.safetensors")
    calls = []

    def refuse(*args: Any) -> int:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writer, "KERNEL_COPY", True)
    monkeypatch.setattr(convert_module, "KERNEL_COPY", True)
    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    assert _convert(checkpoint, tmp_path / "got.safetensors") == want
    assert calls  # the kernel copy was tried, refused, and the writer went on


def test_kernel_copy_that_stops_part_way_is_completed(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel copies some bytes and then refuses (or the source ends early for
    it): the buffered path picks up exactly where it stopped."""
    want = _convert(checkpoint, tmp_path / "want.safetensors")

    def some_then_refuse(src: int, dst: int, count: int, offset_src: int | None = None,
                         offset_dst: int | None = None) -> int:
        if count > 1000 and offset_src is not None and offset_src % 2 == 0:
            return os.write(dst, os.pread(src, 777, offset_src))  # a short copy
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(writer, "KERNEL_COPY", True)
    monkeypatch.setattr(convert_module, "KERNEL_COPY", True)
    monkeypatch.setattr(os, "copy_file_range", some_then_refuse, raising=False)
    assert _convert(checkpoint, tmp_path / "got.safetensors") == want


def test_other_copy_errors_propagate_and_leave_no_file(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(writer, "KERNEL_COPY", True)
    monkeypatch.setattr(convert_module, "KERNEL_COPY", True)
    monkeypatch.setattr(os, "copy_file_range", broken, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="I/O error"):
        convert(checkpoint, out / "x.safetensors")
    assert list(out.iterdir()) == []  # no output, no temporary file


def test_big_endian_records_take_the_map_path(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-swapped tensors are never handed out as spans (their file bytes are not
    the output's), while a one-byte dtype of the same file still is."""
    values = np.arange(4, dtype=">f4")
    body = kit.dict_of([
        ("w", kit.tensor_v2(kit.storage("0"), 0, [4], [1])),
        ("b", kit.tensor_v2(kit.storage("1", "ByteStorage", numel=4), 0, [4], [1])),
    ])
    src = tmp_path / "be.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body), {"0": values.tobytes(), "1": b"\x01\x02\x03\x04"},
                                   byteorder="big").zip_bytes())
    spans = _spans(monkeypatch)
    convert(src, tmp_path / "be.safetensors")
    assert [s.length for s in spans] == ([4] if writer.KERNEL_COPY else [])
    from tensorfile import load_file

    back = load_file(tmp_path / "be.safetensors")
    assert back["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert back["b"].tolist() == [1, 2, 3, 4]


def test_a_span_past_the_end_of_its_file_is_an_error(tmp_path: Path) -> None:
    from tensorfile._format.dtypes import DTYPES
    from tensorfile._format.header import Entry

    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(10)))
    fd = os.open(src, os.O_RDONLY)
    try:
        entries = [Entry("x", DTYPES["U8"], (16,))]
        with pytest.raises(OSError, match="ends 6 bytes before"):
            writer.save_stream(entries, iter([("x", writer.FileSpan(fd, 0, 16))]),
                               tmp_path / "out.safetensors")
        assert not (tmp_path / "out.safetensors").exists()
        writer.save_stream([Entry("x", DTYPES["U8"], (6,))],
                           iter([("x", writer.FileSpan(fd, 4, 6))]), tmp_path / "ok.safetensors")
        from tensorfile import load_file

        assert load_file(tmp_path / "ok.safetensors")["x"].tolist() == [4, 5, 6, 7, 8, 9]
    finally:
        os.close(fd)


_CUT_WHILE_CONVERTED = r"""
import sys
from pathlib import Path
from tensorfile.errors import FileReadError
from tensorfile.pickles.convert import convert

src, dst = Path(sys.argv[1]), Path(sys.argv[2])

def cut(done, total):
    if src.stat().st_size > 100:
        with open(src, "r+b") as f:
            f.truncate(100)

try:
    convert(src, dst, progress=cut)
except FileReadError as e:
    print("refused:", e)
"""


def test_a_checkpoint_cut_short_while_converted_is_an_error(tmp_path: Path) -> None:
    """Tensors that are not one run of the file (here transposed) are read
    through the map: a checkpoint cut short meanwhile killed the process with
    SIGBUS (issue 22). Now: a FileReadError, and no output file."""
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    src = tmp_path / "model.pt"
    torch.save({f"w{i}": torch.arange(1 << 18, dtype=torch.float32).reshape(512, 512).t()
                for i in range(3)}, src)
    dst = tmp_path / "model.safetensors"
    proc = subprocess.run([sys.executable, "-c", _CUT_WHILE_CONVERTED, str(src), str(dst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert "refused:" in proc.stdout and "cut short" in proc.stdout
    assert not dst.exists()
