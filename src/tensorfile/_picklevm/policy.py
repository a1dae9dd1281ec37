"""The allowlist and the verdict of one pickle stream (reasoning in spec/SCANNING.md).

A stream is ``safe`` only if every import is on :data:`ALLOWED_CALLS`,
:data:`STORAGE_TYPES` or :data:`VALUE_GLOBALS`, and every call, persistent id,
BUILD and item assignment has the shape ``torch.save`` (or numpy's pickling)
writes. Anything else is a finding:

* ``dangerous``: a known code-execution, file or network gadget
  (:data:`DANGEROUS_MODULES`, :data:`DANGEROUS_GLOBALS`), a name the scanner
  cannot pin down (STACK_GLOBAL on non-literal operands, dotted or dunder
  attribute paths), a call of a computed value, a copyreg extension code, or
  attributes/items set on an imported object;
* ``unknown``: any other import, or an allowed one used in a shape torch does
  not write.

The tables are data on purpose: adding a global is a reviewed one-line change
with its reason beside it. The policy never compares or hashes whole values
(they can be deep or exponentially shared); each check looks one or two levels
into the arguments.
"""

from __future__ import annotations

from typing import Final

from tensorfile._picklevm._gadgets import DANGEROUS_GLOBALS, DANGEROUS_MODULES, UNSUPPORTED_GLOBALS
from tensorfile._picklevm._joblib import WRAPPER, WRAPPER_FIELDS, is_wrapper
from tensorfile._picklevm.machine import (
    COMPUTED_NAME,
    Call,
    Effect,
    ExtensionRef,
    GlobalRef,
    Node,
    PDict,
    PersistentRef,
)
from tensorfile._picklevm.opcodes import BigText, BytesRef
from tensorfile._report import Finding, Verdict
from tensorfile.errors import UnsafePickleError

# ---------------------------------------------------------------------------
# The allowlist
# ---------------------------------------------------------------------------

#: Callables torch checkpoints need, with the argument shape checked for each
#: (a name in _SHAPES below) and why the call cannot run code.
ALLOWED_CALLS: Final[dict[str, tuple[str, str]]] = {
    "collections.OrderedDict": (
        "ordered_dict_args", "state_dict container and empty backward-hook slot; items "
        "arrive by SETITEMS (Python 3) or as one list of [key, value] pairs (Python 2.7's "
        "OrderedDict.__reduce__), _metadata by BUILD: all only store values"),
    "torch._utils._rebuild_tensor": (
        "rebuild_tensor_v1", "legacy tensor: a view (offset, size, stride) of a storage"),
    "torch._utils._rebuild_tensor_v2": (
        "rebuild_tensor_v2", "tensor view of a storage plus requires_grad and empty hooks"),
    "torch._utils._rebuild_tensor_v3": (
        "rebuild_tensor_v3", "as v2 with an explicit dtype (float8, uint16/32/64)"),
    "torch._utils._rebuild_parameter": (
        "rebuild_parameter", "wraps an already rebuilt tensor in nn.Parameter"),
    "torch.storage._load_from_bytes": (
        "load_from_bytes", "pickle.dumps(tensor): a nested torch stream, scanned in turn"),
    "_codecs.encode": (
        "codecs_encode", "turns a latin-1 str back into bytes (numpy/torch py2-compatible "
        "bytes); only the latin1 codec is accepted"),
    "torch.Size": ("int_tuple_arg", "a tuple of ints"),
    "torch.device": ("device_args", "a device name, optionally with an index"),
    "builtins.set": ("iterable_arg", "a set from a list of already built values"),
    "builtins.frozenset": ("iterable_arg", "a frozenset from a list of built values"),
    "builtins.bytearray": ("bytes_arg", "a bytearray from bytes (protocol < 5)"),
    "builtins.bytes": ("no_args", "empty bytes as protocol < 3 writes them"),
    "builtins.complex": ("two_numbers", "a complex number from its real and imaginary parts"),
    "numpy.core.multiarray._reconstruct": (
        "np_reconstruct", "an empty ndarray; data arrives by BUILD with plain state"),
    "numpy._core.multiarray._reconstruct": ("np_reconstruct", "numpy 2 spelling of the above"),
    "numpy.core.multiarray.scalar": ("np_scalar", "a numpy scalar from a dtype and bytes"),
    "numpy._core.multiarray.scalar": ("np_scalar", "numpy 2 spelling of the above"),
    "numpy.core.numeric._frombuffer": (
        "np_frombuffer", "protocol 5 ndarray: bytes, dtype, shape, order"),
    "numpy._core.numeric._frombuffer": ("np_frombuffer", "numpy 2 spelling of the above"),
    "numpy.dtype": ("np_dtype", "a dtype from its type string; layout arrives by BUILD"),
}

