"""``joblib.load``'s unpickler: how ``NumpyUnpickler`` reads on past an array wrapper.

The (decompressed: :mod:`tensorfile.scan.joblib`) data of a joblib file is
unpickled by ``NumpyUnpickler``, a ``pickle._Unpickler`` (the pure-Python
reader) whose BUILD, when the object built is a
``joblib.numpy_pickle.NumpyArrayWrapper``, reads the array from the bytes
that follow: a padding-length byte and padding (when the wrapper has
``numpy_array_alignment_bytes``), then ``prod(shape) * itemsize`` raw bytes, or
for an object dtype a whole nested pickle (read by a fresh ``pickle._Unpickler``).

:func:`array_skip` is the hook :func:`~.machine.run_stream` calls after each
BUILD to step over the array bytes exactly as ``NumpyArrayWrapper.read_array``
consumes them, refusing what joblib would read differently (array bytes
inside a FRAME, a shape whose array does not fit in the data: ``np.empty``
allocates it before reading). The policy (:mod:`.policy`) allows the
wrapper by :data:`WRAPPER` and :data:`WRAPPER_FIELDS`.
"""

from __future__ import annotations

from typing import Final

from tensorfile._picklevm.machine import JOBLIB_WRAPPER, Call, GlobalRef, PDict, StreamResult
from tensorfile._picklevm.opcodes import OpcodeReader
from tensorfile.errors import MalformedPickleError

#: The class joblib writes in place of every numpy array.
WRAPPER: Final = JOBLIB_WRAPPER
#: The wrapper's attributes (``numpy_array_alignment_bytes`` since joblib 1.2).
WRAPPER_FIELDS: Final = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap",
                                   "numpy_array_alignment_bytes"})


def is_wrapper(value: object) -> bool:
    """True for a ``NumpyArrayWrapper`` instance as joblib writes it (NEWOBJ, no arguments)."""
    if not isinstance(value, Call):
        return False
    func = value.func
    return (isinstance(func, GlobalRef) and func.qualname == WRAPPER and func.literal
            and value.opcode == "NEWOBJ")


def wrapper_state(value: Call) -> dict[str, object] | None:
    """The wrapper's attributes (its last BUILD state, a dict of str keys), or None."""
    builds = [e for e in value.effects if e.opcode == "BUILD"]
    if not builds or not isinstance(builds[-1].payload[0], PDict):
        return None
    state: dict[str, object] = {}
    for k, v in builds[-1].payload[0].items:
        if not isinstance(k, str):
            return None
        state[k] = v
    return state


def dtype_of(value: object) -> tuple[int, bool] | None:
    """(itemsize, has objects) of a ``numpy.dtype(str, ...)`` call with plain BUILD state.

    Structured dtypes (fields in the state) give None: the scanner does not
    compute their layout, so their arrays are not read.
    """
    if not (isinstance(value, Call) and isinstance(value.func, GlobalRef)
            and value.func.qualname == "numpy.dtype" and isinstance(value.args, tuple)
            and value.args and isinstance(value.args[0], str) and len(value.args[0]) <= 64):
        return None
    for eff in value.effects:
        state = eff.payload[0] if eff.payload else None
        if eff.opcode != "BUILD" or not (isinstance(state, tuple) and len(state) >= 5
                                         and state[2] is None and state[3] is None):
            return None  # names/fields set: a structured dtype
    import numpy

    try:
        dt = numpy.dtype(value.args[0])
    except Exception:  # numpy refuses it: joblib fails there too
        return None
    if dt.fields is not None or dt.subdtype is not None:
        return None
    return dt.itemsize, dt.hasobject


def array_skip(target: object, reader: OpcodeReader, run_nested: object) -> None:
    """After a BUILD: step ``reader`` over the array bytes ``NumpyUnpickler`` would read.

    ``run_nested(start)`` runs the nested pickle of an object array and returns
    its :class:`~.machine.StreamResult`. Raises :class:`MalformedPickleError`
    where joblib would fail or read other bytes than the C unpickler's frame
    layout suggests.
    """
    if not is_wrapper(target):
        return
    assert isinstance(target, Call)
    at = reader.pos
    state = wrapper_state(target)
    if state is None:
        raise MalformedPickleError("joblib array wrapper without a plain state dict", at)
    if at < reader.frame_end:
        # NumpyUnpickler reads the array from the file, after the whole frame:
        # other bytes than a flat reading (joblib.dump always ends the frame here).
        raise MalformedPickleError(
            "joblib array data starts inside a FRAME: joblib reads it from after the frame", at)
    shape = state.get("shape")
    if not (isinstance(shape, tuple) and len(shape) <= 64
            and all(type(n) is int and n >= 0 for n in shape)):
        raise MalformedPickleError("joblib array shape is not a tuple of sizes", at)
    dt = dtype_of(state.get("dtype"))
    if dt is None:
        raise MalformedPickleError(
            "joblib array dtype is not a plain numpy dtype the scanner reads", at)
    itemsize, has_objects = dt
    if has_objects:
        result: StreamResult = run_nested(at)  # type: ignore[operator]
        if result.error is not None:
            raise result.error
        reader.pos = result.end
        return
    pos = at
    if state.get("numpy_array_alignment_bytes") is not None:
        if pos >= reader.end:
            raise MalformedPickleError("joblib array padding byte is missing", pos)
        pos += 1 + reader.buf[pos]
    count = 1
    for n in shape:
        count *= n
    nbytes = count * itemsize
    if nbytes > reader.end - pos:
        # np.empty(count) runs before the data is read: the allocation is the bomb.
        raise MalformedPickleError(
            f"joblib array of shape {shape} needs {nbytes} bytes but "
            f"{max(0, reader.end - pos)} remain (numpy allocates it before reading)", at)
    reader.pos = pos + nbytes
