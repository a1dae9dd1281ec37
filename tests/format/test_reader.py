"""safe_open: zero copy, read-only views, slicing, backends, and clear errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile.errors import (
    ClosedFileError,
    FileReadError,
    FormatError,
    FrameworkError,
    TensorfileError,
    TensorNotFoundError,
    TruncatedFileError,
)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.safetensors"
    tensorfile.save_file(
        {
            "w": np.arange(60, dtype=np.float32).reshape(3, 4, 5),
            "b": np.arange(5, dtype=np.int64),
            "s": np.array(1.5, dtype=np.float64),
        },
        path,
        metadata={"who": "test"},
    )
    return path


def test_numpy_arrays_are_read_only_views_of_the_map(model: Path) -> None:
    with tensorfile.safe_open(model, "np") as f:
        w = f.get_tensor("w")
        start, end = f.byte_range("w")
    assert not w.flags.writeable
    with pytest.raises(ValueError):
        w[0, 0, 0] = 1.0
    # the array's memory is the map's: its buffer is an mmap of the file
    import mmap

    base: object = w
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    assert isinstance(base, mmap.mmap)
    assert base[start:end] == w.tobytes()
    # and the array's first element sits exactly at the tensor's offset in the map
    map_address = np.frombuffer(base, dtype=np.uint8).ctypes.data
    assert w.ctypes.data == map_address + start
    # still valid after the handle closed
    assert w[2, 3, 4] == 59.0


def test_torch_tensors_are_private_copy_on_write(model: Path) -> None:
    torch = pytest.importorskip("torch")
    before = model.read_bytes()
    with tensorfile.safe_open(model, "pt") as f:
        w = f.get_tensor("w")
    w[0, 0, 0] = 1234.0  # must neither crash nor reach the file
    assert w[0, 0, 0].item() == 1234.0
    assert model.read_bytes() == before
    assert tensorfile.load_file(model, "pt")["w"][0, 0, 0].item() == 0.0
    assert isinstance(w, torch.Tensor)


def test_no_warning_when_loading_torch(model: Path, recwarn: pytest.WarningsRecorder) -> None:
    pytest.importorskip("torch")
    tensorfile.load_file(model, "pt")
    assert not [w for w in recwarn.list if "writable" in str(w.message)]


def test_keys_metadata_and_ranges(model: Path) -> None:
    with tensorfile.safe_open(model, "np") as f:
        assert f.keys() == ["b", "s", "w"]
        assert set(f.offset_keys()) == {"b", "s", "w"}
        assert f.metadata() == {"who": "test"}
        data = model.read_bytes()
        for k in f.keys():
            s, e = f.byte_range(k)
            assert data[s:e] == f.get_tensor(k).tobytes()
        assert f.get_tensor("s").shape == ()


def test_missing_name_closed_handle_and_framework_errors(model: Path) -> None:
    f = tensorfile.safe_open(model, "np")
    with pytest.raises(TensorNotFoundError, match="nope") as ei:
        f.get_tensor("nope")
    assert isinstance(ei.value, KeyError)  # code written for the reference catches KeyError
    f.close()
    with pytest.raises(ClosedFileError):
        f.get_tensor("w")
    with pytest.raises(ClosedFileError):
        f.keys()
    with pytest.raises(FrameworkError, match="unknown framework"):
        tensorfile.safe_open(model, "caffe")
    if importlib.util.find_spec("tensorflow") is None:  # "tf" is known: tensorfile.tensorflow
        with pytest.raises(FrameworkError, match="not installed"):
            tensorfile.safe_open(model, "tf")
    with pytest.raises(FrameworkError, match="backend"):
        tensorfile.safe_open(model, "np", backend="magic")
    with pytest.raises(FrameworkError, match="cpu"):
        tensorfile.safe_open(model, "np", device="cuda:0")


def test_pread_backend_gives_private_writable_copies(model: Path) -> None:
    with tensorfile.safe_open(model, "np", backend="pread") as f:
        w = f.get_tensor("w")
    w[0, 0, 0] = 9.0
    assert tensorfile.load_file(model)["w"][0, 0, 0] == 0.0
    both = tensorfile.load_file(model, backend="pread")
    assert both["b"].tolist() == [0, 1, 2, 3, 4]


index_part = st.one_of(
    st.integers(-3, 2),
    st.builds(
        slice,
        st.none() | st.integers(-5, 5),
        st.none() | st.integers(-5, 5),
        st.none() | st.integers(-3, 3).filter(lambda s: s != 0),
    ),
)
indexes = st.one_of(
    index_part,
    st.tuples(index_part, index_part),
    st.tuples(st.just(Ellipsis), index_part),
    st.tuples(index_part, st.just(Ellipsis), index_part),
)


@settings(max_examples=200, deadline=None)
@given(index=indexes, backend=st.sampled_from(["mmap", "pread"]))
def test_get_slice_matches_numpy_indexing(
    index: object, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    full = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    path = tmp_path_factory.getbasetemp() / "slice.safetensors"
    if not path.exists():
        tensorfile.save_file({"w": full}, path)
    with tensorfile.safe_open(path, "np", backend=backend) as f:
        sl = f.get_slice("w")
        assert sl.get_shape() == [3, 4, 5] and sl.get_dtype() == "F32"
        try:
            expected = full[index]  # type: ignore[index]
        except IndexError:
            with pytest.raises(IndexError):
                sl[index]
            return
        got = sl[index]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        (np.s_[5], 1),
        (np.s_[-1, 2:], 1),
        (np.s_[10:20], 10),
        (np.s_[10:20:3, ::-1], 10),  # rows 10, 13, 16, 19
        (np.s_[90:9:-40], 81),  # rows 90, 50, 10
        (np.s_[...], 100),
        (np.s_[:, 0], 100),
    ],
)
def test_pread_slices_read_only_the_rows_they_reach(
    index: object, rows: int, tmp_path: Path
) -> None:
    """With backend="pread" (network file systems), a slice along the first
    axis reads just the rows from its first to its last, not the tensor."""
    full = np.arange(100 * 64, dtype=np.float64).reshape(100, 64)
    tensorfile.save_file({"w": full}, tmp_path / "w.safetensors")
    with tensorfile.safe_open(tmp_path / "w.safetensors", "np", backend="pread") as f:
        before = f.bytes_read
        got = f.get_slice("w")[index]
        assert f.bytes_read - before == rows * 64 * 8
    np.testing.assert_array_equal(got, full[index])  # type: ignore[index]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_torch_slices_support_negative_steps(model: Path, backend: str) -> None:
    torch = pytest.importorskip("torch")
    full = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    with tensorfile.safe_open(model, "pt", backend=backend) as f:
        got = f.get_slice("w")[::-1, 1:, -1]
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), full[::-1, 1:, -1])


def test_malformed_files_raise_typed_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    for content in (b"", b"\x01", b"\xff" * 8, b"\x10\x00\x00\x00\x00\x00\x00\x00{}", b"\x02" + b"\0" * 7 + b"[]"):
        bad.write_bytes(content)
        with pytest.raises(FormatError):
            tensorfile.safe_open(bad, "np")
    assert issubclass(FormatError, TensorfileError) and issubclass(FormatError, ValueError)


def test_offset_error_names_tensor_and_byte(tmp_path: Path) -> None:
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}'
    data = len(header).to_bytes(8, "little") + header + bytes(16)
    p = tmp_path / "gap.safetensors"
    p.write_bytes(data)
    with pytest.raises(FormatError, match=r"tensor 'b'.*file byte \d+.*gap"):
        tensorfile.safe_open(p, "np")


def test_loading_a_big_file_does_not_copy_it(tmp_path: Path) -> None:
    """Zero copy: mapping 1 GiB of tensors raises resident memory by far less than 1 GiB."""
    path = tmp_path / "big.safetensors"
    chunk = np.ones((64, 1 << 20), dtype=np.uint8)  # 64 MiB, reused for every tensor
    tensorfile.save_file({f"t{i:02d}": chunk for i in range(16)}, path)
    del chunk
    script = textwrap.dedent(
        f"""
        import resource, tensorfile
        def rss_kib():
            with open('/proc/self/status') as fh:
                for line in fh:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1])
        before = rss_kib()
        tensors = tensorfile.load_file({str(path)!r})
        total = sum(t.nbytes for t in tensors.values())
        after = rss_kib()
        print(total, after - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    total, grew_kib = map(int, out.stdout.split())
    assert total == 1 << 30
    assert grew_kib < 64 * 1024, f"resident memory grew by {grew_kib} KiB"


def test_verified_bytes_are_the_bytes_returned_again(tmp_path: Path) -> None:
    """A file changed after a tensor was verified never leaks into a later read."""
    from tensorfile.integrity import generate_key, sign

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "model.safetensors"
    tensorfile.save_file({"w": np.arange(16, dtype=np.float32)}, path)
    keys = generate_key(tmp_path / "key.pem")
    sign(model_dir, keys.private_key)
    with tensorfile.safe_open(path, "np", verify=keys.public_key) as f:
        first = f.get_tensor("w").copy()
        start, _end = f.byte_range("w")
        with open(path, "r+b") as fh:  # tamper after the check
            fh.seek(start)
            fh.write(b"\xff" * 8)
        again = f.get_tensor("w")
    np.testing.assert_array_equal(again, first)


def test_failed_open_leaves_nothing_to_release(tmp_path: Path) -> None:
    import gc

    seen: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with pytest.raises(FileNotFoundError):
            tensorfile.safe_open(tmp_path / "missing.safetensors", "np")
        gc.collect()  # __del__ of the half-built handle runs here
    finally:
        sys.unraisablehook = old_hook
    assert seen == []



# ------------------------------------------------------------ faults: never a signal, never a raw error


def _cut_model(tmp_path: Path) -> tuple[Path, int]:
    """A file of two tensors, and the offset where ``b``'s bytes start."""
    path = tmp_path / "cut.safetensors"
    tensorfile.save_file({"a": np.arange(4096, dtype=np.float32),
                          "b": np.arange(8192, dtype=np.float32)}, path)
    with tensorfile.safe_open(path, "np") as f:
        return path, f.byte_range("b")[0]


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_file_cut_short_before_the_first_read(tmp_path: Path, framework: str) -> None:
    """A file truncated after open: the tensors it lost raise TruncatedFileError
    (not numpy's plain ValueError), those it kept still read."""
    if framework == "pt":
        pytest.importorskip("torch")
    path, b_start = _cut_model(tmp_path)
    with tensorfile.safe_open(path, framework) as f:
        import os

        os.truncate(path, b_start + 100)
        with pytest.raises(TruncatedFileError, match=r"cut short after it was opened"):
            f.get_tensor("b")
        np.testing.assert_array_equal(np.asarray(f.get_tensor("a")), np.arange(4096))
        with pytest.raises(TruncatedFileError):
            f.tensors()


def test_file_cut_short_after_the_map_exists_is_refused_not_faulted(tmp_path: Path) -> None:
    """Once the map exists, a tensor past the new end, a slice of it or a
    partial read used to touch pages past the end of the file: SIGBUS, the
    process gone. Each is now a TruncatedFileError (in a subprocess, so a
    signal fails the test instead of killing it); a tensor read with the
    pread backend before the cut stays valid."""
    path, b_start = _cut_model(tmp_path)
    script = textwrap.dedent(f"""
        import os, numpy as np, tensorfile
        from tensorfile.errors import TruncatedFileError
        path = {str(path)!r}
        safe = tensorfile.load_file(path, backend="pread")
        f = tensorfile.safe_open(path, "np")
        f.get_tensor("a")  # the map now covers the whole file
        os.truncate(path, {b_start} + 100)
        for read in (lambda: f.get_tensor("b"), lambda: f.get_slice("b")[4000:5000],
                     lambda: f.read_into("b", 4096, bytearray(4096)), lambda: f.tensors()):
            try:
                read()
            except TruncatedFileError:
                continue
            raise SystemExit("no error")
        assert float(safe["b"][8191]) == 8191.0
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ok" in res.stdout, (res.returncode, res.stderr[-2000:])


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_file_that_cannot_be_mapped_is_read_with_pread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    """FUSE direct_io (and some network file systems) refuse mmap with ENODEV:
    reads fall back to pread instead of raising the raw OSError."""
    import errno
    import mmap

    if framework == "pt":
        pytest.importorskip("torch")

    path, _ = _cut_model(tmp_path)
    want = tensorfile.load_file(path, backend="pread")

    def no_map(*args: object, **kw: object) -> mmap.mmap:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", no_map)
    got = tensorfile.load_file(path, framework)
    for k, v in want.items():
        np.testing.assert_array_equal(np.asarray(got[k]), v)
    with tensorfile.safe_open(path, "np") as f:
        np.testing.assert_array_equal(f.get_tensor("b"), want["b"])


def test_io_error_while_reading_is_a_tensorfile_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the storage after open: a FileReadError (a TensorfileError and
    an OSError) naming the file and the bytes, not a bare OSError."""
    import errno

    import tensorfile._io.files as files

    path, _ = _cut_model(tmp_path)
    with tensorfile.safe_open(path, "np", backend="pread") as f:
        def failing(fd: int, view: object, offset: int) -> int:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(files, "pread_into", failing)
        with pytest.raises(FileReadError, match=r"cut\.safetensors.*Input/output error"):
            f.get_tensor("b")
        with pytest.raises(FileReadError):
            f.get_slice("b")[3]
    assert issubclass(FileReadError, TensorfileError) and issubclass(FileReadError, OSError)