#: torch's typed storage classes (``torch.<name>Storage``): element size in bytes and
#: tensorfile dtype (None where safetensors has none: complex128, the quantized kinds).
_TYPED_STORAGES: Final[tuple[tuple[str, int, str | None], ...]] = (
    ("Double", 8, "F64"), ("Float", 4, "F32"), ("Half", 2, "F16"), ("Long", 8, "I64"),
    ("Int", 4, "I32"), ("Short", 2, "I16"), ("Char", 1, "I8"), ("Byte", 1, "U8"),
    ("Bool", 1, "BOOL"), ("BFloat16", 2, "BF16"), ("ComplexDouble", 16, None),
    ("ComplexFloat", 8, "C64"), ("QUInt8", 1, None), ("QInt8", 1, None), ("QInt32", 4, None),
    ("QUInt4x2", 1, None), ("QUInt2x4", 1, None))
#: The dtype the converter writes a typed storage's elements as, by short name (``Float``).
STORAGE_DTYPES: Final[dict[str, str | None]] = {name: dt for name, _, dt in _TYPED_STORAGES}
#: Storage classes that may appear in a storage persistent id, with element size
#: in bytes (the legacy format's record walker needs it). Only referenced, never called.
STORAGE_TYPES: Final[dict[str, int]] = {
    **{f"torch.{name}Storage": size for name, size, _ in _TYPED_STORAGES},
    "torch.UntypedStorage": 1,
    "torch.storage.UntypedStorage": 1,
}
# Files saved from a GPU by old torch name CUDA storage classes.
STORAGE_TYPES.update({
    name.replace("torch.", "torch.cuda.", 1): size
    for name, size in list(STORAGE_TYPES.items()) if "Untyped" not in name
})

#: torch dtype objects (arguments of _rebuild_tensor_v3): plain values, never called.
TORCH_DTYPES: Final = frozenset(f"torch.{n}" for n in (
    "bfloat16 bit bits16 bits1x8 bits2x4 bits4x2 bits8 bool cdouble cfloat chalf complex128 "
    "complex32 complex64 double float float16 float32 float4_e2m1fn_x2 float64 float8_e4m3fn "
    "float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu half int int1 int16 int2 int3 "
    "int32 int4 int5 int6 int64 int7 int8 long qint32 qint8 quint2x4 quint4x2 quint8 short "
    "uint1 uint16 uint2 uint3 uint32 uint4 uint5 uint6 uint64 uint7 uint8"
).split())

#: Tensor classes the tar format of torch < 0.4 names in its 'tensors' records.
LEGACY_TENSOR_TYPES: Final = frozenset(f"torch{cuda}.{name}Tensor" for cuda in ("", ".cuda")
    for name, _, _ in _TYPED_STORAGES if not name.startswith(("Complex", "Q")))

#: Classes referenced as plain values, never called: numpy's ndarray (first
#: argument of _reconstruct), torch dtypes, legacy tensor types.
VALUE_GLOBALS: Final = frozenset({"numpy.ndarray"}) | TORCH_DTYPES | LEGACY_TENSOR_TYPES
#: joblib.dump's array placeholder (made by NEWOBJ without arguments, filled by
#: BUILD; joblib.load then reads the array bytes after it) and the array
#: subclasses its state may name; nothing else of joblib.
JOBLIB_GLOBALS: Final = frozenset({WRAPPER, "numpy.memmap"})

# ---------------------------------------------------------------------------
# Argument-shape checks: each returns None when the shape is torch's, else why not
# ---------------------------------------------------------------------------

def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


#: Longest shape or stride tuple a call may take (numpy's limit; torch writes
#: far fewer). Checks must stay small per call: the memo lets one huge tuple
#: be passed to every call of a stream at the cost of two bytes each.
MAX_DIMS: Final = 64
#: Most entries a tensor's metadata dict may have, for the same reason.
MAX_TENSOR_METADATA: Final = 1024


def _int_tuple(x: object) -> bool:
    return isinstance(x, tuple) and len(x) <= MAX_DIMS and all(_is_int(v) for v in x)


def _is_bytes(x: object) -> bool:
    return isinstance(x, (bytes, BytesRef))


def call_of(x: object, *qualnames: str) -> bool:
    """True when ``x`` is the result of a literal call of one of ``qualnames``."""
    return (isinstance(x, Call) and isinstance(x.func, GlobalRef) and x.func.literal
            and x.func.qualname in qualnames)


#: What torch state dicts are, what wraps a tensor as ``nn.Parameter``, and the
#: functions torch.save names to rebuild a plain (strided) tensor from a storage.
ORDERED_DICT: Final = "collections.OrderedDict"
PARAMETER_REBUILD: Final = "torch._utils._rebuild_parameter"
TENSOR_REBUILDS: Final = ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
                          "torch._utils._rebuild_tensor_v3")
_NP_DTYPE: Final = "numpy.dtype"
_NP_RECONSTRUCT: Final = ("numpy.core.multiarray._reconstruct",
                          "numpy._core.multiarray._reconstruct")


def _latin1_bytes(x: object) -> bool:
    """Bytes, literal or rebuilt by the allowed ``_codecs.encode(str, 'latin1')``."""
    return _is_bytes(x) or call_of(x, "_codecs.encode")


