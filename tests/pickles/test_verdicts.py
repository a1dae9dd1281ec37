"""Verdict words that are true (issue 13): Python 2 checkpoints, object arrays,
sparse tensors, paths, and views that reach past their storage.

torch, where installed, is the oracle: ``torch.load(weights_only=True)`` must
read what the scanner calls safe, and convert must write exactly its tensors.
"""

from __future__ import annotations

import pathlib
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch_pickle_kit as kit
from py2_kit import py2_checkpoint

from tensorfile.pickles import Verdict, scan
from tensorfile.pickles.convert import convert

TENSORS = {
    "features.0.weight": ([float(i) / 8 - 1 for i in range(24)], (2, 3, 2, 2)),
    "features.0.bias": ([0.5, -1.25], (2,)),
    "lin.weight": ([1.0, 2.0, 3.0], (1, 3)),
}


def _findings(path: Path) -> list[str]:
    return [f"{f.verdict.value}: {f.global_name}: {f.reason}"
            for s in scan(path).files[0].streams for f in s.findings]


@pytest.mark.parametrize("location", ["cpu", "cuda:0"])
def test_python2_checkpoint_is_safe_and_converts_exactly(tmp_path: Path, location: str) -> None:
    src = tmp_path / "py2.pth"
    src.write_bytes(py2_checkpoint(TENSORS, location=location))
    (file,) = scan(src).files
    assert (file.format, file.verdict) == ("torch-legacy", Verdict.SAFE), _findings(src)
    assert "U\x07storage" in src.read_bytes().decode("latin-1")  # SHORT_BINSTRING, as py2 wrote
    out = tmp_path / "py2.safetensors"
    convert(src, out)
    from tensorfile.numpy import load_file

    got = load_file(out)
    assert sorted(got) == sorted(TENSORS)
    for name, (values, shape) in TENSORS.items():
        assert got[name].shape == shape and got[name].dtype.name == "float32"
        assert got[name].reshape(-1).tolist() == values  # exact in float32
    torch = pytest.importorskip("torch")
    if location != "cpu":
        return
    expected = torch.load(src, weights_only=True)  # the oracle
    assert isinstance(expected, OrderedDict) and list(expected) == list(TENSORS)
    assert expected._metadata == {"": {"version": 1}}
    for name, tensor in expected.items():
        assert torch.equal(torch.from_numpy(got[name].copy()), tensor)


def test_python2_checkpoint_with_long_strings_and_no_metadata(tmp_path: Path) -> None:
    """BINSTRING (strings of 256+ bytes) and a state dict without _metadata."""
    name = "block." * 50 + "weight"
    src = tmp_path / "long.pth"
    src.write_bytes(py2_checkpoint({name: ([1.0, 2.0], (2,))}, metadata=False))
    assert b"T" + len(name).to_bytes(4, "little") + name.encode() in src.read_bytes()
    assert scan(src).verdict is Verdict.SAFE, _findings(src)
    convert(src, tmp_path / "long.safetensors")
    torch = pytest.importorskip("torch")
    # weights_only=True has no BINSTRING; the full unpickler (weights_only=False) is the
    # oracle here, on a file built by this test.
    loaded = torch.load(src, weights_only=False)
    assert list(loaded) == [name]


def test_python2_ordered_dict_pairs_must_be_pairs(tmp_path: Path) -> None:
    data = bytearray(py2_checkpoint({"w": ([1.0], (1,))}))
    src = tmp_path / "bad.pth"
    # Turn the first [key, value] list into [key, value, value]: not a pair.
    at = data.index(b"tq")  # end of the tensor's args tuple
    at = data.index(b"e", data.index(b"R", at))  # the APPENDS closing the pair
    data[at:at] = b"N"
    src.write_bytes(bytes(data))
    (file,) = scan(src).files
    assert file.verdict is Verdict.UNKNOWN
    assert any("pairs" in line for line in _findings(src))


