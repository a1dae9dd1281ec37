"""One meaning of `safe` under every loader: the pure-Python unpickler's readings.

``joblib.load`` unpickles with ``pickle._Unpickler``, which reads on where the
C unpickler stops (spec/SCANNING.md, "Which loaders read a file"). Each
vector here is checked against the real loaders in a subprocess with a
canary: the pure-Python reader runs the payload, the C reader does not, and
the scanner reports it.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import pytest
from loader_kit import runs_payload
from pickle_kit import STOP, call, command, glob, os_system, proto, string0, text

from tensorfile.pickles import Verdict, scan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))  # the loaders harness


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary-created"


def _frame_past_eof(canary: Path) -> bytes:
    body = proto(2)[2:] + call(glob("os", "system"), text(command(canary))) + STOP
    return b"\x80\x04\x95" + struct.pack("<Q", len(body) + 1000) + body


def _inst_at_eof(canary: Path) -> bytes:
    # INST's class name is the last line, without its newline: readline()[:-1]
    # drops the trailing "X", so pickle._Unpickler calls os.system.
    return b"(" + string0(command(canary)) + b"ios\nsystemX"


def _global_at_eof(canary: Path) -> bytes:
    return b"cos\nsystemX"


VECTORS = {"frame past the end": _frame_past_eof, "INST at the end": _inst_at_eof}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_pure_python_reading_is_scanned(name: str, tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(VECTORS[name](canary))
    report = scan(path)
    (f,) = report.files
    assert f.verdict is Verdict.DANGEROUS, f
    assert any(fi.global_name == "os.system" for s in f.streams for fi in s.findings)
    # The oracles: the C unpickler stops before the payload, the pure-Python one runs it.
    assert not runs_payload("pickle", path, canary)
    assert runs_payload("pickle-python", path, canary)


def test_global_at_the_end_is_an_import(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(_global_at_eof(tmp_path))
    (f,) = scan(path).files
    assert f.verdict is Verdict.DANGEROUS and f.format != "not-pickle"


def test_text_without_newline_is_still_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_bytes(b"hello world")  # 'h' BINGET of a missing memo slot
    (f,) = scan(path).files
    assert f.format == "not-pickle" and f.verdict is Verdict.SAFE


def test_huge_text_line_is_read_with_a_bound(tmp_path: Path) -> None:
    # Issue 22: a 3 GiB text argument in a sparse file once took 8 GB to scan.
    path = tmp_path / "big.pkl"
    with open(path, "wb") as f:
        f.write(b"\x80\x02S'")
        f.truncate(3 << 30)
    start = time.monotonic()
    (rep,) = scan(path).files
    assert time.monotonic() - start < 5
    assert rep.verdict is Verdict.ERROR
    assert "no newline within" in str(rep.streams[0].error)


def test_safetensors_starting_with_P_is_not_read_whole(tmp_path: Path) -> None:
    # A valid safetensors file whose length prefix reads as PERSID ('P' = 0x50).
    header = {"w": {"dtype": "U8", "shape": [2 << 30], "data_offsets": [0, 2 << 30]}}
    raw = json.dumps(header).encode()
    raw += b" " * (0x50 - len(raw) % 256) if len(raw) % 256 <= 0x50 else b""
    raw += b" " * ((0x50 - len(raw)) % 256)
    assert len(raw) % 256 == 0x50
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + (2 << 30))
    start = time.monotonic()
    (rep,) = scan(path).files
    assert time.monotonic() - start < 5
    assert rep.format == "safetensors" and rep.verdict is Verdict.SAFE, rep


def test_os_system_sample_still_runs_under_both(tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(os_system(canary))
    assert runs_payload("pickle-python", path, canary)
    assert scan(path).files[0].verdict is Verdict.DANGEROUS
    os.sync()


def test_old_numpy_object_npy_with_int_dtype_flags_is_safe(tmp_path: Path) -> None:
    # Older numpy pickled numpy.dtype('O8', 0, 1) with ints where numpy 2 writes bools.
    import numpy as np

    path = tmp_path / "objects.npy"
    np.save(path, np.array([np.arange(3), "text", None], dtype=object), allow_pickle=True)
    data = path.read_bytes()
    assert data.count(b"\x89\x88\x87") >= 1
    path.write_bytes(data.replace(b"\x89\x88\x87", b"K\x00K\x01\x87"))
    from loader_kit import loads_ok

    assert loads_ok("numpy", path)
    (f,) = scan(path).files
    assert f.verdict is Verdict.SAFE, f


def test_hash_bomb_of_shared_tuples_is_not_safe(tmp_path: Path) -> None:
    # t = (t, t) forty times through the memo, then used as a dict key: pickle.load
    # and torch.load(weights_only=True) hash 2**40 tuples and never finish.
    from pickle_kit import get, put

    data = proto(2) + b"N" + put(0)
    for i in range(40):
        data += get(i) + get(i) + b"\x86" + put(i + 1)
    data += b"0}" + get(40) + b"N" + b"s" + STOP
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    (f,) = scan(path).files
    assert f.verdict is Verdict.ERROR
    assert "hashing bound" in str(f.streams[0].error)
    from loader_kit import run_loader

    with pytest.raises(Exception, match="timed out"):
        run_loader("pickle", path, timeout=3)


def _npy(header: str, version: tuple[int, int] = (1, 0), data: bytes = b"") -> bytes:
    raw = header.encode("latin1")
    size = struct.pack("<H" if version == (1, 0) else "<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + size + raw + data


@pytest.mark.parametrize(("header", "data", "verdict"), [
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", bytes(16), Verdict.SAFE),
    ("{'descr': '<i4', 'fortran_order': True, 'shape': (2L, 1L), }\n", bytes(8), Verdict.SAFE),
    ("{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': (), }\n",
     b"\x80\x02N.", Verdict.SAFE),
    # a shape numpy allocates before it reads: 8 EiB from 8 bytes
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }\n",
     bytes(8), Verdict.ERROR),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (0x2,), }\n", bytes(16), Verdict.ERROR),
    ("{(1, [2]): 3}\n", b"", Verdict.ERROR),  # an unhashable key raised TypeError
    # fuzz_loaders: str.isdigit() takes a latin-1 superscript one, int() raised ValueError
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (\u00b9,), }\n", bytes(8), Verdict.ERROR),
])
def test_npy_headers_read_as_numpy_reads_them(tmp_path: Path, header: str, data: bytes,
                                              verdict: Verdict) -> None:
    from loader_kit import loads_ok

    path = tmp_path / "a.npy"
    path.write_bytes(_npy(header, data=data))
    (f,) = scan(path).files
    assert f.verdict is verdict, f
    if verdict is Verdict.SAFE:
        assert loads_ok("numpy", path)


def test_npy_16_mib_header_is_refused_within_bounds(tmp_path: Path) -> None:
    # numpy.load(allow_pickle=True) parses it with literal_eval (gigabytes); the
    # scan must stay under 256 MiB and 2 s as a whole process.
    import subprocess
    import sys

    path = tmp_path / "big.npy"
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "1, " * (
        (16 << 20) // 3) + "), }\n"
    path.write_bytes(_npy(header, (2, 0)))
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss
    # across vfork and exec, and pytest's own peak is not the scan's.
    code = ("import re, sys, time; from tensorfile.pickles import scan\n"
            "t = time.monotonic(); r = scan(sys.argv[1]); t = time.monotonic() - t\n"
            "hwm = re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1]\n"
            "print(r.files[0].verdict.value, t, hwm)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "error"
    assert float(out[1]) < 2
    assert int(out[2]) < 256 * 1024  # KiB


def test_numpy_reconstruct_with_a_huge_shape_is_not_safe(tmp_path: Path) -> None:
    # 67 bytes that ask numpy for 16 GiB through _reconstruct's shape argument.
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"\x8a\x05\x00\x00\x00\x00\x04\x85C\x01b\x87R.")
    assert len(data) == 67
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    (f,) = scan(path).files
    assert f.verdict is Verdict.ERROR
    assert "resource bound" in f.streams[0].findings[0].reason
    from loader_kit import run_loader

    out = run_loader("pickle", path, memory=1 << 30)  # 1 GiB: numpy cannot allocate it
    assert "MemoryError" in out.stderr or "Unable to allocate" in out.stderr


def test_deflated_storage_record_that_inflates_far_past_its_size(tmp_path: Path) -> None:
    import zipfile

    import torch

    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(4)}, path)
    out = tmp_path / "bomb.pt"
    # 256 MiB of zeros deflate to about 1 MiB; torch.load's miniz allocates the
    # declared size whole (streamed here at level 1 to keep the test fast).
    with (zipfile.ZipFile(path) as src,
          zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst):
        for info in src.infolist():
            if info.filename.endswith("data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as w:
                    chunk = bytes(1 << 20)
                    for _ in range(256):
                        w.write(chunk)
            else:
                dst.writestr(info, src.read(info))
    (f,) = scan(out).files
    assert f.verdict is Verdict.ERROR
    assert any("allocates it whole" in str(s.error) for s in f.streams)


def _frame_payload(canary: Path) -> bytes:
    body = proto(2)[2:] + call(glob("os", "system"), text(command(canary))) + STOP
    return b"\x95" + struct.pack("<Q", len(body) + 1000) + body


# payload -> the loaders that run it (joblib.load reads with the pure-Python unpickler)
POLYGLOTS = {
    "plain": (os_system, {"pickle", "pickle-python", "numpy", "joblib"}),
    "INST at the end": (lambda c: b"(" + string0(command(c)) + b"ios\nsystemX",
                        {"pickle-python", "joblib"}),
    "frame past the end": (_frame_payload, {"pickle-python", "joblib"}),
}


@pytest.mark.parametrize("name", sorted(POLYGLOTS))
def test_payload_inside_a_valid_safetensors_file_is_not_safe(name: str, tmp_path: Path,
                                                             canary: Path) -> None:
    # Issue 27 item 3: a valid safetensors file is still opened by pickle loaders.
    from fuzz_loaders import safetensors_polyglot

    import tensorfile

    build, runners = POLYGLOTS[name]
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_polyglot(build(canary)))
    assert set(tensorfile.load_file(path)) == {"w"}  # a valid safetensors file
    (f,) = scan(path).files
    assert f.verdict is Verdict.DANGEROUS, f
    assert any(fi.global_name == "os.system" for s in f.streams for fi in s.findings)
    for loader in ("pickle", "pickle-python", "joblib"):
        assert runs_payload(loader, path, canary) is (loader in runners), loader


def test_safetensors_whose_pickle_reading_imports_then_breaks_is_not_safe(tmp_path: Path) -> None:
    # Found by fuzz/fuzz_loaders.py: every pickle loader imports
    # collections.OrderedDict from this valid safetensors file before failing on
    # a name that is not UTF-8; the scan called it safe (safetensors) because
    # the pickle reading broke with no finding.
    from fuzz_loaders import safetensors_polyglot
    from torch_oracle import pickle_reads

    import tensorfile

    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_polyglot(b"\x80\x02ccollections\nOrderedDict\n)Rc\xff\n\xff\n."))
    assert set(tensorfile.load_file(path)) == {"w"}
    assert "collections.OrderedDict" in pickle_reads(path).globals
    (f,) = scan(path).files
    assert f.verdict is not Verdict.SAFE, f
    assert "collections.OrderedDict" in f.streams[0].globals


def test_memo_index_bomb_is_not_safe(tmp_path: Path) -> None:
    # Issue 22: LONG_BINPUT 2**30 makes the C unpickler allocate a memo of 2**31
    # pointers (16 GiB) from 9 bytes; the scan names its memo bound instead.
    from loader_kit import run_loader

    path = tmp_path / "memo.pkl"
    path.write_bytes(proto(2) + b"Nr" + struct.pack("<I", 1 << 30) + STOP)
    (f,) = scan(path).files
    assert f.verdict is Verdict.ERROR
    assert "memo" in str(f.streams[0].error)
    out = run_loader("pickle", path, memory=1 << 30)
    assert "MemoryError" in out.stderr