def _hooks(x: object) -> bool:
    # torch 0.4 wrote the tensor's _backward_hooks as they were: None unless set.
    return x is None or call_of(x, ORDERED_DICT) or (
        isinstance(x, PDict) and not x.items)


def _tensor_head(a: tuple[object, ...]) -> str | None:
    # torch.save names storages by persistent id; pickle.dumps(tensor) nests a
    # whole torch.save stream of the storage instead (scanned in turn).
    if not (isinstance(a[0], PersistentRef) or call_of(a[0], "torch.storage._load_from_bytes")):
        return "first argument is neither a storage persistent id nor a nested storage"
    if not (_is_int(a[1]) and _int_tuple(a[2]) and _int_tuple(a[3])):
        return f"offset/size/stride are not an int and int tuples of at most {MAX_DIMS} entries"
    return None


def _shape_rebuild_tensor_v1(a: tuple[object, ...]) -> str | None:
    return "expects (storage, offset, size, stride)" if len(a) != 4 else _tensor_head(a)


def _shape_rebuild_tensor_v2(a: tuple[object, ...]) -> str | None:
    if len(a) not in (6, 7):
        return "expects 6 or 7 arguments"
    if not (isinstance(a[4], bool) and _hooks(a[5])):
        return "requires_grad/backward_hooks are not a bool and an empty OrderedDict or None"
    if len(a) == 7 and not _plain_metadata(a[6]):
        return "tensor metadata is not a dict of plain values"
    return _tensor_head(a)


def _shape_rebuild_tensor_v3(a: tuple[object, ...]) -> str | None:
    if len(a) not in (7, 8):
        return "expects 7 or 8 arguments"
    dtype = a[6]
    if not (isinstance(dtype, GlobalRef) and dtype.literal and dtype.qualname in TORCH_DTYPES):
        return "dtype argument is not a torch dtype"
    return _shape_rebuild_tensor_v2(a[:6] + a[7:])


def _plain_metadata(x: object) -> bool:
    return x is None or (isinstance(x, PDict) and len(x.items) <= MAX_TENSOR_METADATA and all(
        isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str)))
        for k, v in x.items))


def _shape_rebuild_parameter(a: tuple[object, ...]) -> str | None:
    if len(a) != 3 or not call_of(a[0], *TENSOR_REBUILDS):
        return "expects (rebuilt tensor, requires_grad, hooks)"
    if not (isinstance(a[1], bool) and _hooks(a[2])):
        return "requires_grad/backward_hooks are not a bool and an empty OrderedDict"
    return None


def _shape_load_from_bytes(a: tuple[object, ...]) -> str | None:
    ok = len(a) == 1 and _latin1_bytes(a[0])
    return None if ok else "argument is not literal bytes"


def _shape_codecs_encode(a: tuple[object, ...]) -> str | None:
    # The text may be too long to decode eagerly (BigText): it is still just data.
    ok = len(a) == 2 and isinstance(a[0], (str, BigText)) and a[1] in ("latin1", "latin-1")
    return None if ok else "expects (str, 'latin1')"


def _shape_no_args(a: tuple[object, ...]) -> str | None:
    return "expects no arguments" if a else None


def _shape_ordered_dict_args(a: tuple[object, ...]) -> str | None:
    # The pairs themselves are checked by StreamPolicy._pairs_problem, once
    # per list however often the memo hands the same list to a call.
    if not a or (len(a) == 1 and isinstance(a[0], list)):
        return None
    return "expects no arguments or one list of [key, value] pairs"


def _shape_int_tuple_arg(a: tuple[object, ...]) -> str | None:
    return None if len(a) == 1 and _int_tuple(a[0]) else "expects one tuple of ints"


def _shape_device_args(a: tuple[object, ...]) -> str | None:
    ok = len(a) in (1, 2) and isinstance(a[0], str) and (len(a) == 1 or _is_int(a[1]))
    return None if ok else "expects (name[, index])"


def _shape_iterable_arg(a: tuple[object, ...]) -> str | None:
    return None if not a or (len(a) == 1 and isinstance(a[0], list)) else "expects a list"


def _shape_bytes_arg(a: tuple[object, ...]) -> str | None:
    if not a or (len(a) == 1 and _latin1_bytes(a[0])):
        return None
    ok = len(a) == 2 and isinstance(a[0], str) and a[1] in ("latin1", "latin-1")
    return None if ok else "expects bytes"


def _shape_two_numbers(a: tuple[object, ...]) -> str | None:
    ok = len(a) == 2 and all(isinstance(x, (int, float)) for x in a)
    return None if ok else "expects (number, number)"


def _shape_np_reconstruct(a: tuple[object, ...]) -> str | None:
    ok = (len(a) == 3 and isinstance(a[0], GlobalRef) and a[0].qualname == "numpy.ndarray"
          and _int_tuple(a[1]) and _latin1_bytes(a[2]))
    return None if ok else "expects (numpy.ndarray, shape, bytes)"


