"""What an allowlisted torch pickle builds: state-dict containers and tensor views.

The converter runs a checkpoint's object stream through the scanner's symbolic
machine (:func:`~tensorfile._picklevm.machine.run_stream`) with
:class:`ConvertObserver`, the scanner's policy in strict mode, so the first
import or call outside the allowlist stops the stream before anything is
built. :func:`~tensorfile._picklevm._materialize.materialize` then turns the value
graph into Python values through :class:`CheckpointBuilder`:

* ``collections.OrderedDict()`` and its SETITEMS become an ``OrderedDict``
  (a BUILD setting ``_metadata`` is ignored: it is module version bookkeeping,
  not a value of the checkpoint);
* a storage persistent id becomes a :class:`Storage`, a window over the
  storage's record in the checkpoint (looked up through a :data:`RecordSource`,
  never copied), its length checked against ``numel x element size``;
* ``_rebuild_tensor`` / ``_rebuild_tensor_v2`` / ``_rebuild_tensor_v3`` become a
  :class:`TensorView` (storage, dtype, offset, size, stride), bounds-checked
  against its storage when it is built; ``_rebuild_parameter`` is its tensor;
* ``_codecs.encode(text, 'latin1')`` becomes the bytes it spells, and
  ``torch.storage._load_from_bytes(bytes)`` (``pickle.dumps(tensor)``) the
  storage of the nested torch stream, built by the converter's
  :data:`NestedLoader` (the scanner has already checked that stream);
* every other allowlisted call (numpy arrays and scalars, ``torch.Size``,
  ``torch.device``, sets) becomes an :class:`Unbuilt` marker naming the
  global: nothing is called, and the converter reports the value as dropped.

Building hashes what the scanner never does (dict keys, set items), so
:func:`check_hashing` bounds that work first.

Nothing here imports torch: dtypes come from tensorfile's own table.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from tensorfile._format.dtypes import DTYPES, DType
from tensorfile._io.sources import Image
from tensorfile._picklevm.machine import (
    COMPUTED_NAME,
    Call,
    Effect,
    GlobalRef,
    Node,
    PersistentRef,
    hashing_problem,
)
from tensorfile._picklevm.opcodes import BigText, Buffer, BytesRef
from tensorfile._picklevm.policy import (
    ORDERED_DICT,
    PARAMETER_REBUILD,
    STORAGE_DTYPES,
    STORAGE_TYPES,
    TENSOR_REBUILDS,
    StreamPolicy,
    view_reach,
)
from tensorfile._picklevm.policy import TORCH_DTYPES as TORCH_DTYPE_NAMES
from tensorfile.errors import MalformedCheckpointError, UnsupportedCheckpointError

#: Where a storage's bytes are: ``records(key) -> (buffer, start, length)``.
#: Raises :class:`MalformedCheckpointError` for a key with no record.
RecordSource = Callable[[str], tuple[Buffer, int, int]]
#: Builds the root of a nested torch stream ``buf[start:end]`` (the argument of
#: ``torch.storage._load_from_bytes``); ``at`` is the call's offset.
NestedLoader = Callable[[Buffer, int, int, int], object]

_QUANTIZED_STORAGES: Final = frozenset(n for n in STORAGE_DTYPES if n.startswith("Q"))

def storage_problem(stype: str) -> str | None:
    """Why tensors of storage class ``stype`` cannot be written (None when they can)."""
    short = stype.rsplit(".", 1)[1].removesuffix("Storage")
    if short in _QUANTIZED_STORAGES:
        return "quantized tensors have no safetensors equivalent"
    if short != "Untyped" and STORAGE_DTYPES.get(short) is None:
        return "no safetensors dtype (complex128 has none)"
    return None


#: torch dtype globals (``_rebuild_tensor_v3``'s dtype argument) -> tensorfile dtype.
DTYPE_OF_TORCH: Final[dict[str, DType]] = {
    **{f"torch.{d.torch_name}": d for d in DTYPES.values() if d.torch_name},
    **{f"torch.{alias}": DTYPES[name] for alias, name in (
        ("float", "F32"), ("double", "F64"), ("half", "F16"), ("long", "I64"), ("int", "I32"),
        ("short", "I16"), ("cfloat", "C64"))},
}

#: torch tensor kinds that torch.save writes with their own rebuild function:
#: recognised so that the refusal says what they are rather than "not allowlisted".
UNSUPPORTED_REBUILDS: Final[dict[str, str]] = {
    "torch._utils._rebuild_qtensor": "quantized tensors have no safetensors equivalent",
    "torch._utils._rebuild_sparse_tensor": "sparse tensors are not converted",
    "torch._utils._rebuild_sparse_csr_tensor": "sparse tensors are not converted",
    "torch._utils._rebuild_nested_tensor": "nested tensors are not converted",
    "torch._utils._rebuild_meta_tensor_no_storage": "meta tensors hold no data",
    "torch._utils._rebuild_wrapper_subclass": "tensor subclasses are not converted",
    "torch._utils._rebuild_device_tensor_from_numpy": "device tensors from numpy are not converted",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "device tensors are not converted",
    "torch._utils._rebuild_xla_tensor": "XLA tensors are not converted",
    "torch._utils._rebuild_mtia_tensor": "MTIA tensors are not converted",
    "torch._utils._rebuild_parameter_with_state": "parameters with extra state are not converted",
    "torch._tensor._rebuild_from_type_v2": "tensor subclasses are not converted",
}


class ConvertObserver:
    """The scanner's policy in strict mode: the first non-allowlisted node raises.

    :class:`~tensorfile.errors.UnsafePickleError` (from the policy) names the
    global and its byte offset. Known torch tensor kinds that are safe but
    cannot be converted (quantized, sparse, ...) raise
    :class:`~tensorfile.errors.UnsupportedCheckpointError` instead, checked
    first so the message says what the tensor is.
    """

    def __init__(self, *, key_pids: bool = False) -> None:
        self.policy = StreamPolicy(strict=True, key_pids=key_pids)

    def observe(self, node: Node) -> None:
        """Refuse, or pass ``node`` on to the policy (see the class docstring)."""
        if isinstance(node, GlobalRef) and node.literal:
            why = UNSUPPORTED_REBUILDS.get(node.qualname)
            if why is not None:
                raise UnsupportedCheckpointError(
                    f"{node.opcode} {node.qualname} at byte {node.offset}: {why}")
        self.policy.observe(node)


@dataclass(frozen=True, slots=True)
class Unbuilt:
    """A value the converter does not build: the allowlisted call that made it."""

    name: str
    offset: int

    def reason(self) -> str:
        """Why the value is dropped, for the conversion report."""
        return f"{self.name} value (byte {self.offset}) has no safetensors equivalent"


@dataclass(frozen=True, slots=True)
class LeftTensor:
    """A tensor of a kind safetensors cannot hold (complex128, complex32, a quantized
    storage, ...): the converter writes the other tensors and lists this one."""

    what: str
    offset: int

    def reason(self) -> str:
        """Why the tensor is not converted, for the conversion report."""
        return f"{self.what} (tensor at byte {self.offset})"


@dataclass(frozen=True, slots=True)
class StorageType:
    """A storage class named in the pickle (``torch.FloatStorage``); never called."""

    qualname: str


@dataclass(frozen=True, slots=True)
class _TorchDType:
    qualname: str


@dataclass(frozen=True, slots=True, eq=False)
class Storage:
    """A torch storage: ``nbytes`` bytes of ``buf`` from ``start`` (within its record).

    ``dtype`` is the element type of a typed storage (None for ``UntypedStorage``,
    whose tensors name their dtype); ``big_endian`` when the checkpoint's
    ``byteorder`` record says so.
    """

    key: str
    buf: Buffer
    start: int
    nbytes: int
    dtype: DType | None
    big_endian: bool

    @property
    def swap_unit(self) -> int:
        """Bytes per unit torch byte-swaps when it loads this storage (1: none).

        ``torch.load`` swaps a big-endian storage by *its* dtype
        (``storage.byteswap(dtype)``; a complex number's halves apart), and an
        ``UntypedStorage`` by ``uint8``, which swaps nothing, whatever dtype its
        tensors view it as.
        """
        if not self.big_endian or self.dtype is None:
            return 1
        size = self.dtype.itemsize
        return size // 2 if self.dtype.name.startswith("C") else size


@dataclass(frozen=True, slots=True, eq=False)
class TensorView:
    """A tensor as torch would rebuild it: a strided view of a storage.

    ``shape``/``stride``/``offset`` count torch elements of ``dtype`` (for
    ``float4_e2m1fn_x2`` one element is a byte holding two values).
    ``offset_in_pickle`` is where the rebuild call sits, for error messages.
    """

    storage: Storage
    dtype: DType
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset_in_pickle: int
    #: torch's negative and conjugate bits (``_rebuild_tensor_v2``'s metadata):
    #: the values torch.load returns are ``-x`` and ``conj(x)`` of the bytes.
    negate: bool = False
    conjugate: bool = False

    @property
    def numel(self) -> int:
        """Number of torch elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the tensor occupies once contiguous."""
        return self.numel * self.dtype.itemsize

    @property
    def header_shape(self) -> tuple[int, ...]:
        """The shape safetensors records (packed fp4 counts values, not bytes)."""
        if self.dtype.sub_byte and self.shape:
            per_byte = 8 // self.dtype.bits
            return (*self.shape[:-1], self.shape[-1] * per_byte)
        return self.shape

    @property
    def identity(self) -> tuple[Any, ...]:
        """Equal for two names that denote the same bytes (tied weights)."""
        return (id(self.storage.buf), self.byte_span()[0], self.dtype.name, self.shape,
                self.stride, self.negate, self.conjugate)

    def byte_span(self) -> tuple[int, int]:
        """Absolute (start, stop) in the storage's buffer of every byte the view reads."""
        start = self.storage.start + self.offset * self.dtype.itemsize
        if not self.numel:
            return start, start
        # The scanner's bounds rule (policy.view_reach), so scan and convert agree.
        reach = view_reach(self.offset, self.shape, self.stride)
        return start, self.storage.start + reach * self.dtype.itemsize

    def is_contiguous(self) -> bool:
        """Row-major with no gaps (dimensions of size 1 may have any stride)."""
        expected = 1
        for d, s in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if d != 1 and s != expected:
                return False
            expected *= d
        return True

    @property
    def _unit(self) -> int:
        """Bytes per component (a complex number is two)."""
        return self.dtype.itemsize // 2 if self.dtype.name.startswith("C") else self.dtype.itemsize

    def raw_span(self) -> tuple[int, int] | None:
        """(start, length) in the storage's buffer when the tensor's bytes are one
        run there, as safetensors stores them (contiguous, little-endian, no sign
        bits to apply); else None."""
        if self.numel and (self.storage.swap_unit > 1 or self.negate or self.conjugate):
            return None
        if not self.is_contiguous():
            return None
        return self.byte_span()[0], self.nbytes

    def data(self) -> memoryview:
        """The tensor's bytes, contiguous and little-endian, as torch.load returns them.

        A :meth:`raw_span` is a zero-copy window over the record; anything
        else is materialized (one tensor's worth of memory) with a numpy
        strided view on a carrier dtype of the element's width, so every dtype
        (bf16, fp8, complex) is moved as raw bits. A big-endian storage is
        swapped by the storage's unit (:attr:`Storage.swap_unit`), as torch
        swaps it, before the view reads it; the negative and conjugate bits
        are applied last (:func:`_apply_bits`).

        A storage of the checkpoint file itself (an
        :class:`~tensorfile._io.sources.Image`) is read with ``pread`` into a
        private buffer of the bytes the view reaches: one tensor's worth,
        never a map of a file that could be cut short under it.
        """
        if not self.numel:
            return memoryview(b"")
        st = self.storage
        span = self.raw_span()
        buf: Any = st.buf
        start, stop = self.byte_span()
        unit, swap = self._unit, st.swap_unit
        base = 0  # where ``buf`` starts in the storage's buffer
        if type(buf) is Image:
            lo, hi = start, stop
            if swap > 1:  # whole swap units, as swapped below
                lo = st.start + (lo - st.start) // swap * swap
                hi = st.start + -(-(hi - st.start) // swap) * swap
            buf, base = buf.copy(lo, hi), lo
        if span is not None:
            return memoryview(buf)[span[0] - base:span[0] - base + span[1]]
        start -= base
        if swap > 1 and swap != unit:
            # The tensor views the storage with another width than torch swapped
            # it by: swap the storage's units under the view first.
            lo = st.start - base + (start + base - st.start) // swap * swap
            hi = st.start - base + -(-(stop - st.start) // swap) * swap
            swapped = np.frombuffer(buf, dtype=f"<u{swap}", count=(hi - lo) // swap, offset=lo)
            buf, start = swapped.byteswap().view(np.uint8).data, start - lo
            swap = 1
        size = self.dtype.itemsize
        shape, strides = self.shape, tuple(s * size for s in self.stride)
        if unit != size:  # complex: each component separately
            shape, strides = (*shape, size // unit), (*strides, unit)
        carrier = np.dtype(f"<u{unit}")
        try:
            view: np.ndarray[Any, Any] = np.ndarray(
                shape, dtype=carrier, buffer=buf, offset=start, strides=strides)  # type: ignore[call-overload]
            out = np.array(view, order="C", copy=True)
        except (ValueError, TypeError) as exc:  # numpy's own bounds and dimension limits
            raise UnsupportedCheckpointError(
                f"tensor at byte {self.offset_in_pickle}: cannot materialize the view: {exc}"
            ) from None
        del view
        if swap > 1:
            out.byteswap(inplace=True)
        _apply_bits(out, self.dtype, negate=self.negate, conjugate=self.conjugate)
        return out.reshape(-1).view(np.uint8).data


#: dtypes whose negative bit torch.load's values resolve (``neg`` is not
#: implemented for bool, unsigned 16-64 bit ints and the 8-bit floats).
NEGATABLE: Final = frozenset({"F16", "BF16", "F32", "F64", "C64", "I8", "I16", "I32", "I64",
                              "U8"})


def _apply_bits(out: np.ndarray[Any, Any], dtype: DType, *, negate: bool,
                conjugate: bool) -> None:
    """``-x`` and ``conj(x)`` on carrier words in place (floats: the sign bit)."""
    if not (negate or conjugate):
        return
    if dtype.name.startswith(("F", "BF", "C")):
        sign = out.dtype.type(1 << (out.dtype.itemsize * 8 - 1))
        if negate:
            out ^= sign
        if conjugate:  # the imaginary halves (the last axis is (real, imaginary))
            out[..., 1] ^= sign
    elif negate:  # two's complement, wrapping like torch's integer neg
        np.negative(out, out=out)
def _latin1(text: object, at: int) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how protocol-2 pickles spell bytes."""
    if isinstance(text, BigText):
        text = text.raw.tobytes().decode("utf-8", "surrogatepass")
    try:
        return str(text).encode("latin-1")
    except UnicodeEncodeError:
        raise MalformedCheckpointError(
            f"_codecs.encode at byte {at}: text is not latin-1") from None


def _ordered_dict(args: tuple[object, ...], at: int) -> OrderedDict[Any, Any]:
    """``OrderedDict()``, or ``OrderedDict([[key, value], ...])`` as Python 2.7 pickled it."""
    try:
        pairs: Any = args[0] if args else ()
        return OrderedDict(pairs)
    except TypeError:
        raise MalformedCheckpointError(
            f"OrderedDict at byte {at}: unhashable key in its [key, value] pairs") from None


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


#: Dimensions a tensor may have: numpy's own limit (the converter materializes
#: views with numpy), far above any real tensor's. Without a bound, one shape
#: tuple of 10**5 dimensions shared by 10**4 tensors through the memo costs
#: 10**9 steps to check.
MAX_DIMS: Final = 64


def check_view(storage: Storage, dtype: DType, offset: object, shape: object, stride: object,
               at: int) -> TensorView:
    """Build a :class:`TensorView`, refusing any view that reads outside its storage."""
    for dims in (shape, stride):
        if isinstance(dims, tuple) and len(dims) > MAX_DIMS:
            raise UnsupportedCheckpointError(
                f"tensor at byte {at} has {len(dims)} dimensions; the converter handles at "
                f"most {MAX_DIMS}")
    if not (_int(offset) and isinstance(shape, tuple) and isinstance(stride, tuple)
            and all(_int(d) for d in shape) and all(_int(s) for s in stride)):
        raise MalformedCheckpointError(f"tensor at byte {at}: offset/size/stride are not ints")
    assert isinstance(offset, int)
    if len(shape) != len(stride):
        raise MalformedCheckpointError(
            f"tensor at byte {at}: size {list(shape)} and stride {list(stride)} differ in length")
    if offset < 0 or any(d < 0 for d in shape) or any(s < 0 for s in stride):
        raise MalformedCheckpointError(
            f"tensor at byte {at}: negative offset, size or stride "
            f"({offset}, {list(shape)}, {list(stride)})")
    if dtype.sub_byte and not shape:
        raise UnsupportedCheckpointError(
            f"tensor at byte {at}: a 0-d {dtype.name} tensor cannot be stored")
    view = TensorView(storage, dtype, offset, shape, stride, at)
    stop = view.byte_span()[1]
    if view.numel and stop > storage.start + storage.nbytes:
        held = storage.nbytes // dtype.itemsize
        raise MalformedCheckpointError(
            f"tensor at byte {at}: view (offset {offset}, size {list(shape)}, stride "
            f"{list(stride)}) reaches element {(stop - storage.start) // dtype.itemsize - 1} "
            f"of storage {storage.key!r}, which holds {held} {dtype.name} elements")
    return view


class CheckpointBuilder:
    """The :class:`~tensorfile._picklevm.machine.Builder` of the converter (see module docstring).

    ``objects`` resolves plain-string persistent ids (torch < 0.4's tar format,
    where the pickle names already rebuilt tensors by key).
    """

    def __init__(self, records: RecordSource, *, big_endian: bool = False,
                 objects: dict[str, object] | None = None,
                 nested: NestedLoader | None = None) -> None:
        self._records = records
        self._big_endian = big_endian
        self._objects = objects or {}
        self._nested = nested
        self._storages: dict[str, Storage] = {}

    # -- Builder protocol --------------------------------------------------------
    def on_global(self, ref: GlobalRef) -> object:
        """Storage classes and dtypes become markers; other names are looked at by calls."""
        if ref.qualname in STORAGE_TYPES:
            return StorageType(ref.qualname)
        if ref.qualname in TORCH_DTYPE_NAMES:
            return _TorchDType(ref.qualname)
        return ref

    def on_persistent(self, ref: PersistentRef, pid: object) -> object:
        """A storage tuple becomes a :class:`Storage` (first mention of a key wins, as in torch)."""
        if isinstance(pid, str):
            found = self._objects.get(pid)
            if found is None:
                raise MalformedCheckpointError(
                    f"persistent id {pid!r} at byte {ref.offset} names no stored tensor")
            return found
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and isinstance(pid[1], StorageType)
                and isinstance(pid[2], str) and _int(pid[4])):
            raise MalformedCheckpointError(
                f"persistent id at byte {ref.offset} is not a torch storage")
        stype, key, numel = pid[1].qualname, pid[2], pid[4]
        why = storage_problem(stype)
        if why is not None:
            return LeftTensor(f"storage {stype}: {why}", ref.offset)
        storage = self.storage(key, stype, numel, ref.offset)
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                and _int(view[1]) and _int(view[2])):
            raise MalformedCheckpointError(f"storage view at byte {ref.offset} is malformed")
        return self.window(storage, view[0], view[1], view[2], ref.offset)

    def on_call(self, call: Call, func: object, args: tuple[object, ...], kwargs: object) -> object:
        """Tensors, OrderedDicts, or an :class:`Unbuilt` marker for other allowlisted calls."""
        name = func.qualname if isinstance(func, GlobalRef) else COMPUTED_NAME
        if name == ORDERED_DICT:
            return _ordered_dict(args, call.offset)
        if name in TENSOR_REBUILDS:
            return self.tensor(name, args, call.offset)
        if name == PARAMETER_REBUILD:
            return args[0]
        if name == "_codecs.encode":
            return _latin1(args[0], call.offset)
        why = UNSUPPORTED_REBUILDS.get(name)
        if why is not None:  # never called: a tensor kind safetensors cannot hold
            return LeftTensor(f"{name}: {why}", call.offset)
        if name == "torch.storage._load_from_bytes" and self._nested is not None:
            data = args[0]
            if isinstance(data, BytesRef):
                return self._nested(data.buf, data.start, data.stop, call.offset)
            if isinstance(data, bytes):
                return self._nested(data, 0, len(data), call.offset)
        return Unbuilt(name, call.offset)

    def on_effect(self, effect: Effect, target: object, payload: tuple[object, ...]) -> None:
        """SETITEMS fill an OrderedDict; BUILD state (``_metadata``, numpy layout) is ignored."""
        if isinstance(target, OrderedDict) and effect.opcode in ("SETITEM", "SETITEMS"):
            for k, v in zip(payload[::2], payload[1::2], strict=True):
                try:
                    target[k] = v
                except TypeError:
                    raise MalformedCheckpointError(
                        f"{effect.opcode} at byte {effect.offset}: unhashable key") from None

    # -- storages and tensors -------------------------------------------------------
    def storage(self, key: str, stype: str, numel: int, at: int) -> Storage:
        """The storage ``key`` (record checked to hold ``numel`` elements of ``stype``)."""
        found = self._storages.get(key)
        if found is not None:
            return found
        why = storage_problem(stype)
        if why is not None:
            raise UnsupportedCheckpointError(f"storage {key!r} ({stype}, byte {at}): {why}")
        short = stype.rsplit(".", 1)[1].removesuffix("Storage")
        dtype: DType | None = None
        if short != "Untyped":
            dname = STORAGE_DTYPES[short]
            assert dname is not None
            dtype = DTYPES[dname]
        if numel < 0:
            raise MalformedCheckpointError(f"storage {key!r} declares {numel} elements")
        nbytes = numel * STORAGE_TYPES[stype]
        buf, start, length = self._records(key)
        if length < nbytes:
            raise MalformedCheckpointError(
                f"storage record {key!r} holds {length} bytes, but its persistent id (byte {at}) "
                f"declares {numel} elements of {stype} ({nbytes} bytes)")
        storage = Storage(key, buf, start, nbytes, dtype, self._big_endian)
        self._storages[key] = storage
        return storage

    def window(self, root: Storage | LeftTensor, key: str, offset: int, size: int, at: int
               ) -> Storage | LeftTensor:
        """Legacy formats: storage ``key`` is ``size`` elements of ``root`` from ``offset``."""
        if isinstance(root, LeftTensor):
            return root
        found = self._storages.get(key)
        if found is not None:
            return found
        elsize = root.dtype.itemsize if root.dtype is not None else 1
        if offset < 0 or size < 0 or (offset + size) * elsize > root.nbytes:
            raise MalformedCheckpointError(
                f"storage view {key!r} (byte {at}) reaches past storage {root.key!r}")
        view = Storage(key, root.buf, root.start + offset * elsize, size * elsize, root.dtype,
                       root.big_endian)
        self._storages[key] = view
        return view

    def tensor(self, name: str, args: tuple[object, ...], at: int) -> TensorView | LeftTensor:
        """What ``name`` (a ``_rebuild_tensor*`` function) rebuilds from built ``args``."""
        if len(args) < 4:
            raise MalformedCheckpointError(f"{name} at byte {at}: too few arguments")
        storage = args[0]
        if isinstance(storage, LeftTensor):
            return LeftTensor(storage.what, at)
        if isinstance(storage, Unbuilt):
            raise UnsupportedCheckpointError(
                f"{name} at byte {at}: its storage comes from {storage.name} (a nested stream "
                "written by pickle.dumps), which is not converted")
        if not isinstance(storage, Storage):
            raise MalformedCheckpointError(f"{name} at byte {at}: first argument is not a storage")
        if name.endswith("_v3"):
            marker = args[6] if len(args) > 6 else None
            if not isinstance(marker, _TorchDType):
                raise MalformedCheckpointError(f"{name} at byte {at}: dtype argument missing")
            dtype = DTYPE_OF_TORCH.get(marker.qualname)
            if dtype is None:
                return LeftTensor(f"dtype {marker.qualname} has no safetensors equivalent", at)
        elif storage.dtype is None:
            raise MalformedCheckpointError(
                f"{name} at byte {at}: an untyped storage needs an explicit dtype")
        else:
            dtype = storage.dtype
        view = check_view(storage, dtype, args[1], args[2], args[3], at)
        meta_at = 7 if name.endswith("_v3") else 6
        if name.endswith(("_v2", "_v3")) and len(args) > meta_at and args[meta_at]:
            negate, conjugate = _tensor_bits(args[meta_at], dtype, at)
            view = replace(view, negate=negate, conjugate=conjugate)
        return view


def _tensor_bits(metadata: object, dtype: DType, at: int) -> tuple[bool, bool]:
    """(negative, conjugate) from a tensor's metadata dict, as torch 2.13 sets them.

    ``torch._C._set_tensor_metadata`` sets a bit for each key present (other
    keys are ignored); a value other than ``True`` (which torch.save never
    writes) is refused rather than guessed, as are bits torch cannot resolve.
    """
    if not isinstance(metadata, dict):
        raise MalformedCheckpointError(f"tensor at byte {at}: metadata is not a dict")
    bits = []
    for key in ("neg", "conj"):
        if key in metadata and metadata[key] is not True:
            raise UnsupportedCheckpointError(
                f"tensor at byte {at}: metadata {key!r} is {metadata[key]!r} (torch.save "
                "writes True; torch.load sets the bit for any value): refused")
        bits.append(key in metadata)
    negate, conjugate = bits
    if conjugate and not dtype.name.startswith("C"):
        raise UnsupportedCheckpointError(
            f"tensor at byte {at}: the conjugate bit on a {dtype.name} tensor "
            "(torch.load fails on it)")
    if negate and dtype.name not in NEGATABLE:
        raise UnsupportedCheckpointError(
            f"tensor at byte {at}: the negative bit on a {dtype.name} tensor "
            "(torch cannot resolve its values)")
    return negate, conjugate


def check_hashing(root: object) -> None:
    """Refuse a stream whose dicts and sets would be slow to build, before building them.

    ``root`` is a checked stream's value graph (before
    :func:`~tensorfile._picklevm._materialize.materialize`, which hashes every dict
    key and set item it builds); the bound is the scanner's own
    (:func:`~tensorfile._picklevm.machine.hashing_problem`).
    """
    problem = hashing_problem([root])
    if problem is not None:
        raise UnsupportedCheckpointError(problem)