def test_object_npy_of_arrays_is_safe(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    arrays = np.empty(3, dtype=object)
    arrays[0], arrays[1], arrays[2] = np.arange(3.0), np.ones((2, 2), np.int8), np.float32(2)
    np.save(tmp_path / "arrays.npy", arrays, allow_pickle=True)
    mixed = np.array([{"x": np.arange(2)}, "text", 3, None, (1.5, b"raw")], dtype=object)
    np.save(tmp_path / "mixed.npy", mixed, allow_pickle=True)
    np.savez(tmp_path / "both.npz", a=arrays, b=np.arange(4))
    for name in ("arrays.npy", "mixed.npy", "both.npz"):
        assert scan(tmp_path / name).verdict is Verdict.SAFE, _findings(tmp_path / name)


def test_object_npy_with_a_foreign_object_is_not_safe(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "path.npy", np.array([pathlib.PurePosixPath("/x")], dtype=object),
            allow_pickle=True)
    (file,) = scan(tmp_path / "path.npy").files
    assert file.verdict is Verdict.UNKNOWN


def test_sparse_tensors_are_unknown_unsupported_layout(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.tensor([1.0, 2.0]), (3,))
    csr = torch.eye(3).to_sparse_csr()
    for name, value in (("coo.pt", coo), ("csr.pt", csr)):
        torch.save({"w": value}, tmp_path / name)
        (file,) = scan(tmp_path / name).files
        found = _findings(tmp_path / name)
        assert file.verdict is Verdict.UNKNOWN, found
        assert any("unsupported layout" in line for line in found)
        assert not any("torch.load" in line or "dangerous" in line for line in found)


def test_posix_path_is_unknown_not_dangerous(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2), "out_dir": pathlib.PosixPath("/tmp/run")}, tmp_path / "p.pt")
    (file,) = scan(tmp_path / "p.pt").files
    assert file.verdict is Verdict.UNKNOWN, _findings(tmp_path / "p.pt")
    assert all(line.startswith("unknown: pathlib.PosixPath") for line in _findings(
        tmp_path / "p.pt"))


def _weights(n: int) -> dict[str, bytes]:
    return {"0": bytes(4 * n)}


@pytest.mark.parametrize(("offset", "size", "stride", "says"), [
    (2, (3,), (1,), "reaches element 4 of storage '0', which holds 4"),
    (0, (2, 3), (3, 1), "reaches element 5"),
    (0, (2, 2), (1,), "differ in length"),
    (-1, (2,), (1,), "negative"),
])
def test_view_past_its_storage_is_an_error_for_scan_and_convert(
        tmp_path: Path, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
        says: str) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), offset, size,
                                                          stride))]))
    src = tmp_path / "bad.pt"
    src.write_bytes(kit.Checkpoint(body, _weights(4)).zip_bytes())
    (file,) = scan(src).files
    assert file.verdict is Verdict.ERROR
    assert any(says in line for line in _findings(src)), _findings(src)
    from tensorfile.errors import MalformedCheckpointError

    with pytest.raises(MalformedCheckpointError, match=says):
        convert(src, tmp_path / "out.safetensors")


def test_views_that_fit_stay_safe(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([
        ("a", kit.tensor_v2(kit.storage("0"), 0, (2, 2), (2, 1))),
        ("t", kit.tensor_v2(kit.storage("0"), 1, (3,), (1,))),
        ("e", kit.tensor_v2(kit.storage("0"), 9, (0,), (1,))),  # empty: reads nothing
    ]))
    src = tmp_path / "ok.pt"
    src.write_bytes(kit.Checkpoint(body, _weights(4)).zip_bytes())
    assert scan(src).verdict is Verdict.SAFE, _findings(src)
    assert zipfile.is_zipfile(src)


