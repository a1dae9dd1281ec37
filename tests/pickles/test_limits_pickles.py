"""Resource limits of the converter (the scanner's own are in tests/pickles/test_limits.py).

The converter runs the scanner first and then the same machine again with a
builder attached, so every resource attack must also stop it early, with a
:class:`~tensorfile.errors.ConversionError` and nothing written. Each test
runs its cases through ``convert`` in one subprocess with its address space
capped (``RLIMIT_AS``, 2 GiB) and a per-case time limit (``SIGALRM``), and
compares each case's wall time and peak resident memory (``VmHWM`` from /proc,
reset before each case) with the bound the test states. Bounds are several times what an idle machine needs, because
the test machine is shared.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from pickle_kit import EMPTY_TUPLE, REDUCE, glob, proto
from torch_pickle_kit import (
    EMPTY_DICT,
    MARK,
    NEWFALSE,
    SETITEMS,
    Checkpoint,
    dict_of,
    integer,
    storage,
    stream,
    tensor_v2,
    text,
)

from tensorfile.convert._flatten import MAX_NAMES
from tensorfile.pickles import Verdict, scan

MB = 1 << 20

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak memory through Linux /proc"
)

_CHILD = r"""
import json, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from tensorfile.errors import TensorfileError
from tensorfile.pickles.convert import convert

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

for name, src, dst, limit in json.load(open(sys.argv[1])):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = status("VmRSS")
    signal.alarm(limit)  # a case past its time limit ends the whole run
    t0 = time.perf_counter()
    out = {"name": name}
    try:
        report = convert(src, dst)
        out["tensors"] = len(report.tensors)
        out["aliases"] = len(report.aliases)
        out["dropped"] = len(report.dropped)
    except TensorfileError as e:
        out["error"] = type(e).__name__
        out["message"] = str(e)[:300]
    out["seconds"] = time.perf_counter() - t0
    signal.alarm(0)
    out["peak_delta"] = status("VmHWM") - before
    print(json.dumps(out), flush=True)
"""


def _convert_all(folder: Path, cases: dict[str, tuple[bytes, int]]) -> dict[str, dict[str, Any]]:
    """Convert each case (bytes, time limit in s) in one capped subprocess, in order.

    A case still running at its limit is killed (SIGALRM) with the cases after
    it; those have no result, which their tests report as a failure.
    """
    jobs = []
    for i, (name, (data, limit)) in enumerate(cases.items()):
        src, dst = folder / f"{i}.pt", folder / f"{i}.safetensors"
        src.write_bytes(data)
        jobs.append((name, str(src), str(dst), limit))
    plan = folder / "plan.json"
    plan.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(plan)], capture_output=True, text=True,
        timeout=sum(limit for _, _, _, limit in jobs) + 60,
    )
    results = {}
    for line in proc.stdout.splitlines():
        got = json.loads(line)
        got["wrote"] = Path(next(j[2] for j in jobs if j[0] == got["name"])).exists()
        results[got["name"]] = got
    if proc.returncode not in (0, -14):  # -14: SIGALRM, a case ran past its limit
        raise AssertionError(proc.stderr[-2000:])
    return results


def _in_zip(pickle_bytes: bytes) -> bytes:
    return Checkpoint(pickle_bytes, {"0": bytes(16)}).zip_bytes()


def _put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def _get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def _tensor() -> bytes:
    return tensor_v2(storage("0"), 0, [4], [1])


def _nested(depth: int) -> bytes:
    body = _tensor()
    for _ in range(depth):
        body = EMPTY_DICT + text("a") + body + b"s"
    return _in_zip(stream(body))


def _fanout(depth: int) -> bytes:
    """d0 = {"w": tensor}; d[i+1] = {"a": d[i], "b": d[i]} through the memo:
    2**depth dotted names for one tensor if flattening followed every path."""
    body = EMPTY_DICT + text("w") + _tensor() + b"s" + _put(0)
    for i in range(depth):
        body += b"0" + EMPTY_DICT + MARK + text("a") + _get(i) + text("b") + _get(i) + SETITEMS
        body += _put(i + 1)
    return _in_zip(stream(body))


def _shared_chain(depth: int, refs: int) -> bytes:
    """A list of ``refs`` memo references to one chain of ``depth`` nested dicts:
    few names, but each is ``2 * depth`` characters long."""
    body = _tensor()
    for _ in range(depth):
        body = EMPTY_DICT + text("a") + body + b"s"
    body += _put(0) + b"0" + b"]" + MARK + _get(0) * refs + b"e"
    return _in_zip(stream(body))


def _tuple_key(depth: int) -> bytes:
    """{"w": tensor, t: 1} where t0 = "k", t[i+1] = (t[i], t[i]) through the memo:
    hashing the key would visit 2**depth items."""
    body = EMPTY_DICT + text("w") + _tensor() + b"s" + text("k") + _put(0) + b"0"
    for i in range(depth):
        body += MARK + _get(i) + _get(i) + b"t" + _put(i + 1) + b"0"
    return _in_zip(stream(body + _get(depth) + b"K\x01s"))


def _same_hash_keys(count: int) -> bytes:
    """{"w": tensor, "x": {i * (2**61 - 1): None, ...}}: distinct ints with one hash,
    so building the inner dict compares each key with every one before it."""
    keys = b"".join(integer(i * (2**61 - 1)) + b"N" for i in range(1, count + 1))
    body = EMPTY_DICT + text("w") + _tensor() + b"s" + text("x") + EMPTY_DICT + MARK + keys
    return _in_zip(stream(body + SETITEMS + b"s"))


def _shared_values(count: int, items: int) -> bytes:
    """{"w": tensor, "k0": [S], ..., "k<count-1>": [S]}, S one list of ``items`` ints in
    the memo: each value's JSON would be ``2 * items`` bytes, too long to keep."""
    body = b"]" + MARK + b"K\x01" * items + b"e" + _put(0) + b"0"
    body += EMPTY_DICT + text("w") + _tensor() + b"s" + MARK
    body += b"".join(text(f"k{i}") + b"]" + _get(0) + b"a" for i in range(count))
    return _in_zip(stream(body + SETITEMS))


