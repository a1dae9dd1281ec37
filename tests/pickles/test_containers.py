"""Container handling: detection by content, robust zip reading, legacy/tar walking, reports."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pickle_kit import (
    EMPTY_DICT,
    STOP,
    glob,
    integer,
    legacy,
    make_tar,
    make_zip,
    npy_object,
    os_system,
    proto,
    records,
    state_dict,
    text,
    tup,
)

from tensorfile.pickles import Verdict, scan
from tensorfile.scan.pickle._tar import tar_checksum_ok
from tensorfile.scan.pickle._zip import zip_entries


def _scan_bytes(tmp_path: Path, data: bytes, name: str = "f.bin") -> tuple[Verdict, str, list]:
    path = tmp_path / name
    path.write_bytes(data)
    (file,) = scan(path).files
    return file.verdict, file.format, file.streams


def test_zip_reader_agrees_with_zipfile_on_normal_archives() -> None:
    data = make_zip([("a/data.pkl", b"x" * 10), ("a/data/0", b"y" * 100), ("a/version", b"3\n")])
    ours = zip_entries(data, 0, len(data), 100)
    theirs = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert [e.name for e in ours] == [i.filename for i in theirs]
    for e, i in zip(ours, theirs, strict=True):
        assert data[e.data_start:e.data_start + e.comp_size] == zipfile.ZipFile(
            io.BytesIO(data)).read(i)


@pytest.mark.parametrize("flags", [0x1, 0x20, 0x40])
def test_flag_bits_readers_refuse_are_still_read(tmp_path: Path, flags: int) -> None:
    """zipfile and torch 2.13's miniz refuse entries flagged encrypted (0x1, 0x40) or
    patched (0x20); older readers did not, so the scanner reads the bytes as stored."""
    # No tensors: records carrying the flag would not sniff as plain data.
    data = make_zip([("m/data.pkl", state_dict())], flags=flags)
    with pytest.raises((RuntimeError, NotImplementedError, zipfile.BadZipFile)):
        zipfile.ZipFile(io.BytesIO(data)).read("m/data.pkl")
    torch = pytest.importorskip("torch")
    path = tmp_path / "flags.pt"
    path.write_bytes(make_zip([("m/data.pkl", state_dict("w")), ("m/version", b"3\n")],
                              flags=flags))
    with pytest.raises(RuntimeError, match="unsupported"):
        torch.load(path, weights_only=True)
    verdict, fmt, _ = _scan_bytes(tmp_path, data)
    assert (verdict, fmt) == (Verdict.SAFE, "torch-zip")


def test_zip64_records_are_located(tmp_path: Path) -> None:
    path = tmp_path / "z64.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a/data.pkl", state_dict("w"))
        with zf.open("a/data/0", "w", force_zip64=True) as f:
            f.write(bytes(1000))
    (file,) = scan(path).files
    assert (file.verdict, file.format) == (Verdict.SAFE, "torch-zip")


def test_real_encryption_is_an_error_not_safe(tmp_path: Path) -> None:
    data = bytearray(make_zip([("m/data.pkl", bytes(range(200, 256)) * 3)], flags=0x1))
    verdict, _, streams = _scan_bytes(tmp_path, bytes(data))
    assert verdict is Verdict.ERROR
    assert any(s.error for s in streams)


@pytest.mark.parametrize(("data", "fmt"), [
    (b"\x80\x02not a pickle at all", "pickle"),  # PROTO: a broken pickle, not text
    (b"PK\x03\x04" + bytes(40), "zip"),           # zip without a central directory
    (make_zip([("readme.txt", b"hello")]), "zip"),  # no pickle, nothing torch could load
    (b"\x93NUMPY\x09\x00" + bytes(10), "npy"),      # unknown npy version
])
def test_unreadable_inputs_are_errors(tmp_path: Path, data: bytes, fmt: str) -> None:
    verdict, got, _ = _scan_bytes(tmp_path, data)
    assert (verdict, got) == (Verdict.ERROR, fmt)


def test_empty_missing_and_folders(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ok.pkl").write_bytes(state_dict("w"))
    (tmp_path / "hollow").mkdir()
    report = scan([tmp_path / "empty.pt", tmp_path / "missing.pt", tmp_path / "sub",
                   tmp_path / "hollow"])
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    # A 0-byte file named like weights is an interrupted download, not a safe model.
    assert verdicts == {"empty.pt": Verdict.ERROR, "missing.pt": Verdict.ERROR,
                        "ok.pkl": Verdict.SAFE, "hollow": Verdict.ERROR}
    assert report.files[0].format == "empty"
    assert report.exit_code == 2


def test_folder_scan_is_recursive_and_sorted(tmp_path: Path) -> None:
    for rel in ("b/x.pt", "a/y.pt", "a/deeper/z.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(state_dict("w"))
    (tmp_path / "a" / "deeper" / "evil.pt").write_bytes(os_system(tmp_path / "c"))
    report = scan(tmp_path)
    names = [Path(f.path).relative_to(tmp_path).as_posix() for f in report.files]
    assert names == ["a/y.pt", "a/deeper/evil.pt", "a/deeper/z.bin", "b/x.pt"]
    assert report.verdict is Verdict.DANGEROUS and report.exit_code == 1


def test_legacy_truncated_record_is_error(tmp_path: Path) -> None:
    good = legacy(state_dict("w"), ["0"], [bytes(16)])
    assert _scan_bytes(tmp_path, good)[:2] == (Verdict.SAFE, "torch-legacy")
    verdict, fmt, streams = _scan_bytes(tmp_path, good[:-4])
    assert (verdict, fmt) == (Verdict.ERROR, "torch-legacy")
    assert "storage record" in (streams[-1].error or "")


def test_legacy_unknown_storage_key_is_error(tmp_path: Path) -> None:
    verdict, _, streams = _scan_bytes(tmp_path, legacy(state_dict("w"), ["7"], [bytes(16)]))
    assert verdict is Verdict.ERROR
    assert "named by no persistent id" in (streams[-1].error or "")


def test_tar_format_of_old_torch(tmp_path: Path) -> None:
    storages = (proto(2) + b"K\x01" + STOP
                + proto(2) + tup(text("0"), text("cpu"), glob("torch", "FloatStorage")) + STOP
                + struct.pack("<q", 2) + bytes(8)
                + proto(2) + b"]" + STOP)
    tensors = (proto(2) + b"K\x01" + STOP
               + proto(2) + tup(text("1"), text("0"), glob("torch", "FloatTensor")) + STOP
               + struct.pack("<ii", 1, 0) + struct.pack("<qqq", 2, 1, 0))
    pickle_member = proto(2) + EMPTY_DICT + text("w") + text("1") + b"Q" + b"s" + STOP
    data = make_tar({"sys_info": proto(2) + EMPTY_DICT + STOP, "storages": storages,
                     "tensors": tensors, "pickle": pickle_member})
    verdict, fmt, streams = _scan_bytes(tmp_path, data)
    assert (verdict, fmt) == (Verdict.SAFE, "torch-tar"), [s.to_dict() for s in streams]
    hostile = make_tar({"sys_info": proto(2) + EMPTY_DICT + STOP, "storages": storages,
                        "tensors": tensors, "pickle": os_system(tmp_path / "c")})
    assert _scan_bytes(tmp_path, hostile)[0] is Verdict.DANGEROUS


def test_numpy_files(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int32))
    assert _scan_bytes(tmp_path, buf.getvalue())[:2] == (Verdict.SAFE, "npy")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, [2, 3], "x"], dtype=object), allow_pickle=True)
    assert _scan_bytes(tmp_path, buf.getvalue())[:2] == (Verdict.SAFE, "npy")
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.ones(3), b=np.array([None, 1.5], dtype=object))
    assert _scan_bytes(tmp_path, buf.getvalue())[:2] == (Verdict.SAFE, "zip")
    assert _scan_bytes(tmp_path, npy_object(os_system(tmp_path / "c")))[0] is Verdict.DANGEROUS


def test_report_shape_for_renderers(tmp_path: Path) -> None:
    data = state_dict("w") + proto(2) + glob("os", "system") + tup(text("x")) + b"R."
    path = tmp_path / "two.pkl"
    path.write_bytes(data)
    report = scan(path)
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["verdict"] == "dangerous" and doc["exit_code"] == 1
    (file,) = doc["files"]
    assert [s["location"] for s in file["streams"]] == ["(file)", "#2"]
    assert file["streams"][0]["verdict"] == "safe"
    second = file["streams"][1]
    assert second["offset"] == len(state_dict("w"))
    finding = second["findings"][0]
    assert finding == {"verdict": "dangerous", "reason": finding["reason"], "opcode": "GLOBAL",
                       "offset": len(state_dict("w")) + 2, "global": "os.system"}


def test_storage_location_other_than_cpu_is_safe(tmp_path: Path) -> None:
    sd = proto(2) + glob("collections", "OrderedDict") + tup() + b"R" + b"(" + text("w") \
        + glob("torch._utils", "_rebuild_tensor_v2") + b"(" + b"(" + text("storage") \
        + glob("torch", "BFloat16Storage") + text("0") + text("cuda:1") + integer(4) + b"tQ" \
        + integer(0) + tup(integer(2), integer(2)) + tup(integer(2), integer(1)) + b"\x89" \
        + glob("collections", "OrderedDict") + tup() + b"R" + b"tR" + b"u" + STOP
    assert _scan_bytes(tmp_path, make_zip([("a/data.pkl", sd), *records("a", 1, 8)]))[:2] == (
        Verdict.SAFE, "torch-zip")


def test_model_folder_lists_non_pickles_as_such(tmp_path: Path) -> None:
    """A downloaded model folder: config, safetensors, docs and an empty file are not pickles."""
    from tensorfile.numpy import save_file

    np = pytest.importorskip("numpy")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}\n')
    (folder / "README.md").write_text("# A model\n\nSome text.\n")
    (folder / "__init__.py").write_bytes(b"")
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, folder / "model.safetensors")
    (folder / "pytorch_model.bin").write_bytes(make_zip([("archive/data.pkl",
                                                          state_dict("w")),
                                                         *records("archive")]))
    report = scan(folder)
    formats = {Path(f.path).name: (f.format, f.verdict) for f in report.files}
    assert formats == {
        "README.md": ("not-pickle", Verdict.SAFE),
        "__init__.py": ("not-pickle", Verdict.SAFE),
        "config.json": ("not-pickle", Verdict.SAFE),
        "model.safetensors": ("safetensors", Verdict.SAFE),
        "pytorch_model.bin": ("torch-zip", Verdict.SAFE),
    }
    assert report.exit_code == 0
    # Named explicitly (`tensorfile scan model/*`), the same verdicts.
    named = scan(sorted(folder.iterdir()))
    assert [(f.format, f.verdict) for f in named.files] == [formats[Path(f.path).name]
                                                            for f in named.files]
    assert named.exit_code == 0
    # A payload hidden under a harmless name is still found in the folder.
    (folder / "notes.txt").write_bytes(os_system(tmp_path / "c"))
    assert scan(folder).verdict is Verdict.DANGEROUS


def test_hidden_earlier_zip_directory_is_scanned_too(tmp_path: Path) -> None:
    """Readers take the last end-of-directory record; one before it is scanned as well."""
    hostile = make_zip([("m/data.pkl", os_system(tmp_path / "c"))])
    benign = make_zip([("b/data.pkl", state_dict("w"))])
    assert zipfile.ZipFile(io.BytesIO(hostile + benign)).namelist() == ["b/data.pkl"]
    verdict, fmt, streams = _scan_bytes(tmp_path, hostile + benign)
    assert (verdict, fmt) == (Verdict.DANGEROUS, "torch-zip")
    assert {s.location for s in streams if s.error is None} == {"b/data.pkl", "m/data.pkl"}
    assert any("second end-of-central-directory" in (s.error or "") for s in streams)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=512, max_size=512), st.integers(0, 7), st.booleans())
def test_tar_checksum_test_is_tarfiles(block: bytes, kind: int, fix: bool) -> None:
    """The scanner's header test (no tarfile import) says what tarfile.frombuf says."""
    import tarfile

    raw = bytearray(block)
    if fix:  # a valid checksum (unsigned or signed sum, octal or base-256), or a near miss
        raw[148:156] = b" " * 8
        unsigned = sum(raw)
        signed = unsigned - 256 * sum(b >= 128 for b in raw)
        value = (unsigned, signed, unsigned + 1)[kind % 3]
        raw[148:156] = (b"%06o\0 " % value if kind < 4
                        else b"\x80" + (value % 256**7).to_bytes(7, "big"))
    data = bytes(raw)
    try:
        expected = tarfile.nti(data[148:156]) in tarfile.calc_chksums(data)  # type: ignore[attr-defined]
    except tarfile.HeaderError:
        expected = False
    expected = expected and data.count(0) != 512
    assert tar_checksum_ok(data) is expected