def _lpips_weights() -> list[Path]:
    """Real Python 2-era files: ``lpips`` 0.1.4's ``weights/v0.*/*.pth``.

    ``lpips`` cannot be a pinned test dependency (it requires torchvision,
    whose install replaces the pinned torch), so this runs where the package
    is installed, or on an unpacked wheel named by ``TENSORFILE_LPIPS_DIR``
    (its ``lpips`` folder). Found without importing it.
    """
    import importlib.util
    import os

    root = os.environ.get("TENSORFILE_LPIPS_DIR")
    if root is None:
        spec = importlib.util.find_spec("lpips")
        if spec is None or spec.origin is None:
            return []
        root = str(Path(spec.origin).parent)
    return sorted(Path(root).glob("weights/v0.*/*.pth"))


@pytest.mark.skipif(not _lpips_weights(), reason="lpips weights are not installed")
@pytest.mark.parametrize("src", _lpips_weights(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_lpips_weights_are_safe_and_convert_exactly(src: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    (file,) = scan(src).files
    assert (file.format, file.verdict) == ("torch-legacy", Verdict.SAFE), _findings(src)
    out = tmp_path / "lpips.safetensors"
    convert(src, out)
    from tensorfile.numpy import load_file

    got = load_file(out)
    expected = torch.load(src, weights_only=True, map_location="cpu")  # saved on a GPU
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(torch.from_numpy(got[name].copy()), tensor), name


def test_safetensors_whose_length_prefix_reads_as_opcodes_is_safe(tmp_path: Path) -> None:
    """Header lengths whose low byte is GLOBAL, PERSID, EXT1/2/4...: the unpickler
    stops at the prefix's NUL bytes before importing anything."""
    import json
    import struct

    from tensorfile.scan.scanner import scan_one

    entry = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    wrong = []
    for n in [*range(len(entry), 300), *range(300, 2100, 7)]:
        path = tmp_path / "m.safetensors"
        path.write_bytes(struct.pack("<Q", n) + entry.ljust(n) + b"\0\0\x80?")
        got = scan_one(path)
        if (got.format, got.verdict) != ("safetensors", Verdict.SAFE):
            wrong.append((n, got.format, got.verdict.value))
    assert not wrong


@pytest.mark.parametrize(("records", "omit", "says"), [
    ({"0": bytes(8)}, (), "holds 8 bytes"),  # numel 4 x float32 needs 16
    ({"0": bytes(16)}, ("0",), "no record"),
])
def test_storage_record_too_small_is_an_error_for_scan_and_convert(
        tmp_path: Path, records: dict[str, bytes], omit: tuple[str, ...], says: str) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0", numel=4), 0, (2,),
                                                          (1,)))]))
    src = tmp_path / "short.pt"
    src.write_bytes(kit.Checkpoint(body, records).zip_bytes(omit=omit))
    (file,) = scan(src).files
    assert file.verdict is Verdict.ERROR, [s.to_dict() for s in file.streams]
    assert any(says in (s.error or "") for s in file.streams), [s.error for s in file.streams]
    from tensorfile.errors import MalformedCheckpointError

    with pytest.raises(MalformedCheckpointError):
        convert(src, tmp_path / "out.safetensors")


def test_a_storage_is_sized_by_its_first_persistent_id(tmp_path: Path) -> None:
    """torch builds a key's storage from its first mention in the stream; so does the bound."""
    body = kit.stream(kit.dict_of([
        ("a", kit.tensor_v2(kit.storage("0", numel=8), 0, (8,), (1,))),
        ("b", kit.tensor_v2(kit.storage("0", numel=2), 4, (4,), (1,))),  # fits in 8
    ]))
    src = tmp_path / "two.pt"
    src.write_bytes(kit.Checkpoint(body, {"0": bytes(32)}).zip_bytes())
    assert scan(src).verdict is Verdict.SAFE, _findings(src)
    torch = pytest.importorskip("torch")
    loaded = torch.load(src, weights_only=True)  # the oracle: the first mention's 8 elements
    assert loaded["b"].tolist() == [0.0] * 4