def _shape_np_scalar(a: tuple[object, ...]) -> str | None:
    ok = len(a) in (1, 2) and call_of(a[0], _NP_DTYPE) and (len(a) == 1 or _latin1_bytes(a[1]))
    return None if ok else "expects (dtype, bytes)"


def _shape_np_frombuffer(a: tuple[object, ...]) -> str | None:
    ok = (len(a) == 4 and _latin1_bytes(a[0]) and call_of(a[1], _NP_DTYPE)
          and _int_tuple(a[2]) and a[3] in ("C", "F"))
    return None if ok else "expects (bytes, dtype, shape, order)"


def _shape_np_dtype(a: tuple[object, ...]) -> str | None:
    # Older numpy wrote align and copy as the ints 0 and 1 (``dtype('O8', 0, 1)``);
    # numpy reads them as the same flags.
    ok = (len(a) == 3 and isinstance(a[0], str) and len(a[0]) <= 64
          and all(type(x) in (bool, int) and x in (0, 1) for x in a[1:]))
    return None if ok else "expects (type string, align, copy)"


_SHAPES: Final = {
    "no_args": _shape_no_args,
    "ordered_dict_args": _shape_ordered_dict_args,
    "rebuild_tensor_v1": _shape_rebuild_tensor_v1,
    "rebuild_tensor_v2": _shape_rebuild_tensor_v2,
    "rebuild_tensor_v3": _shape_rebuild_tensor_v3,
    "rebuild_parameter": _shape_rebuild_parameter,
    "load_from_bytes": _shape_load_from_bytes,
    "codecs_encode": _shape_codecs_encode,
    "int_tuple_arg": _shape_int_tuple_arg,
    "device_args": _shape_device_args,
    "iterable_arg": _shape_iterable_arg,
    "bytes_arg": _shape_bytes_arg,
    "two_numbers": _shape_two_numbers,
    "np_reconstruct": _shape_np_reconstruct,
    "np_scalar": _shape_np_scalar,
    "np_frombuffer": _shape_np_frombuffer,
    "np_dtype": _shape_np_dtype,
}
assert {shape for shape, _ in ALLOWED_CALLS.values()} <= set(_SHAPES)


#: Limits on the plain state numpy dtypes carry in BUILD (structured dtypes nest).
_STATE_MAX_DEPTH: Final = 8
_STATE_MAX_ITEMS: Final = 100_000


