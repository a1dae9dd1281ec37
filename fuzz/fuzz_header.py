"""Fuzz the safetensors reader: header codec, ``safe_open`` and the writer round trip.

Contract checked on every input (the whole input is the file):

1. Only :class:`~tensorfile.errors.TensorfileError` escapes ``parse`` and
   ``safe_open``, and the pure codec and the file reader agree on whether the
   file is acceptable. The codec's fast path (msgspec) and its strict path
   (json + validate) agree: the fast path accepts only what the strict path
   accepts, with the same result.
2. An accepted file yields every tensor with the bytes its header points at,
   through both backends (mmap, pread) and through slicing; tensors numpy
   cannot represent (packed 6-bit floats, more dimensions than numpy allows,
   an empty tensor with a dimension over numpy's index range)
   fail with the documented ``FrameworkError`` and nothing else.
3. It round-trips through the writer: ``save`` of the tensors read gives a
   file whose header names the same tensors, dtypes, shapes and metadata, whose
   tensors hold the same bytes, and which ``save`` reproduces byte for byte
   (the canonical form is a fixed point).
4. Where the reference ``safetensors`` package is installed, it accepts every
   file tensorfile accepts and reads the same bytes (tensorfile is stricter,
   never looser).
"""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile import load, safe_open, save
    from tensorfile._format import header as hdr
    from tensorfile.errors import FrameworkError, TensorfileError

try:
    from safetensors import SafetensorError, deserialize
except ImportError:  # the differential check is optional
    deserialize = None

_scratch: fuzzlib.Scratch | None = None


def _numpy_max_ndim() -> int:
    n = 1
    while True:
        try:
            np.empty((1,) * (n + 1))
        except ValueError:
            return n
        n += 1


NUMPY_MAX_NDIM = _numpy_max_ndim()
INTP_MAX = int(np.iinfo(np.intp).max)


def _numpy_can_hold(info: hdr.TensorInfo) -> bool:
    """Whether numpy can hold the tensor (the reader raises FrameworkError otherwise)."""
    return (
        (not info.dtype.sub_byte or info.dtype.bits == 4)
        and len(info.shape) <= NUMPY_MAX_NDIM
        and all(d <= INTP_MAX for d in info.shape)
    )


def _file(data: bytes) -> str:
    global _scratch
    if _scratch is None:
        _scratch = fuzzlib.Scratch(".safetensors")
    return str(_scratch.write(data))


def _raw(header: hdr.Header, data: bytes, name: str) -> bytes:
    info = header.tensors[name]
    return data[header.data_offset + info.start : header.data_offset + info.end]


def _read_all(path: str, header: hdr.Header, data: bytes, backend: str) -> dict[str, object]:
    """Every numpy-viewable tensor of an accepted file, checked against its raw bytes."""
    arrays: dict[str, object] = {}
    with safe_open(path, "np", backend=backend) as f:
        assert f.keys() == sorted(header.tensors), "keys differ from the header"
        assert f.metadata() == header.metadata, "metadata differs from the header"
        for name, info in header.tensors.items():
            try:
                arr = f.get_tensor(name)
            except FrameworkError:
                assert not _numpy_can_hold(info), f"{name}: FrameworkError for {info}"
                continue
            assert _numpy_can_hold(info), f"{name}: numpy array for {info}"
            assert tuple(arr.shape) == info.shape, (name, arr.shape, info.shape)
            if not info.dtype.sub_byte:
                assert arr.tobytes() == _raw(header, data, name), f"{name}: wrong bytes"
                whole = f.get_slice(name)[...]
                assert whole.tobytes() == arr.tobytes(), f"{name}: slice differs"
                if arr.ndim:
                    rev = f.get_slice(name)[::-1]
                    assert rev.tobytes() == arr[::-1].tobytes(), f"{name}: reversed slice"
            arrays[name] = arr.copy()
    return arrays


def _signature(h: hdr.Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {n: (t.dtype.name, t.shape) for n, t in h.tensors.items()}


def _check_fast_path(data: bytes) -> None:
    """Whatever the fast path accepts, the strict path accepts identically."""
    if len(data) < 8:
        return
    n = int.from_bytes(data[:8], "little")
    if n > hdr.MAX_HEADER_SIZE or 8 + n > len(data):
        return
    raw, size = data[8 : 8 + n], len(data) - 8 - n
    try:
        fast = hdr._fast_validate(raw, size, n)
    except TensorfileError as e:
        # The fast path refuses a bad layout itself, with the strict path's words.
        try:
            hdr.validate(hdr.decode_json(raw), size, n)
        except TensorfileError as strict:
            assert (type(e), str(e)) == (type(strict), str(strict)), "fast and strict errors differ"
            return
        raise AssertionError("the fast path refused what the strict path accepts") from None
    if fast is not None:
        assert fast == hdr.validate(hdr.decode_json(raw), size, n), "fast and strict paths differ"


def TestOneInput(data: bytes) -> None:
    _check_fast_path(data)
    try:
        header = hdr.parse(data)
    except TensorfileError:
        header = None
    path = _file(data)
    try:
        arrays = _read_all(path, header, data, "mmap") if header else None
        if header is None:
            with safe_open(path, "np"):
                pass
    except TensorfileError as e:
        assert header is None, f"parse accepted the file but safe_open refused: {e!r}"
        return
    assert header is not None and arrays is not None, "safe_open accepted what parse refused"
    assert _read_all(path, header, data, "pread").keys() == arrays.keys()

    if deserialize is not None:
        try:
            ref = {n: (d["dtype"], tuple(d["shape"]), bytes(d["data"])) for n, d in deserialize(data)}
        except SafetensorError as e:
            raise AssertionError(f"tensorfile accepts a file the reference refuses: {e}") from None
        mine = {n: (t.dtype.name, t.shape, _raw(header, data, n)) for n, t in header.tensors.items()}
        assert ref == mine, "reference reads different tensors"

    if any(t.dtype.sub_byte or not _numpy_can_hold(t) for t in header.tensors.values()):
        return  # the writer takes arrays; numpy cannot give these back to it
    out = save(arrays, header.metadata)  # type: ignore[arg-type]
    again = hdr.parse(out)
    assert _signature(again) == _signature(header), "writer changed names, dtypes or shapes"
    assert again.metadata == header.metadata, "writer changed the metadata"
    for name in header.tensors:
        assert _raw(again, out, name) == _raw(header, data, name), f"{name}: writer changed bytes"
    assert save(load(out), header.metadata) == out, "canonical form is not a fixed point"


if __name__ == "__main__":
    fuzzlib.main(TestOneInput, "header")
