"""Resource attacks finish fast, in little memory, with a clear (never safe) result."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from pickle_kit import make_zip, proto, records, state_dict

from tensorfile._picklevm.machine import Limits
from tensorfile.pickles import Verdict, scan
from tensorfile.scan.pickle.containers import ScanLimits

MAX_SECONDS = 10.0  # generous: the machine may be shared; real runs take a fraction
MAX_PEAK = 64 << 20


def _scan_bounded(path: Path, limits: ScanLimits | None = None) -> Verdict:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        report = scan(path, limits=limits)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert elapsed < MAX_SECONDS, elapsed
    assert peak < MAX_PEAK, peak
    return report.verdict


def _memo_fanout(depth: int) -> bytes:
    """t[i+1] = (t[i], t[i]): 2**depth leaves if anything expanded it."""
    out = proto(4) + b"N" + b"r" + struct.pack("<I", 0)
    for i in range(depth):
        out += b"j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i) + b"\x86"
        out += b"r" + struct.pack("<I", i + 1)
    return out


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("million MARKs", proto(2) + b"(" * 2_000_000 + b".", Verdict.ERROR),
    ("deep lists", proto(2) + b"]" * 30_000 + b"a" * 29_999 + b".", Verdict.SAFE),
    ("deep tuples", proto(2) + b"(" * 30_000 + b"t" * 30_000 + b".", Verdict.SAFE),
    ("item flood", proto(2) + b"](" + b"N" * 100_000 + b"e.", Verdict.SAFE),
    ("memo fan-out as dict key", _memo_fanout(200) + b"}" + b"j" + struct.pack("<I", 200)
     + b"Nsj" + struct.pack("<I", 200) + b"\x86.", Verdict.ERROR),  # hashing bound
    ("memo fan-out as numpy state", _memo_fanout(200) + b"0cnumpy\ndtype\n(X\x02\x00\x00\x00f8"
     b"\x89\x88tRj" + struct.pack("<I", 200) + b"b.", Verdict.UNKNOWN),
    ("memo fan-out as call args", _memo_fanout(200) + b"0ccollections\nOrderedDict\nj"
     + struct.pack("<I", 200) + b"R.", Verdict.UNKNOWN),
    ("huge memo index", proto(2) + b"Nr\xff\xff\xff\xff.", Verdict.ERROR),
    ("huge BINUNICODE8", proto(4) + b"\x8d" + struct.pack("<Q", 1 << 62) + b"x.", Verdict.ERROR),
    ("huge BINBYTES8", proto(4) + b"\x8e" + struct.pack("<Q", (1 << 64) - 1) + b".",
     Verdict.ERROR),
    ("huge FRAME", proto(4) + b"\x95" + struct.pack("<Q", (1 << 63) - 1) + b"N.", Verdict.ERROR),
    ("huge LONG4", proto(2) + b"\x8b" + struct.pack("<i", (1 << 31) - 1) + b".", Verdict.ERROR),
    ("many streams", b"N." * 20_000, Verdict.ERROR),
])
def test_resource_attack(tmp_path: Path, name: str, data: bytes, expected: Verdict) -> None:
    path = tmp_path / "attack.pkl"
    path.write_bytes(data)
    assert _scan_bounded(path) is expected


@pytest.mark.parametrize(("limit", "data"), [
    (Limits(max_stack=10_000), proto(2) + b"N" * 20_000 + b"."),
    (Limits(max_items=10_000), proto(2) + b"](" + b"N" * 20_000 + b"e."),
    (Limits(max_memo=1000), proto(2) + b"Nr" + struct.pack("<I", 5000) + b"."),
    (Limits(max_marks=1000), proto(2) + b"(" * 2000 + b"."),
])
def test_each_machine_limit_gives_error(tmp_path: Path, limit: Limits, data: bytes) -> None:
    path = tmp_path / "attack.pkl"
    path.write_bytes(data)
    report = scan(path, limits=ScanLimits(machine=limit))
    assert report.verdict is Verdict.ERROR
    (stream,) = report.files[0].streams
    assert stream.error and ("limit" in stream.error or "more than" in stream.error
                             or "deeper" in stream.error)


def test_zip_bomb_is_refused_within_budget(tmp_path: Path) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    bomb = b"".join(comp.compress(chunk) for _ in range(80)) + comp.flush()  # 80 MiB
    name = b"bomb/data.pkl"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(bomb), 80 << 20,
                        len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(bomb),
                          80 << 20, len(name), 0, 0, 0, 0, 0, 0) + name
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                       len(local) + len(bomb), 0)
    path = tmp_path / "bomb.pt"
    path.write_bytes(local + bomb + central + eocd)
    assert _scan_bounded(path, ScanLimits(max_inflate=16 << 20)) is Verdict.ERROR
    report = scan(path)  # default budget: refused as well, after at most max_inflate bytes
    assert report.verdict is Verdict.ERROR
    assert "zip bomb" in (report.files[0].streams[0].error or "")


def test_weights_are_never_read(tmp_path: Path) -> None:
    """A storage record is only sniffed: the scan allocates far less than the record."""
    pickle_bytes = state_dict("w")
    path = tmp_path / "big.pt"
    # Put a sparse 1 GiB record in the middle by rebuilding the archive with zipfile.
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(96):
                f.write(block)
    assert _scan_bounded(path) is Verdict.SAFE


def test_overlapping_zip_entries_are_scanned_once(tmp_path: Path) -> None:
    """Many central entries sharing one body cost one scan (overlap zip bombs), and
    the archive is an error: the same name twice is two readings."""
    body = state_dict(*[f"w{i}" for i in range(200)])
    data = make_zip([("a/data.pkl", body), *records("a", 200)])
    cd = data.index(b"PK\x01\x02")
    second = data.index(b"PK\x01\x02", cd + 4)  # the records' entries follow data.pkl's
    eocd = data.index(b"PK\x05\x06")
    copies = 20_000
    central = data[cd:second] * copies + data[second:eocd]
    tail = bytearray(data[eocd:])
    struct.pack_into("<HHI", tail, 8, copies + 200, copies + 200, len(central))
    path = tmp_path / "overlap.pt"
    path.write_bytes(data[:cd] + central + bytes(tail))
    started = time.perf_counter()
    report = scan(path)
    assert time.perf_counter() - started < MAX_SECONDS
    assert report.verdict is Verdict.ERROR
    pickles = [s for s in report.files[0].streams if s.error is None]
    assert len(pickles) == 1
    assert any("appears twice" in (s.error or "") for s in report.files[0].streams)
