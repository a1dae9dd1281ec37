"""Run every conformance vector in spec/vectors/ through tensorfile and the reference.

``spec/vectors/expected.json`` says, for each file, what a conforming reader
must do (spec/FORMAT.md has the rules in prose). tensorfile must match it
exactly: the same tensors, dtypes, shapes and bytes for a valid file, and the
exact ``FormatError.kind`` (never another exception type) for an invalid one.
The reference ``safetensors`` 0.8.0 must still do what ``"reference"`` records,
and every vector where it disagrees with the expected outcome must be listed in
FORMAT.md with a reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorfile import safe_open
from tensorfile._format import header as hdr
from tensorfile._format.dtypes import DTYPES, numpy_dtype
from tensorfile.errors import FormatError, TensorfileError

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec"
VECTORS = SPEC / "vectors"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "expected.json").read_text("ascii"))
VALID = [n for n, e in EXPECTED.items() if e["valid"]]
CANONICAL = [n for n in VALID if EXPECTED[n]["canonical"]]
INVALID = [n for n, e in EXPECTED.items() if not e["valid"]]
SIX_BIT = ("F6_E2M3", "F6_E3M2")
#: Every rule a header can break, by the kind of the error it raises.
RULE_KINDS = {
    "truncated", "header_too_large", "invalid_header", "duplicate_key",
    "invalid_metadata", "invalid_dtype", "invalid_shape", "invalid_offsets",
}


def _sha(b: bytes | memoryview) -> str:
    return hashlib.sha256(b).hexdigest()


def _data_offset(content: bytes) -> int:
    return 8 + struct.unpack("<Q", content[:8])[0]


#: numpy 2 raised the most dimensions an array may have from 32 to 64.
NUMPY_MAXDIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


def _numpy_can_hold(shape: list[int]) -> bool:
    return len(shape) <= NUMPY_MAXDIMS and all(d < 2**63 for d in shape)


def _torch_can_hold(dtype: str, shape: list[int]) -> bool:
    if dtype in SIX_BIT or not all(d < 2**63 for d in shape):
        return False
    # torch stores F4 as float4_e2m1fn_x2, two elements per item along the last axis.
    return dtype != "F4" or (bool(shape) and shape[-1] % 2 == 0)


def _canonical_tensors(name: str) -> list[tuple[str, dict[str, Any], bytes]]:
    content = (VECTORS / name).read_bytes()
    base = _data_offset(content)
    return [
        (n, t, content[base + t["data_offsets"][0] : base + t["data_offsets"][1]])
        for n, t in EXPECTED[name]["tensors"].items()
    ]


# ---------------------------------------------------------------------------
# The vector set itself
# ---------------------------------------------------------------------------


def test_vector_set_covers_every_rule() -> None:
    files = sorted(p.name for p in VECTORS.glob("*.safetensors"))
    assert files == sorted(EXPECTED), "expected.json and the files on disk disagree"
    assert len(files) >= 60
    assert {EXPECTED[n]["error"] for n in INVALID} == RULE_KINDS
    assert set(RULE_KINDS) <= {c.kind for c in _subclasses(FormatError)}
    dtypes_seen = {t["dtype"] for n in VALID for t in EXPECTED[n]["tensors"].values()}
    assert dtypes_seen == set(DTYPES), "every dtype must appear in a valid vector"
    for name in files:
        assert re.fullmatch(r"\d{3}-[a-z0-9-]+\.safetensors", name), name


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_regenerating_reproduces_the_committed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("safetensors")
    spec = importlib.util.spec_from_file_location("make_vectors", SPEC / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_vectors", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    count = module.generate(tmp_path)
    assert count == len(EXPECTED)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in VECTORS.iterdir() if p.name != "__pycache__")
    assert fresh == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


# ---------------------------------------------------------------------------
# tensorfile: the pure header codec
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_parses(name: str) -> None:
    content = (VECTORS / name).read_bytes()
    want = EXPECTED[name]
    h = hdr.parse(content)
    assert h.data_offset == _data_offset(content)
    got = {
        t.name: {
            "dtype": t.dtype.name,
            "shape": list(t.shape),
            "data_offsets": [t.start, t.end],
            "sha256": _sha(content[h.data_offset + t.start : h.data_offset + t.end]),
        }
        for t in h.tensors.values()
    }
    assert got == want["tensors"]
    assert h.metadata == want["metadata"]
    # Tensors come back in the order their bytes sit in the file.
    assert [t.start for t in h.tensors.values()] == sorted(t.start for t in h.tensors.values())


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_raises_its_kind(name: str) -> None:
    content = (VECTORS / name).read_bytes()
    with pytest.raises(FormatError) as info:
        hdr.parse(content)
    assert info.value.kind == EXPECTED[name]["error"], str(info.value)
    assert str(info.value), "the message must say what is wrong"


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_vector_is_what_the_writer_produces(name: str) -> None:
    content = (VECTORS / name).read_bytes()
    want = EXPECTED[name]
    entries = [
        hdr.Entry(n, DTYPES[t["dtype"]], tuple(t["shape"])) for n, t in want["tensors"].items()
    ]
    encoded, infos = hdr.encode(reversed(entries), want["metadata"])  # order must not matter
    assert encoded == content[: _data_offset(content)]
    assert [[i.start, i.end] for i in infos] == [t["data_offsets"] for t in want["tensors"].values()]


@pytest.mark.parametrize(
    "name",
    [n for n in CANONICAL if all(
        not DTYPES[t["dtype"]].sub_byte and _numpy_can_hold(t["shape"])
        for t in EXPECTED[n]["tensors"].values()
    )],
)
def test_canonical_vector_is_what_save_writes_from_numpy(name: str) -> None:
    from tensorfile import numpy as tfnp

    arrays = {
        n: np.frombuffer(raw, dtype=numpy_dtype(DTYPES[t["dtype"]])).reshape(t["shape"])
        for n, t, raw in reversed(_canonical_tensors(name))
    }
    assert tfnp.save(arrays, metadata=EXPECTED[name]["metadata"]) == (VECTORS / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    [n for n in CANONICAL if all(
        _torch_can_hold(t["dtype"], t["shape"]) for t in EXPECTED[n]["tensors"].values()
    )],
)
def test_canonical_vector_is_what_save_writes_from_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    from tensorfile import torch as tft

    tensors = {}
    for n, t, raw in reversed(_canonical_tensors(name)):
        dt = DTYPES[t["dtype"]]
        shape = list(t["shape"])
        if dt.name == "F4":
            shape[-1] //= 2
        tdt = getattr(torch, dt.torch_name)
        if raw:
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(tdt)
            tensors[n] = flat.reshape(shape)
        else:
            tensors[n] = torch.empty(shape, dtype=tdt)
    assert tft.save(tensors, metadata=EXPECTED[name]["metadata"]) == (VECTORS / name).read_bytes()


# ---------------------------------------------------------------------------
# tensorfile: the reader
# ---------------------------------------------------------------------------


def _check_header_view(f: Any, content: bytes, want: dict[str, Any]) -> None:
    assert f.keys() == sorted(want["tensors"])
    assert f.metadata() == want["metadata"]
    base = _data_offset(content)
    for name, t in want["tensors"].items():
        begin, end = f.byte_range(name)
        assert (begin - base, end - base) == tuple(t["data_offsets"])
        assert _sha(content[begin:end]) == t["sha256"]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
@pytest.mark.parametrize("name", VALID)
def test_valid_vector_through_safe_open_numpy(name: str, backend: str) -> None:
    path = VECTORS / name
    content = path.read_bytes()
    want = EXPECTED[name]
    with safe_open(path, framework="np", backend=backend) as f:
        _check_header_view(f, content, want)
        for tname, t in want["tensors"].items():
            if not _numpy_readable(t):
                # No numpy dtype holds packed 6-bit floats (and numpy caps rank
                # and size): the raw bytes, checked above through byte_range,
                # are the way to read them.
                with pytest.raises(TensorfileError):
                    f.get_tensor(tname)
                continue
            _check_numpy_tensor(f.get_tensor(tname), t)


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_through_load_bytes(name: str) -> None:
    from tensorfile import numpy as tfnp

    content = (VECTORS / name).read_bytes()
    want = EXPECTED[name]["tensors"]
    if not all(_numpy_readable(t) for t in want.values()):
        with pytest.raises(TensorfileError):
            tfnp.load(content)
        return
    arrays = tfnp.load(content)
    assert sorted(arrays) == sorted(want)
    for tname, t in want.items():
        _check_numpy_tensor(arrays[tname], t)


def _numpy_readable(t: dict[str, Any]) -> bool:
    return t["dtype"] not in SIX_BIT and _numpy_can_hold(t["shape"])


def _check_numpy_tensor(arr: np.ndarray[Any, Any], t: dict[str, Any]) -> None:
    assert arr.shape == tuple(t["shape"])
    assert arr.dtype == numpy_dtype(DTYPES[t["dtype"]])
    if t["dtype"] == "F4":
        # Unpacked to one float4_e2m1fn code per byte; packing them back
        # (first element in the low nibble) must give the file's bytes.
        codes = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        assert codes.max(initial=0) < 16
        raw = codes[0::2] | (codes[1::2] << 4)
    else:
        raw = np.ascontiguousarray(arr)
    assert _sha(raw.tobytes()) == t["sha256"]


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_through_safe_open_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    path = VECTORS / name
    content = path.read_bytes()
    want = EXPECTED[name]
    with safe_open(path, framework="pt") as f:
        _check_header_view(f, content, want)
        for tname, t in want["tensors"].items():
            if not _torch_can_hold(t["dtype"], t["shape"]):
                with pytest.raises(TensorfileError):
                    f.get_tensor(tname)
                continue
            ten = f.get_tensor(tname)
            shape = list(t["shape"])
            if t["dtype"] == "F4":
                shape[-1] //= 2
                assert ten.dtype == torch.float4_e2m1fn_x2
            else:
                assert ten.dtype == getattr(torch, DTYPES[t["dtype"]].torch_name)
            assert list(ten.shape) == shape
            raw = ten.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            assert _sha(raw) == t["sha256"]


@pytest.mark.parametrize("name", INVALID)
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_invalid_vector_through_safe_open(name: str, backend: str) -> None:
    with pytest.raises(FormatError) as info:
        with safe_open(VECTORS / name, framework="np", backend=backend) as f:
            f.keys()
    assert info.value.kind == EXPECTED[name]["error"], str(info.value)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_through_load_bytes(name: str) -> None:
    from tensorfile import numpy as tfnp

    with pytest.raises(FormatError) as info:
        tfnp.load((VECTORS / name).read_bytes())
    assert info.value.kind == EXPECTED[name]["error"], str(info.value)


# ---------------------------------------------------------------------------
# The reference, safetensors 0.8.0
# ---------------------------------------------------------------------------


def _reference_deserialize(content: bytes) -> list[Any] | None:
    safetensors = pytest.importorskip("safetensors")
    try:
        return list(safetensors.deserialize(content))
    except Exception:  # SafetensorError, whatever its module
        return None


@pytest.mark.parametrize("name", list(EXPECTED))
def test_reference_does_what_is_recorded(name: str) -> None:
    safetensors = pytest.importorskip("safetensors")
    path = VECTORS / name
    want = EXPECTED[name]
    parsed = _reference_deserialize(path.read_bytes())
    assert ("accept" if parsed is not None else "reject") == want["reference"]
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            f.keys()
        by_file = "accept"
    except Exception:
        by_file = "reject"
    assert by_file == want["reference"]
    if parsed is not None and want["valid"]:
        # Where both accept, they read the same tensors and bytes.
        got = {
            n: {"dtype": d["dtype"], "shape": d["shape"], "sha256": _sha(bytes(d["data"]))}
            for n, d in parsed
        }
        assert got == {
            n: {"dtype": t["dtype"], "shape": t["shape"], "sha256": t["sha256"]}
            for n, t in want["tensors"].items()
        }


def _documented_disagreements() -> set[str]:
    text = (SPEC / "FORMAT.md").read_text("utf-8")
    section = text.split("<!-- disagreements:begin -->")[1].split("<!-- disagreements:end -->")[0]
    return set(re.findall(r"^\| `(\d{3}-[a-z0-9-]+\.safetensors)` \|", section, re.MULTILINE))


def test_every_disagreement_with_the_reference_is_documented() -> None:
    disagree = {n for n, e in EXPECTED.items() if e["valid"] != (e["reference"] == "accept")}
    assert disagree == _documented_disagreements()
    # tensorfile only ever rejects more: it never accepts a file the reference rejects.
    assert all(not EXPECTED[n]["valid"] for n in disagree)


#: Fragments that tend to turn one valid header into another, or into a near miss.
_SPLICES = [
    b'"', b"{", b"}", b"[", b"]", b",", b":", b" ", b"\t", b"-0", b"0", b"1", b"-", b"true", b"null",
    b"1e400", b".5", b"18446744073709551616", b"\\u0061", b"\\u003a", b"\\ud800", b"\\udc00",
    b"\xff", b"\x00", b"\xc3\xa9", b'"__metadata__"', b'"dtype"', b'"shape"', b'"data_offsets"',
    b'"F4"', b'"a"', b"9" * 30,
]
_SPLIT = [
    (c[:n], c[n:])
    for c in ((VECTORS / name).read_bytes() for name in VALID)
    for n in [_data_offset(c) - 8]
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_vectors_never_accepted_by_tensorfile_alone(data: st.DataObject) -> None:
    """Edit a valid header, fix up its length: whatever tensorfile accepts, the
    reference accepts too and reads as the same tensors; everything else is a
    FormatError (never another exception)."""
    safetensors = pytest.importorskip("safetensors")
    head, body = data.draw(st.sampled_from(_SPLIT))
    text = bytearray(head[8:])
    for _ in range(data.draw(st.integers(1, 2))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 4))
        text[at : at + cut] = data.draw(st.sampled_from(_SPLICES))
    body = body[: data.draw(st.sampled_from([len(body), max(0, len(body) - 1)]))]
    content = struct.pack("<Q", len(text)) + bytes(text) + body
    try:
        h = hdr.parse(content)
    except FormatError:
        return
    ref = dict(safetensors.deserialize(content))  # must not raise: tensorfile accepted
    base = h.data_offset
    assert {
        n: (t.dtype.name, list(t.shape), _sha(content[base + t.start : base + t.end]))
        for n, t in h.tensors.items()
    } == {n: (d["dtype"], d["shape"], _sha(bytes(d["data"]))) for n, d in ref.items()}


def _reference_spec(t: dict[str, Any], data: bytes) -> tuple[Any, np.ndarray[Any, Any]]:
    from safetensors import TensorSpec

    dtype = DTYPES[t["dtype"]]
    shape = list(t["shape"])
    torch_name = dtype.torch_name
    if t["dtype"] == "F4":
        shape[-1] //= 2  # TensorSpec takes the storage shape of float4_e2m1fn_x2
    buf = np.frombuffer(data, dtype=np.uint8).copy()
    spec = TensorSpec(dtype=torch_name, shape=shape, data_ptr=buf.ctypes.data, data_len=len(data))
    return spec, buf


def _reference_can_write(want: dict[str, Any]) -> bool:
    """Vectors the reference writer can produce deterministically."""
    md = want["metadata"]
    return (
        (md is None or len(md) <= 1)  # it writes metadata keys in hash-map order
        and (md != {} or bool(want["tensors"]))  # and {} with no tensors as invalid JSON
        and all(_torch_can_hold(t["dtype"], t["shape"]) for t in want["tensors"].values())
    )


@pytest.mark.parametrize(
    "name", [n for n in VALID if EXPECTED[n]["canonical"] and _reference_can_write(EXPECTED[n])]
)
def test_canonical_vector_is_what_the_reference_writes(name: str) -> None:
    safetensors = pytest.importorskip("safetensors")
    content = (VECTORS / name).read_bytes()
    want = EXPECTED[name]
    base = _data_offset(content)
    specs, keep = {}, []
    for n, t in want["tensors"].items():
        begin, end = t["data_offsets"]
        specs[n], buf = _reference_spec(t, content[base + begin : base + end])
        keep.append(buf)
    assert safetensors.serialize(specs, metadata=want["metadata"]) == content


def test_reference_writer_breaks_empty_metadata_without_tensors() -> None:
    """The one canonical layout the reference writer gets wrong (FORMAT.md, differences)."""
    safetensors = pytest.importorskip("safetensors")
    out = safetensors.serialize({}, metadata={})
    assert _reference_deserialize(out) is None  # its own reader rejects it
    fixed, _ = hdr.encode([], {})
    assert hdr.parse(fixed).metadata == {}


def test_f4_bytes_pass_through_torch_unchanged() -> None:
    """F4 data is torch's float4_e2m1fn_x2 storage, byte for byte, in both readers."""
    torch = pytest.importorskip("torch")
    safetensors = pytest.importorskip("safetensors")
    f4 = [n for n in VALID if any(t["dtype"] == "F4" and _torch_can_hold("F4", t["shape"])
                                  and math.prod(t["shape"]) for t in EXPECTED[n]["tensors"].values())]
    assert f4
    for name in f4:
        for tname, t in EXPECTED[name]["tensors"].items():
            if t["dtype"] != "F4":
                continue
            with safetensors.safe_open(str(VECTORS / name), framework="pt") as f:
                ref = f.get_tensor(tname)
            assert ref.dtype == torch.float4_e2m1fn_x2
            assert _sha(ref.view(torch.uint8).numpy().tobytes()) == t["sha256"]
