"""Differential fuzzing against every loader of a model folder, and of convert against torch.

Each input is a stream of choices (:class:`fuzz_torchdiff.Choices`) that builds
one file in one of two ways.

**Loaders** (:func:`loader_file`): a pickle (a torch state dict, plain data,
real ``joblib.dump`` output with and without object arrays, or a payload),
with a hidden payload placed where only some readers reach it (before STOP
after joblib's array bytes, an ``INST``/``GLOBAL`` at the very end without its
newline, a FRAME whose length runs past the data), then carried the way a
loader detects it: raw, compressed as ``joblib.load`` decompresses (ZF, zlib,
gzip, bz2, lzma "alone", xz, LZ4; truncated or with bytes after), as an object
``.npy``, or inside a valid safetensors file whose bytes reach the pickle from
byte 0; a byte may be flipped. The real loaders read it through
:mod:`torch_oracle`, every global recorded and nothing run:
``torch.load(weights_only=False)``, ``pickle.load`` with the C and with the
pure-Python unpickler, ``numpy.load(allow_pickle=True)`` and ``joblib.load``.
Contract, as ``fuzz_torchdiff.py``'s, for every loader: every global it asked
for is among the globals the scan reports (behind an ``error`` verdict a miss
is counted in :data:`fuzz_torchdiff.GAPS`, not raised), and ``safe`` never
goes with a payload any loader reached.

**Values** (:func:`checkpoint_file`): a torch zip checkpoint of small tensors
(dtypes with and without a typed storage, negative and conjugate bits in the
metadata, strided views, a ``byteorder`` record in any case and with bent
values, records swapped for big-endian). Contract: when ``convert`` writes a
file, ``torch.load(weights_only=True)`` loads the checkpoint and returns the
same values, bit for bit (NaN payloads aside: torch's scalar paths may
canonicalize them); a refusal is always allowed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import fuzzlib

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile.errors import TensorfileError
    from tensorfile.pickles import Verdict, scan
    from tensorfile.pickles.convert import convert

from fuzz_torchdiff import GAPS, PAYLOAD_MODULE, Choices, _glob, _names, _text, framed, payload
from torch_oracle import Reading, joblib_reads, numpy_reads, pickle_reads, torch_reads

# ---------------------------------------------------------------------------
# Loaders: a pickle, a hidden payload, a carrier
# ---------------------------------------------------------------------------


def _joblib_dump(value: object) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(value, buf)
    return buf.getvalue()


_JOBLIB: dict[str, bytes] = {}


def _joblib_streams() -> dict[str, bytes]:
    if not _JOBLIB:
        import numpy as np

        _JOBLIB["arrays"] = _joblib_dump({"a": np.arange(6, dtype="<f4"), "n": [1, "x"]})
        _JOBLIB["objects"] = _joblib_dump(np.array([np.arange(2), "t", None], dtype=object))
    return _JOBLIB


def _inner(ch: Choices) -> bytes:
    import pickle

    from fuzz_torchdiff import state_dict

    kind = ch.int(6)
    if kind == 0:
        return state_dict()
    if kind == 1:
        return pickle.dumps({"lr": 0.1, "steps": [1, 2], "name": "x"}, protocol=ch.int(6))
    if kind == 2:
        return payload("raw")
    if kind == 3:
        return b"\x80\x02}."
    return _joblib_streams()["arrays" if kind == 4 else "objects"]


def _hide(data: bytes, ch: Choices) -> bytes:
    """Put a payload where only some readers reach it."""
    if not data.endswith(b"."):
        return data
    how = ch.int(5)
    if how == 1:  # before STOP: past joblib's array bytes only joblib gets here
        return data[:-1] + _glob(PAYLOAD_MODULE, "run_inner") + b")R0."
    if how == 2:  # INST at the very end without its newline (pure Python: readline()[:-1])
        return data[:-1] + b"(i" + PAYLOAD_MODULE.encode() + b"\nrun_eofX"
    if how == 3:
        return data[:-1] + b"c" + PAYLOAD_MODULE.encode() + b"\nrun_eofX"
    if how == 4 and data.startswith(b"\x80\x02"):  # a FRAME, maybe past the end
        return framed(data, ch)
    return data


def _compress(data: bytes, ch: Choices) -> bytes:
    kind = ch.int(7)
    if kind == 0:
        out = zlib.compress(data)
    elif kind == 1:
        out = gzip.compress(data, mtime=0)
    elif kind == 2:
        out = bz2.compress(data)
    elif kind == 3:
        out = lzma.compress(data, format=lzma.FORMAT_ALONE)
    elif kind == 4:
        out = lzma.compress(data)
    elif kind == 5:
        try:
            import lz4.frame
        except ImportError:  # joblib reads LZ4 only where lz4 is installed
            return zlib.compress(data)
        out = lz4.frame.compress(data)
    else:  # joblib < 0.10: 'ZF', a hex length, zlib data
        out = b"ZF" + f"{len(data):#x}".ljust(19).encode() + zlib.compress(data)
    cut = ch.int(4)
    out = out[:len(out) - cut] if cut else out
    return out + ch.pick([b"", b"", b"\0", payload("tail")])  # type: ignore[operator]


def npy_object(data: bytes) -> bytes:
    """An object ``.npy`` (version 1.0) whose data is ``data``."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def safetensors_polyglot(data: bytes) -> bytes:
    """A valid safetensors file whose bytes, read as a pickle from byte 0, reach ``data``.

    The header length's low byte is ``B`` (BINBYTES), whose 4-byte length (the
    length's next bytes, ``n >> 8``) ends inside a metadata string; from there
    SHORT_BINBYTES hops (``C~`` plus 126 bytes) walk the string, and a last hop
    steps over its end and the header's padding onto the tensor bytes, which
    are ``data`` (one ``U8`` tensor). Every pickle loader that reads the file
    from byte 0 (``pickle.load``, ``numpy.load(allow_pickle=True)``,
    ``joblib.load``, ``torch.load`` when the name does not end in
    ``.safetensors``) reaches it.
    """
    k = 40
    while True:
        n = 0x42 + 256 * k  # n >> 8 == k: BINBYTES' data ends at byte 5 + k
        head = {"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
        pre = json.dumps(head)[:-1] + ', "__metadata__": {"k": "'
        land = 5 + k - 8  # the header's character where BINBYTES' data ends
        if land <= len(pre) or k & 0xFF == 0x5A:  # b"BZ" is joblib's bz2 magic
            k += 1
            continue
        body = "x" * (land - len(pre))
        while n - len(pre) - len(body) - 2 > 0x7E:
            body += "C~" + "x" * 0x7E
        hop = n - len(pre) - len(body) - 2  # from after the last "C?" to the data
        if hop < 0x20:
            k += 1
            continue
        header = pre + body + "C" + chr(hop) + '"}}' + " " * (hop - 3)
        return struct.pack("<Q", n) + header.encode() + data


def loader_file(ch: Choices) -> bytes:
    data = _hide(_inner(ch), ch)
    carrier = ch.int(5)
    if carrier == 1:
        data = _compress(data, ch)
    elif carrier == 2:
        data = npy_object(data)
    elif carrier == 3:
        data = safetensors_polyglot(data)
    if data and ch.flag():
        at = ch.int(len(data))
        data = data[:at] + bytes([ch.int(256)]) + data[at + 1:]
    return data


LOADERS = {
    "torch.load": torch_reads,
    "pickle.load": pickle_reads,
    "pickle._Unpickler": lambda p: pickle_reads(p, pure_python=True),
    "numpy.load": numpy_reads,
    "joblib.load": joblib_reads,
}


def compare_loaders(path: Path) -> tuple[Verdict, dict[str, Reading], list[str]]:
    """Scan ``path``, read it with every loader, return the verdict, readings and violations."""
    with fuzzlib.no_unpickling():
        report = scan(path)
    (file,) = report.files
    reported = {g for s in file.streams for g in s.globals}
    readings = {name: read(path) for name, read in LOADERS.items()}
    problems = []
    for name, reading in readings.items():
        for g in dict.fromkeys(reading.globals):
            if not _names(g) & reported:
                problems.append(f"{name} imported {g} but the scan ({file.verdict.value}) "
                                "did not report it")
        if file.verdict is Verdict.SAFE and any(
                g.startswith(PAYLOAD_MODULE) for g in reading.globals):
            problems.append(f"safe, but {name} reached the hidden payload")
    return file.verdict, readings, problems


def check_loaders(path: Path) -> None:
    verdict, readings, problems = compare_loaders(path)
    if verdict is Verdict.ERROR and not any(p.startswith("safe") for p in problems):
        for p in problems:
            GAPS[p] = GAPS.get(p, 0) + 1
        return
    assert not problems, f"{path.name}: {problems} ({readings})"


# ---------------------------------------------------------------------------
# Values: a torch zip checkpoint whose values torch.load decides
# ---------------------------------------------------------------------------

#: (dtype name, torch storage class or None for UntypedStorage + _rebuild_tensor_v3, size)
_DTYPES = [("float32", "FloatStorage", 4), ("int8", "CharStorage", 1),
           ("uint8", "ByteStorage", 1), ("complex64", "ComplexFloatStorage", 8),
           ("bfloat16", "BFloat16Storage", 2), ("int64", "LongStorage", 8),
           ("uint16", None, 2), ("float8_e4m3fn", None, 1), ("bool", "BoolStorage", 1)]
_METADATA = [None, {"neg": True}, {"conj": True}, {"neg": True, "conj": True},
             {"other": True}, {"neg": False}]
_BYTEORDER = [None, ("byteorder", b"little"), ("byteorder", b"big"), ("BYTEORDER", b"big"),
              ("ByteOrder", b"little"), ("byteorder", b"big\n")]


def _ints(values: list[int]) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _metadata(meta: dict[str, bool] | None) -> bytes:
    if meta is None:
        return b""
    return b"}(" + b"".join(_text(k) + (b"\x88" if v else b"\x89") for k, v in meta.items()) + b"u"


def checkpoint_file(ch: Choices) -> bytes:
    """A torch zip of 1-3 small tensors, each a view of its own storage."""
    records: dict[str, bytes] = {}
    items = b""
    order = ch.pick(_BYTEORDER)
    for i in range(1 + ch.int(3)):
        dtype, stype, size = ch.pick(_DTYPES)  # type: ignore[misc]
        numel = 1 + ch.int(8)
        raw = bytes(ch.int(256) for _ in range(numel * size))
        if dtype == "bool":
            raw = bytes(b & 1 for b in raw)
        records[str(i)] = raw
        shape = [1 + ch.int(numel)]
        stride = [1 + ch.int(2)]
        offset = ch.int(numel)
        if offset + (shape[0] - 1) * stride[0] >= numel:
            offset, stride = 0, [1]
            shape = [min(shape[0], numel)]
        storage = (b"(" + _text("storage")
                   + (_glob("torch", stype) if stype else _glob("torch.storage", "UntypedStorage"))
                   + _text(str(i)) + _text("cpu")
                   + b"J" + struct.pack("<i", numel * size if stype is None else numel) + b"tQ")
        hooks = _glob("collections", "OrderedDict") + b")R"
        meta = _metadata(ch.pick(_METADATA))  # type: ignore[arg-type]
        args = (storage + b"J" + struct.pack("<i", offset) + _ints(shape) + _ints(stride)
                + b"\x89" + hooks)
        if stype is None or ch.flag():
            rebuild = _glob("torch._utils", "_rebuild_tensor_v3")
            args += _glob("torch", dtype)
        else:
            rebuild = _glob("torch._utils", "_rebuild_tensor_v2")
        items += _text(f"t{i}") + rebuild + b"(" + args + meta + b"tR"
    pkl = b"\x80\x02}(" + items + b"u."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        if order is not None:
            z.writestr(f"archive/{order[0]}", order[1])  # type: ignore[index]
        for key, raw in records.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def _bits(t: Any) -> Any:
    import torch

    # as_strided: a contiguous tensor may still carry odd strides on size-1 dimensions
    flat = t.detach().resolve_neg().resolve_conj().contiguous()
    flat = flat.as_strided((flat.numel(),), (1,))
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    return flat


def _same(have: Any, want: Any) -> bool:
    import torch

    a, b = _bits(have), _bits(want)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        nan = torch.isnan(a.float()) & torch.isnan(b.float())
        a, b = a[~nan], b[~nan]
    return bool(torch.equal(a.view(torch.uint8) if a.numel() else a,
                            b.view(torch.uint8) if b.numel() else b))


def check_values(path: Path, out: Path) -> None:
    """The converter's output (if any) holds exactly what torch.load(weights_only=True) returns."""
    import warnings

    import torch
    from safetensors.torch import load_file

    out.unlink(missing_ok=True)
    try:
        with fuzzlib.no_unpickling():
            report = convert(path, out)
    except TensorfileError:
        assert not out.exists(), "a refusal left an output file"
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise AssertionError(f"convert wrote {out.name}, but torch.load refuses the file: "
                             f"{type(exc).__name__}: {exc}") from None
    got = load_file(out)
    for name, want in loaded.items():
        kept = report.aliases.get(name, name)
        assert kept in got, f"{name} missing from the output"
        assert _same(got[kept], want), f"{name}: {got[kept]} but torch.load gives {want}"
    out.unlink()


_scratch: fuzzlib.Scratch | None = None


def TestOneInput(data: bytes) -> None:
    global _scratch
    if _scratch is None:
        _scratch = fuzzlib.Scratch(".pt")
    ch = Choices(data)
    if ch.int(4) == 0:
        path = _scratch.write(checkpoint_file(ch))
        check_values(path, path.with_suffix(".safetensors"))
    else:
        check_loaders(_scratch.write(loader_file(ch)))


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    # Import the loaders and build the joblib templates before the first input,
    # whose per-input timeout would otherwise pay for it.
    import joblib  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401

    _joblib_streams()
    fuzzlib.main(TestOneInput, "loaders")