def _zip_bomb(inflated: int) -> bytes:
    """A zip whose data.pkl inflates to ``inflated`` bytes of zeros (deflate)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(inflated >> 20)) + comp.flush()
    name = b"bomb/data.pkl"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(body), inflated,
                        len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(body),
                          inflated, len(name), 0, 0, 0, 0, 0, 0) + name
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                       len(local) + len(body), 0)
    return local + body + central + eocd


#: Resource attacks the converter must refuse: bound 5 s and 200 MB each.
ATTACKS = {
    "zip bomb: data.pkl of 256 MiB deflated to 250 KB": _zip_bomb(256 << 20),
    "2M MARKs, raw pickle": proto(2) + b"(" * 2_000_000 + b".",
    "2M MARKs in a torch zip": _in_zip(proto(2) + b"(" * 2_000_000 + b"."),
    "BINUNICODE8 of 2**62 bytes": proto(4) + b"\x8d" + struct.pack("<Q", 1 << 62) + b"x.",
    "FRAME of 2**63 bytes": proto(4) + b"\x95" + struct.pack("<Q", (1 << 63) - 1) + b"N.",
    "memo index 2**32-1": proto(2) + b"Nr\xff\xff\xff\xff.",
    "20,000 streams": b"N." * 20_000,
    "zero-stride view of 2**60 elements": Checkpoint(
        stream(dict_of([("w", tensor_v2(storage("0", numel=1), 0, [2**30, 2**30], [0, 0]))])),
        {"0": bytes(4)},
    ).zip_bytes(),
    "2,600 names of 40,000 characters (one shared 20,000-deep chain)": _shared_chain(
        20_000, 2_600),
    "dict key: a tuple nested 40 deep through the memo": _tuple_key(40),
    "dict of 40,000 distinct int keys with one hash": _same_hash_keys(40_000),
    "view 2**40 elements past a 4-element storage": _in_zip(
        stream(dict_of([("w", tensor_v2(storage("0"), 2**40, [4], [1]))]))
    ),
}


def test_resource_attacks_stop_the_converter_early(tmp_path: Path) -> None:
    """Bound: each attack is refused in under 5 s with under 200 MB of extra
    memory and writes nothing. All run in one subprocess (one interpreter start)."""
    results = _convert_all(tmp_path, {name: (data, 5) for name, data in ATTACKS.items()})
    problems = []
    for name in ATTACKS:
        got = results.get(name)
        if got is None:
            problems.append(f"{name}: ran past its 5 s limit")
        elif got.get("error") not in {"MalformedCheckpointError", "UnsupportedCheckpointError"}:
            problems.append(f"{name}: not refused: {got}")
        elif got["wrote"] or got["seconds"] >= 5 or got["peak_delta"] >= 200 * MB:
            problems.append(f"{name}: over its bounds or wrote output: {got}")
    assert not problems, "\n".join(problems)


def test_deep_nesting_and_small_memo_fanout_convert(tmp_path: Path) -> None:
    """Bounds: 20,000 nested dicts (about 140 KB) convert in under 20 s with under
    300 MB extra, the one tensor under its full dotted name; 2**10 names for one
    tensor through a memo fan-out convert in under 10 s, the tensor written once
    and the other 1023 names recorded as aliases; 50,000 values sharing one list
    of 30,000 ints (each too long to keep) convert in under 20 s and 300 MB, every
    value reported dropped (the list is measured once, not 50,000 times)."""
    results = _convert_all(tmp_path, {
        "nested": (_nested(20_000), 20), "fan-out": (_fanout(10), 10),
        "shared values": (_shared_values(50_000, 30_000), 20),
    })
    shared = results.get("shared values")
    assert shared is not None, "50,000 shared values ran past 20 s"
    assert shared.get("error") is None and shared["tensors"] == 1, shared
    assert shared["dropped"] == 50_000, shared
    assert shared["seconds"] < 20 and shared["peak_delta"] < 300 * MB, shared
    nested, fanout = results.get("nested"), results.get("fan-out")
    assert nested is not None, "20,000 nested dicts ran past 20 s"
    assert nested.get("error") is None and nested["tensors"] == 1, nested
    assert nested["seconds"] < 20 and nested["peak_delta"] < 300 * MB, nested
    assert fanout is not None, "a 2**10 fan-out ran past 10 s"
    assert fanout.get("error") is None, fanout
    assert fanout["tensors"] == 1 and fanout["aliases"] == 2**10 - 1, fanout
    assert fanout["seconds"] < 10, fanout


def test_large_memo_fanout_is_refused_quickly(tmp_path: Path) -> None:
    """Bound: 2**40 names through a 1 KB memo fan-out are refused in under 3 s
    and 200 MB, nothing written, the message saying how many names and the limit
    (the names are counted over the distinct containers, never made)."""
    got = _convert_all(tmp_path, {"fan-out": (_fanout(40), 3)}).get("fan-out")
    assert got is not None, "ran past its 3 s limit"
    assert got.get("error") == "UnsupportedCheckpointError", got
    assert f"{2**40:,} names" in got["message"] and f"{MAX_NAMES:,}" in got["message"], got
    assert not got["wrote"]
    assert got["seconds"] < 3 and got["peak_delta"] < 200 * MB, got


@pytest.mark.parametrize(("dims", "verdict"), [(64, Verdict.SAFE), (100_000, Verdict.UNKNOWN)])
def test_one_shape_tuple_shared_by_every_tensor_is_checked_quickly(
    tmp_path: Path, dims: int, verdict: Verdict
) -> None:
    """Bound: 1,000 tensor calls that all take one memoized shape tuple of
    100,000 ints (a 265 KB file) scan in under 3 s. Checking each call's
    tuple again cost 1,000 x 100,000 steps (33 s); shapes and strides longer
    than numpy's 64 dimensions are not what torch writes: unknown. At 64
    dimensions the same file is safe."""
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    body = MARK + b"K\x01" * dims + b"t" + _put(1) + b"0"
    body += glob("torch._utils", "_rebuild_tensor_v2") + _put(2) + b"0" + storage("0") + _put(3) + b"0"
    body += EMPTY_DICT + MARK
    for i in range(1_000):
        body += (text(f"t{i}") + _get(2) + MARK + _get(3) + integer(0) + _get(1) + _get(1)
                 + NEWFALSE + hooks + b"t" + REDUCE)
    path = tmp_path / "dims.pt"
    path.write_bytes(_in_zip(stream(body + SETITEMS)))
    started = time.perf_counter()
    report = scan(path)
    assert time.perf_counter() - started < 3
    assert report.verdict is verdict, report