#: Allowlisted calls whose results may sit in numpy BUILD state: an object
#: array holds other arrays, scalars and dtypes (each call checked on its own).
_NP_VALUES: Final = (_NP_DTYPE, "_codecs.encode", "builtins.bytes", *_NP_RECONSTRUCT,
                     "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                     "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer")


def _plain_state(x: object) -> bool:
    """Plain nested data (numbers, text, bytes, tuples, lists, dicts, numpy dtypes,
    and the arrays and scalars an object array holds).

    Walks iteratively, visiting each shared object once, so a hostile state
    cannot make this exponential or deep.
    """
    seen: set[int] = set()
    work: list[tuple[object, int]] = [(x, 0)]
    while work:
        value, depth = work.pop()
        if id(value) in seen or value is None or isinstance(
                value, (bool, int, float, str, bytes, BytesRef, BigText)):
            continue
        seen.add(id(value))
        if depth > _STATE_MAX_DEPTH or len(seen) > _STATE_MAX_ITEMS:
            return False
        if isinstance(value, (tuple, list)):
            work.extend((v, depth + 1) for v in value)
        elif isinstance(value, PDict):
            work.extend((v, depth + 1) for pair in value.items for v in pair)
        elif not call_of(value, *_NP_VALUES):
            return False
    return True


def view_reach(offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements of its storage a strided view needs: up to its last element, 0 if empty.

    The one bounds rule of scanner and converter (``builder.check_view``):
    torch's ``set_`` refuses a view that reaches past its storage, so the
    scan may not call one safe that convert refuses.
    """
    if any(d == 0 for d in shape):
        return 0
    return offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True)) + 1


#: Bytes per element of torch dtypes that _rebuild_tensor_v3 names with an
#: untyped storage (numel counted in bytes); sub-byte dtypes are not checked.
_V3_ITEMSIZE: Final = {
    **{f"torch.{n}": 1 for n in ("uint8", "int8", "bool", "float8_e4m3fn", "float8_e4m3fnuz",
                                 "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
                                 "float4_e2m1fn_x2", "bits8", "quint8", "qint8")},
    **{f"torch.{n}": 2 for n in ("uint16", "int16", "short", "float16", "half", "bfloat16",
                                 "bits16")},
    **{f"torch.{n}": 4 for n in ("uint32", "int32", "int", "float32", "float", "qint32",
                                 "complex32", "chalf")},
    **{f"torch.{n}": 8 for n in ("uint64", "int64", "long", "float64", "double", "complex64",
                                 "cfloat")},
    **{f"torch.{n}": 16 for n in ("complex128", "cdouble")},
}


def _view_problem(func: str, a: tuple[object, ...],
                  first: dict[str, tuple[int, int, str]]) -> str | None:
    """Why a tensor rebuilt from a storage persistent id reads outside it (None if it fits).

    ``a`` already has torch's shape (checked first); a storage nested by
    ``_load_from_bytes`` is checked when that stream is scanned. ``first`` is
    what the first persistent id of each key declared: torch's loaders (and
    the converter) build a key's storage once, from its first mention.
    """
    ref = a[0]
    if not isinstance(ref, PersistentRef) or _storage_problem(ref.pid) is not None:
        return None
    pid = ref.pid
    assert isinstance(pid, tuple) and isinstance(pid[1], GlobalRef)
    offset, shape, stride = a[1], a[2], a[3]
    assert isinstance(offset, int) and isinstance(shape, tuple) and isinstance(stride, tuple)
    if len(shape) != len(stride):
        return f"tensor size {list(shape)} and stride {list(stride)} differ in length"
    if offset < 0 or any(v < 0 for v in (*shape, *stride)):  # type: ignore[operator]
        return (f"negative offset, size or stride ({offset}, {list(shape)}, {list(stride)})")
    nbytes, held, _ = first.get(str(pid[2]), (0, pid[4], ""))  # type: ignore[assignment]
    if len(pid) == 6 and pid[5] is not None:  # legacy: a window (key, offset, size) of the root
        _, w_offset, w_size = pid[5]  # type: ignore[misc]
        if w_offset < 0 or w_size < 0 or w_offset + w_size > held:
            return (f"storage view {pid[5][0]!r} (offset {w_offset}, {w_size} elements) "  # type: ignore[index]
                    f"reaches past storage {pid[2]!r} of {held} elements")
        held = w_size
    if func.endswith("_v3"):
        size = _V3_ITEMSIZE.get(getattr(a[6], "qualname", ""))
        if size is None:
            return None
        held = (nbytes or held * STORAGE_TYPES[pid[1].qualname]) // size
    reach = view_reach(offset, shape, stride)  # type: ignore[arg-type]
    if reach > held:
        return (f"tensor view (offset {offset}, size {list(shape)}, stride {list(stride)}) "
                f"reaches element {reach - 1} of storage {pid[2]!r}, which holds {held} "
                "elements: torch refuses to rebuild it (and tensorfile convert refuses the file)")
    return None


def _effect_problem(eff: Effect) -> str | None:
    """Why an item assignment / BUILD is not one torch or numpy writes (None if it is)."""
    target = eff.target
    if call_of(target, ORDERED_DICT):
        if eff.opcode in ("SETITEM", "SETITEMS"):
            return None
        if eff.opcode == "BUILD":
            state = eff.payload[0]
            # The dict becomes the instance __dict__ (torch writes _metadata);
            # a dunder key such as __setstate__ would make a later BUILD call it.
            if isinstance(state, PDict) and all(
                    isinstance(k, str) and not k.startswith("__") for k, _ in state.items):
                return None
            return "BUILD state of an OrderedDict is not a dict of plain attribute names"
    if eff.opcode == "BUILD" and is_wrapper(target):
        return _wrapper_state_problem(eff.payload[0])
    if eff.opcode == "BUILD" and call_of(target, _NP_DTYPE, *_NP_RECONSTRUCT):
        return None if _plain_state(eff.payload[0]) else "numpy BUILD state is not plain data"
    what = target.qualname if isinstance(target, GlobalRef) else type(target).__name__
    return f"{eff.opcode} on {what} is not something torch writes"


def _wrapper_state_problem(state: object) -> str | None:
    """Why a ``NumpyArrayWrapper`` BUILD state is not the plain one joblib.dump writes."""
    if not isinstance(state, PDict):
        return "joblib array wrapper state is not a dict"
    fields: dict[object, object] = dict((k, v) for k, v in state.items if isinstance(k, str))
    if len(fields) != len(state.items) or not set(fields) <= WRAPPER_FIELDS:
        return "joblib array wrapper state has other fields than joblib writes"
    sub = fields.get("subclass")
    ok = (isinstance(sub, GlobalRef) and sub.literal
          and sub.qualname in ("numpy.ndarray", "numpy.memmap")
          and _int_tuple(fields.get("shape")) and fields.get("order") in ("C", "F")
          and call_of(fields.get("dtype"), _NP_DTYPE)
          and isinstance(fields.get("allow_mmap", False), bool)
          and (fields.get("numpy_array_alignment_bytes") is None
               or type(fields.get("numpy_array_alignment_bytes")) is int))
    return None if ok else ("joblib array wrapper state is not (ndarray or memmap, shape, "
                            "'C'/'F', numpy dtype, bool[, int])")


#: Elements numpy may be asked to allocate by ``_reconstruct``'s shape (numpy
#: writes ``(0,)``: the array's contents arrive by BUILD).
MAX_RECONSTRUCT_ELEMENTS: Final = 1 << 20


def _elements(shape: tuple[object, ...]) -> int:
    count = 1
    for n in shape:
        count *= n  # type: ignore[operator]
    return count


def _alloc_problem(node: Call | Effect) -> str | None:
    """Why numpy would allocate far more than the pickle holds (None: it would not).

    ``_reconstruct(ndarray, shape, ...)`` allocates ``shape`` at once (a 67-byte
    pickle can ask for 16 GiB); a BUILD state ``(version, shape, dtype,
    fortran, data)`` allocates ``shape`` before comparing it with ``data``.
    """
    if isinstance(node, Call):
        if (call_of(node, *_NP_RECONSTRUCT) and isinstance(node.args, tuple)
                and len(node.args) == 3 and _int_tuple(node.args[1])):
            n = _elements(node.args[1])  # type: ignore[arg-type]
            if n > MAX_RECONSTRUCT_ELEMENTS:
                return (f"numpy _reconstruct allocates {n} elements (bound: "
                        f"{MAX_RECONSTRUCT_ELEMENTS}; numpy writes (0,))")
        return None
    state = node.payload[0] if node.payload else None
    if (node.opcode == "BUILD" and call_of(node.target, *_NP_RECONSTRUCT)
            and isinstance(state, tuple) and len(state) == 5 and _int_tuple(state[1])):
        n = _elements(state[1])
        data = state[4]
        if call_of(data, "_codecs.encode") and isinstance(data.args, tuple):  # type: ignore[union-attr]
            data = data.args[0]  # type: ignore[union-attr]  # protocol 2 bytes: latin-1 text
        if isinstance(data, BigText):
            data = data.raw
        held = len(data) if isinstance(data, (bytes, BytesRef, list, str)) else 0
        if n > held:
            return (f"numpy array state of shape {state[1]} allocates {n} elements but holds "
                    f"{held} (numpy allocates before it compares)")
    return None


def _storage_problem(pid: object) -> str | None:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6)):
        return "persistent id is not a torch storage tuple"
    tag, stype, key, location, numel = pid[:5]
    # Python 2 wrote the tag as SHORT_BINSTRING; torch.load decodes it as UTF-8.
    if not (isinstance(tag, str) and tag == "storage"):
        return "persistent id does not start with 'storage'"
    if not (isinstance(stype, GlobalRef) and stype.literal and stype.qualname in STORAGE_TYPES):
        return "persistent id names no torch storage type"
    if not (isinstance(key, str) and isinstance(location, str) and _is_int(numel)):
        return "storage key/location/numel have the wrong types"
    if len(pid) == 6:
        view = pid[5]
        ok = view is None or (isinstance(view, tuple) and len(view) == 3
                              and isinstance(view[0], str) and _is_int(view[1])
                              and _is_int(view[2]))
        if not ok:
            return "legacy view metadata is not (key, offset, size)"
    return None


# ---------------------------------------------------------------------------
# Classifying names
# ---------------------------------------------------------------------------

def classify_global(ref: GlobalRef) -> tuple[Verdict, str]:
    """Verdict and reason for importing ``ref`` (SAFE when allowlisted).

    ``dangerous`` only names a known gadget (the tables above, also when a
    dotted name reaches one: ``pathlib`` + ``os.system``) or an attribute walk
    through dunder names (``__globals__``, ``__builtins__``...), the known way
    out of any module. Everything else is ``unknown``, with what it is.
    """
    qual = ref.qualname
    computed = COMPUTED_NAME in (ref.module, ref.name)
    if ref.literal and (qual in ALLOWED_CALLS or qual in STORAGE_TYPES or qual in VALUE_GLOBALS
                        or qual in JOBLIB_GLOBALS):
        return Verdict.SAFE, "allowlisted"
    why = UNSUPPORTED_GLOBALS.get(qual)
    if why is not None and ref.literal:  # before the module table: torch.serialization._get_layout
        return Verdict.UNKNOWN, why
    if not computed:
        hit = _gadget(ref.module, ref.name)
        if hit is not None:
            return Verdict.DANGEROUS, f"known gadget: {hit}"
        dunder = next((p for p in ref.name.split(".") if p.startswith("__")), None)
        if dunder is not None:
            return (Verdict.DANGEROUS, f"attribute {dunder} reaches interpreter internals "
                    "(module globals, builtins, subclasses): a known way to any function")
    if computed:
        return (Verdict.UNKNOWN, "STACK_GLOBAL operands are computed, not literal text: "
                "what it imports cannot be determined (torch never writes this)")
    if not ref.literal:
        return (Verdict.UNKNOWN, "STACK_GLOBAL operands are Python 2 STRING text (torch never "
                "writes this); the name is not on the allowlist")
    if not ref.name or "." in ref.name:
        return (Verdict.UNKNOWN, f"attribute path {ref.name!r} of module {ref.module}: "
                "not on the allowlist")
    if ref.module == "__main__":
        return (Verdict.UNKNOWN, "a class or function of the script that saved the file "
                "(__main__): not on the allowlist")
    return Verdict.UNKNOWN, "not on the allowlist (an import tensorfile does not know to be safe)"


#: Parts of a dotted name searched for gadgets (the search is quadratic in them).
_MAX_NAME_PARTS: Final = 32


def _module_hit(module: str) -> str | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        hit = DANGEROUS_MODULES.get(".".join(parts[:i]))
        if hit is not None:
            return hit
    return None


def _gadget(module: str, name: str) -> str | None:
    """``what: why`` when importing ``module.name`` reaches a known gadget, else None.

    Protocol 4 resolves a dotted ``name`` attribute by attribute, so every run
    of its parts is looked up too: ``pathlib`` + ``os.system`` is ``os.system``,
    ``builtins`` + ``eval.__call__`` is ``builtins.eval``.
    """
    qual = f"{module}.{name}"
    hit = DANGEROUS_GLOBALS.get(qual) or _module_hit(module)
    if hit is not None:
        return f"{qual}: {hit}"
    if "." not in name:
        return None
    parts = name.split(".")[:_MAX_NAME_PARTS]
    for j in range(len(parts), 0, -1):
        head = f"{module}.{'.'.join(parts[:j])}"
        if head in DANGEROUS_GLOBALS:
            return f"{head} (as {qual}): {DANGEROUS_GLOBALS[head]}"
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            run = ".".join(parts[i:j])
            hit = DANGEROUS_GLOBALS.get(run) or DANGEROUS_MODULES.get(run)
            if hit is not None:
                return f"{run} (reached as {qual}): {hit}"
    return None


# ---------------------------------------------------------------------------
# The observer that turns nodes into findings
# ---------------------------------------------------------------------------

class StreamPolicy:
    """Observer for :func:`~tensorfile._picklevm.machine.run_stream` that records findings.

    With ``strict=True`` (the converter's mode) the first non-safe node raises
    :class:`~tensorfile.errors.UnsafePickleError` instead, before anything is built.
    ``globals`` collects every import; ``nested`` the ``_load_from_bytes``
    payloads, which the container layer scans as streams of their own;
    ``storages`` maps each storage key to its element size (the legacy format's
    records are walked with it), ``storage_nbytes`` to (bytes, numel, storage
    type) its persistent id declares (a zip record must hold that many). ``key_pids`` accepts the plain string
    persistent ids of torch < 0.4's tar format. At most ``max_findings``
    findings are kept (twice that many dangerous ones); ``dropped`` counts the rest.

    A plain class rather than a dataclass, which would cost start-up time
    (see :mod:`.machine`).
    """

    __slots__ = ("_pairs_checked", "dropped", "findings", "globals", "joblib_arrays", "key_pids",
                 "max_findings", "nested", "storage_nbytes", "storages", "strict")
    strict: bool
    key_pids: bool
    storages: dict[str, int]
    storage_nbytes: dict[str, tuple[int, int, str]]
    findings: list[Finding]
    globals: dict[str, None]
    nested: list[tuple[int, object]]
    max_findings: int
    dropped: int

    def __init__(self, strict: bool = False, key_pids: bool = False, *,
                 max_findings: int = 1000) -> None:
        self.strict = strict
        self.key_pids = key_pids
        self.storages = {}
        self.storage_nbytes = {}
        self.findings = []
        self.globals = {}
        self.nested = []
        #: Offsets of the BUILDs that fill a joblib array wrapper (joblib.load
        #: reads array bytes after each; other loaders read on as opcodes).
        self.joblib_arrays: list[int] = []
        self.max_findings = max_findings
        self.dropped = 0
        self._pairs_checked: dict[int, tuple[list[object], int]] = {}

    def _pairs_problem(self, pairs: list[object]) -> str | None:
        """Why ``OrderedDict(pairs)`` is not a list of [key, value] pairs (None if it is).

        Each list is checked once, and only its new items when it grew since:
        the memo can hand one long list to every call of a stream.
        """
        _, done = self._pairs_checked.get(id(pairs), (pairs, 0))
        for pair in pairs[done:]:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                return "OrderedDict argument is not a list of [key, value] pairs"
        self._pairs_checked[id(pairs)] = (pairs, len(pairs))  # keeps the id taken
        return None

    @property
    def verdict(self) -> Verdict:
        """Worst verdict among the findings (SAFE when there are none)."""
        return Verdict.worst((f.verdict for f in self.findings), Verdict.SAFE)

    def add(self, finding: Finding) -> None:
        """Record a finding (or raise, in strict mode). Bounded: extras are counted."""
        if self.strict:
            where = f" at byte {finding.offset}" if finding.offset is not None else ""
            name = f" {finding.global_name}" if finding.global_name else ""
            raise UnsafePickleError(
                f"{finding.verdict.value}: {finding.opcode}{name}{where}: {finding.reason}")
        room = self.max_findings * (2 if finding.verdict is Verdict.DANGEROUS else 1)
        if len(self.findings) < room:  # dangerous findings get extra room
            self.findings.append(finding)
        else:
            self.dropped += 1

    def observe(self, node: Node) -> None:
        """Classify one node (see the module docstring)."""
        if isinstance(node, GlobalRef):
            self.globals.setdefault(node.qualname)
            verdict, reason = classify_global(node)
            if verdict is not Verdict.SAFE:
                self.add(Finding(verdict, reason, node.opcode, node.offset, node.qualname))
        elif isinstance(node, Call):
            self._call(node)
            alloc = _alloc_problem(node)
            if alloc is not None:
                self.add(Finding(Verdict.ERROR, f"resource bound: {alloc}", node.opcode,
                                 node.offset))
        elif isinstance(node, PersistentRef):
            self._persistent(node)
        elif isinstance(node, Effect):
            if node.opcode == "BUILD" and is_wrapper(node.target):
                self.joblib_arrays.append(node.offset)
            alloc = _alloc_problem(node)
            if alloc is not None:
                self.add(Finding(Verdict.ERROR, f"resource bound: {alloc}", node.opcode,
                                 node.offset))
            problem = _effect_problem(node)
            if problem is not None:
                imported = node.target if isinstance(node.target, GlobalRef) else None
                verdict = Verdict.DANGEROUS if imported else Verdict.UNKNOWN
                if imported:
                    problem = (f"{node.opcode} changes {imported.qualname} itself (sets "
                               "attributes or items on an imported object): monkey-patching")
                self.add(Finding(verdict, problem, node.opcode, node.offset,
                                 imported.qualname if imported else None))
        elif isinstance(node, ExtensionRef):
            self.add(Finding(Verdict.UNKNOWN,
                             f"extension code {node.code!r}: imports whatever the loading "
                             "process registered with copyreg.add_extension (stock Python "
                             "and torch register none)", node.opcode, node.offset))

    def _persistent(self, ref: PersistentRef) -> None:
        pid = ref.pid
        if self.key_pids and isinstance(pid, str) and pid.isdigit():
            return
        problem = _storage_problem(pid)
        if problem is not None:
            self.add(Finding(Verdict.UNKNOWN, problem, ref.opcode, ref.offset))
            return
        assert isinstance(pid, tuple) and isinstance(pid[1], GlobalRef)
        self.storages[str(pid[2])] = STORAGE_TYPES[pid[1].qualname]
        # The first mention of a key decides its size, as in torch's loaders.
        self.storage_nbytes.setdefault(str(pid[2]), (
            pid[4] * STORAGE_TYPES[pid[1].qualname], pid[4], pid[1].qualname))  # type: ignore[operator]

    def _call(self, call: Call) -> None:
        func = call.func
        if not isinstance(func, GlobalRef):
            what = (f"the result of {func.opcode} at byte {func.offset}"
                    if isinstance(func, (Call, PersistentRef, ExtensionRef)) else
                    f"a {type(func).__name__} value")
            self.add(Finding(Verdict.UNKNOWN, f"calls {what}, not an imported name",
                             call.opcode, call.offset))
            return
        verdict, reason = classify_global(func)
        if verdict is not Verdict.SAFE:
            self.add(Finding(verdict, f"calls {func.qualname}: {reason}", call.opcode,
                             call.offset, func.qualname))
            return
        if func.qualname == WRAPPER:
            if not (call.opcode == "NEWOBJ" and call.args == () and call.kwargs is None):
                self.add(Finding(Verdict.UNKNOWN, "joblib array wrapper not made the way "
                                 "joblib.dump writes it (NEWOBJ, no arguments)",
                                 call.opcode, call.offset, func.qualname))
            return
        rule = ALLOWED_CALLS.get(func.qualname)
        if rule is None:
            self.add(Finding(Verdict.UNKNOWN, "a storage type or dtype is called",
                             call.opcode, call.offset, func.qualname))
            return
        if call.opcode != "REDUCE" or not isinstance(call.args, tuple):
            self.add(Finding(Verdict.UNKNOWN, f"{call.opcode} call is not the REDUCE torch writes",
                             call.opcode, call.offset, func.qualname))
            return
        problem = _SHAPES[rule[0]](call.args)
        if problem is None and call.args and rule[0] == "ordered_dict_args":
            problem = self._pairs_problem(call.args[0])
        if problem is None and not self.strict and func.qualname in TENSOR_REBUILDS:
            bad_view = _view_problem(func.qualname, call.args, self.storage_nbytes)
            if bad_view is not None:
                self.add(Finding(Verdict.ERROR, bad_view, call.opcode, call.offset,
                                 func.qualname))
                return
        if problem is not None:
            self.add(Finding(Verdict.UNKNOWN, f"arguments differ from torch's: {problem}",
                             call.opcode, call.offset, func.qualname))
        elif func.qualname == "torch.storage._load_from_bytes":
            self.nested.append((call.offset, call.args[0]))
