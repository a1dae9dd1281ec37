"""Adapters between array libraries (numpy, torch) and raw tensor bytes.

The format core only knows dtypes, shapes and bytes. This module turns a
numpy array or torch tensor into (dtype, shape, little-endian C-order bytes)
for the writer, and raw bytes back into arrays for the reader. torch is
imported only when a torch tensor is seen or asked for.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorfile._format.dtypes import (
    DTYPES,
    DType,
    dtype_from_numpy,
    is_ml_dtype,
    known_numpy_dtype,
    numpy_dtype,
)
from tensorfile._format.header import Entry
from tensorfile.errors import (
    DeviceUnavailableError,
    FrameworkError,
    MetaTensorError,
    NotATensorError,
    SerializationError,
)

if TYPE_CHECKING:
    import torch

_LITTLE = sys.byteorder == "little"

# Unsigned integer "carriers" of each width: bytes are moved and sliced as
# these so torch dtypes that numpy lacks (bf16, fp8) need no numpy support.
_CARRIER = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def is_torch_tensor(value: object) -> bool:
    mod = type(value).__module__
    if not (mod.startswith("torch")):
        return False
    import torch

    return isinstance(value, torch.Tensor)


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise FrameworkError(
            "framework 'pt' needs torch, which is not installed (pip install torch)"
        ) from None
    return torch


def device_name(device: object) -> str:
    """The device string a reader puts tensors on, from what a caller passed.

    As the reference: ``None`` is the cpu (huggingface_hub up to 1.28 passes
    it) and an int is that cuda index. Beyond it, anything ``str()`` makes a
    torch device string (a ``torch.device``, ``"cpu:0"``, ``"meta"``) is
    taken too; ``SafeOpen`` checks it with torch.
    """
    if device is None:
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        return f"cuda:{device}"
    return str(device)


def check_device(device: str) -> None:
    """Refuse, when a file is opened, a device torch cannot reach here.

    A malformed string is torch's own ``RuntimeError``; a device of a kind this
    torch build or machine lacks (``cuda`` without CUDA) is a
    :class:`DeviceUnavailableError`, a ``RuntimeError`` as the reference's
    (which raises it at the first read, and torch's ``.to`` an
    ``AssertionError``).
    """
    torch = import_torch()
    dev = torch.device(device)
    if dev.type in ("cpu", "meta"):
        return
    is_available = getattr(getattr(torch, dev.type, None), "is_available", None)
    if callable(is_available) and not is_available():
        raise DeviceUnavailableError(
            f"device {device!r}: this torch ({torch.__version__}) has no {dev.type} device here"
        )


# --------------------------------------------------------------------------
# Writing: array -> (Entry, bytes)
# --------------------------------------------------------------------------


def numpy_entry(name: str, arr: np.ndarray[Any, Any]) -> tuple[Entry, memoryview]:
    """The header entry and little-endian C-order bytes of a numpy array.

    Non-contiguous and big-endian arrays are copied into the right layout
    (one tensor at a time), never written as their raw memory.
    """
    if not isinstance(arr, np.ndarray):
        raise NotATensorError(
            f"tensor {name!r}: expected a numpy array, got {type(arr).__name__}"
        )
    if arr.dtype.hasobject:
        raise SerializationError(f"tensor {name!r}: object arrays cannot be saved")
    # Every plain dtype is in the table (F4, packed, never is).
    dt = known_numpy_dtype(arr.dtype)
    if dt is None:
        f4 = DTYPES["F4"]
        if is_ml_dtype(arr.dtype) and arr.dtype == numpy_dtype(f4):
            return Entry(name, f4, tuple(int(d) for d in arr.shape)), _pack_f4(name, arr)
        dt = dtype_from_numpy(arr.dtype)
    want = numpy_dtype(dt)
    if arr.dtype != want:  # big-endian input
        arr = arr.astype(want)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # ascontiguousarray would turn 0-d into 1-d
    return Entry(name, dt, arr.shape), _byte_view(arr)  # (numpy's shape: a tuple of ints)


def _pack_f4(name: str, arr: np.ndarray[Any, Any]) -> memoryview:
    """Two float4_e2m1fn codes per byte, the first in the low nibble (torch's packing)."""
    if arr.size % 2:
        raise SerializationError(
            f"tensor {name!r}: {arr.size} F4 values do not fill whole bytes"
        )
    codes = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    packed = (codes[0::2] & 0x0F) | ((codes[1::2] & 0x0F) << 4)
    return _byte_view(packed)


def _byte_view(arr: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of C-contiguous ``arr``, flat."""
    if arr.size == 0:
        return memoryview(b"")
    try:
        # A quarter of the cost of three numpy calls, for the formats a
        # memoryview can cast (not complex, ml_dtypes' or explicit byte orders).
        return memoryview(arr).cast("B")  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return arr.reshape(-1).view(np.uint8).data


_TORCH_TO_DTYPE: dict[Any, DType] | None = None


def torch_dtype_table() -> dict[Any, DType]:
    global _TORCH_TO_DTYPE
    if _TORCH_TO_DTYPE is None:
        torch = import_torch()
        table = {}
        for d in DTYPES.values():
            if d.torch_name and hasattr(torch, d.torch_name):
                table[getattr(torch, d.torch_name)] = d
        _TORCH_TO_DTYPE = table
    return _TORCH_TO_DTYPE


def torch_dtype(dt: DType) -> Any:
    torch = import_torch()
    if dt.torch_name is None or not hasattr(torch, dt.torch_name):
        raise FrameworkError(f"dtype {dt.name} has no torch equivalent in torch {torch.__version__}")
    return getattr(torch, dt.torch_name)


def torch_entry(name: str, t: torch.Tensor) -> tuple[Entry, memoryview]:
    """The header entry and bytes of a torch tensor (moved to CPU, made contiguous)."""
    torch = import_torch()
    if t.layout != torch.strided:
        raise SerializationError(
            f"tensor {name!r}: {t.layout} tensors cannot be saved; call .to_dense() first"
        )
    dt = torch_dtype_table().get(t.dtype)
    if dt is None:
        raise SerializationError(f"tensor {name!r}: torch dtype {t.dtype} has no safetensors equivalent")
    t = t.detach()
    if t.device.type == "meta":
        raise MetaTensorError(
            f"tensor {name!r} is on the meta device and has no data to write "
            "(Cannot copy out of meta tensor); materialize it first"
        )
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    shape = tuple(int(d) for d in t.shape)
    if dt.name == "F4" and shape:
        # float4_e2m1fn_x2 packs two values per element; the header counts values.
        shape = (*shape[:-1], shape[-1] * 2)
    if t.numel() == 0:
        return Entry(name, dt, shape), memoryview(b"")
    raw = t.reshape(-1).view(torch.uint8)
    if not _LITTLE and dt.itemsize > 1:
        raw = raw.view(-1, dt.itemsize).flip(1).reshape(-1)
    return Entry(name, dt, shape), raw.numpy().data


class TensorSpec:
    """One tensor as raw memory: ``safetensors.TensorSpec`` (what its
    ``serialize``/``serialize_file`` take).

    ``dtype`` is a constructor-style name (``"float32"``, ``"bfloat16"``,
    ``"float4_e2m1fn_x2"``...); :attr:`dtype` is then the header's code
    (``"F32"``). ``data_ptr`` is an address in this process that must stay
    valid for ``data_len`` bytes while the spec is written: the caller keeps
    the owner alive, as with the reference. For ``float4_e2m1fn_x2`` (two
    values a byte) the last dimension given is doubled, as the reference does.
    """

    __slots__ = ("_dtype", "_shape", "data_len", "data_ptr")

    def __init__(self, *, dtype: str, shape: Any, data_ptr: int, data_len: int) -> None:
        dt = _SPEC_DTYPES.get(dtype) if isinstance(dtype, str) else None
        if dt is None:
            raise SerializationError(
                f"Unknown dtype {dtype!r}. Supported dtypes: {', '.join(_SPEC_DTYPES)}"
            )
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise SerializationError(f"TensorSpec shape {dims} has a negative dimension")
        if dt.name == "F4" and dims:
            dims[-1] *= 2
        if int(data_ptr) < 0 or int(data_len) < 0:
            raise SerializationError("TensorSpec data_ptr and data_len must be non-negative")
        self._dtype = dt
        self._shape = dims
        self.data_ptr = int(data_ptr)
        self.data_len = int(data_len)

    @property
    def dtype(self) -> str:
        return self._dtype.name

    @property
    def shape(self) -> list[int]:
        return list(self._shape)

    def __repr__(self) -> str:
        return (
            f"TensorSpec(dtype={self.dtype!r}, shape={self._shape}, "
            f"data_ptr={self.data_ptr}, data_len={self.data_len})"
        )


#: Constructor-style dtype names TensorSpec accepts (the reference's list).
_SPEC_DTYPES: dict[str, DType] = {
    name: DTYPES[code]
    for name, code in (
        ("bool", "BOOL"), ("int8", "I8"), ("uint8", "U8"), ("int16", "I16"),
        ("uint16", "U16"), ("int32", "I32"), ("uint32", "U32"), ("int64", "I64"),
        ("uint64", "U64"), ("float16", "F16"), ("float32", "F32"), ("float64", "F64"),
        ("bfloat16", "BF16"), ("float8_e4m3fn", "F8_E4M3"), ("float8_e4m3fnuz", "F8_E4M3FNUZ"),
        ("float8_e5m2", "F8_E5M2"), ("float8_e5m2fnuz", "F8_E5M2FNUZ"),
        ("float8_e8m0fnu", "F8_E8M0"), ("float4_e2m1fn_x2", "F4"), ("complex64", "C64"),
    )
}


def spec_entry(name: str, spec: TensorSpec) -> tuple[Entry, memoryview]:
    """The header entry and bytes a TensorSpec points at (read in place, no copy)."""
    import ctypes

    shape = tuple(spec._shape)
    count = 1
    for d in shape:
        count *= d
    want = spec._dtype.nbytes(count)
    if spec.data_len != want or (want and not spec.data_ptr):
        raise SerializationError(
            f"tensor {name!r}: {spec._dtype.name}{list(shape)} needs {want} bytes, "
            f"the spec gives {spec.data_len} at address {spec.data_ptr:#x}"
        )
    if want == 0:
        return Entry(name, spec._dtype, shape), memoryview(b"")
    raw = (ctypes.c_ubyte * want).from_address(spec.data_ptr)
    return Entry(name, spec._dtype, shape), memoryview(raw).cast("B")


def tensor_entry(name: str, value: object) -> tuple[Entry, memoryview]:
    if isinstance(value, np.ndarray):
        return numpy_entry(name, value)
    if is_torch_tensor(value):
        return torch_entry(name, value)  # type: ignore[arg-type]
    if isinstance(value, TensorSpec):
        return spec_entry(name, value)
    raise NotATensorError(
        f"tensor {name!r}: expected a numpy array, torch tensor or TensorSpec, "
        f"got {type(value).__name__}"
    )


# --------------------------------------------------------------------------
# Reading: bytes -> array
# --------------------------------------------------------------------------


def _shaped(arr: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """``arr.reshape(shape)``; shapes numpy cannot hold (more than 64 dimensions in
    numpy 2, a dimension over 2**63 - 1 in an empty tensor) are valid in the
    format, so they are a FrameworkError, not a crash."""
    try:
        return arr.reshape(shape)
    except ValueError as e:
        raise FrameworkError(
            f"a tensor of {len(shape)} dimensions {list(shape)!s:.60} cannot be a numpy array: {e}"
        ) from None


def numpy_view(buf: Any, offset: int, dt: DType, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """A numpy array over ``buf[offset:]`` without copying (sub-byte dtypes are unpacked)."""
    count = 1
    for d in shape:
        count *= d
    if dt.sub_byte:
        return _unpack_sub_byte(buf, offset, dt, shape, count)
    arr = np.frombuffer(buf, dtype=numpy_dtype(dt), count=count, offset=offset)
    return _shaped(arr, shape)


def _unpack_sub_byte(
    buf: Any, offset: int, dt: DType, shape: tuple[int, ...], count: int
) -> np.ndarray[Any, Any]:
    if dt.bits != 4:
        raise FrameworkError(
            f"dtype {dt.name} cannot be viewed as a numpy array; read its raw bytes instead"
        )
    packed = np.frombuffer(buf, dtype=np.uint8, count=count // 2, offset=offset)
    codes = np.empty(count, dtype=np.uint8)
    codes[0::2] = packed & 0x0F  # first value in the low nibble, as torch packs it
    codes[1::2] = packed >> 4
    # float4_e2m1fn stores the 4-bit code in the low bits of a byte.
    return _shaped(codes.view(numpy_dtype(dt)), shape)


def carrier_view(buf: Any, offset: int, dt: DType, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The tensor as unsigned integers of the same width (for byte moves and slicing)."""
    count = 1
    for d in shape:
        count *= d
    if dt.sub_byte:
        raise FrameworkError(f"dtype {dt.name} cannot be sliced element-wise")
    flat = np.frombuffer(
        buf, dtype=np.dtype(_CARRIER[dt.itemsize]).newbyteorder("<"), count=count, offset=offset
    )
    return _shaped(flat, shape)


def torch_from_carrier(arr: np.ndarray[Any, Any], dt: DType, shape: tuple[int, ...]) -> Any:
    """A torch tensor sharing memory with a carrier array (a writable buffer)."""
    torch = import_torch()
    tdt = torch_dtype(dt)
    shape = _torch_shape(dt, shape)
    if arr.size == 0:
        return torch.empty(shape, dtype=tdt)
    if not _LITTLE and dt.itemsize > 1:
        arr = arr.byteswap()
    t = torch.from_numpy(arr.reshape(-1).view(np.uint8)).view(tdt)
    return t.reshape(shape)


def _torch_shape(dt: DType, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a tensor; FrameworkError where torch cannot hold it.

    torch packs F4 two values per element along the last dimension, and its
    sizes are signed 64-bit; a valid file may still describe tensors outside
    either (the format allows any u64 dimension of an empty tensor).
    """
    if any(d >= 2**63 for d in shape):
        raise FrameworkError(f"shape {list(shape)} has a dimension too large for torch")
    if dt.name != "F4" or not shape:
        return shape
    if shape[-1] % 2:
        raise FrameworkError(
            f"F4 shape {list(shape)}: torch's float4_e2m1fn_x2 needs an even last dimension"
        )
    return (*shape[:-1], shape[-1] // 2)


def torch_view(buf: Any, offset: int, dt: DType, shape: tuple[int, ...], nbytes: int) -> Any:
    """A torch tensor over a writable buffer without copying when aligned."""
    torch = import_torch()
    tdt = torch_dtype(dt)
    tshape = _torch_shape(dt, shape)
    if nbytes == 0:
        return torch.empty(tshape, dtype=tdt)
    t = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
    if offset % dt.itemsize:
        # Misaligned data (a header whose length is not a multiple of 8):
        # reinterpreting it in place is undefined for wide dtypes, so copy.
        t = t.clone()
    if not _LITTLE and dt.itemsize > 1:
        t = t.view(-1, dt.itemsize).flip(1).reshape(-1)
    return t.view(tdt).reshape(tshape)


# --------------------------------------------------------------------------
# Frameworks read and written through numpy arrays (jax, tensorflow, paddle, mlx)
# --------------------------------------------------------------------------

#: Framework names safe_open accepts for them (the reference's) -> canonical name.
VIA_NUMPY = {
    "flax": "jax", "jax": "jax", "tf": "tensorflow", "tensorflow": "tensorflow",
    "paddle": "paddle", "mlx": "mlx",
}
_PIP = {"jax": "jax", "tensorflow": "tensorflow", "paddle": "paddlepaddle", "mlx": "mlx"}


def import_framework(name: str) -> Any:
    """The framework's module (``jax``, ``tensorflow``, ``paddle``, ``mlx.core``)."""
    import importlib

    module = "mlx.core" if name == "mlx" else name
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FrameworkError(
            f"framework {name!r} is not installed (pip install 'tensorfile[{name}]', "
            f"which installs {_PIP[name]})"
        ) from None


def from_numpy(framework: str, arr: np.ndarray[Any, Any], device: str = "cpu") -> Any:
    """A framework array holding ``arr``'s values (see each module's docstring for
    whether it shares ``arr``'s memory)."""
    fw = import_framework(framework)
    if framework == "jax":
        # device_put wraps an aligned host array in place on the cpu (jax
        # arrays are immutable, so a read-only map is safe to share) and
        # copies otherwise.
        return fw.device_put(arr)
    if framework == "tensorflow":
        return fw.convert_to_tensor(arr)
    if framework == "paddle":
        # paddle tensors are writable: never hand one a read-only map.
        if arr.dtype.name in _PADDLE_VIA_BITS:
            # to_tensor does not take ml_dtypes arrays: move the bits, then reinterpret.
            bits = fw.to_tensor(arr.view(_CARRIER[arr.dtype.itemsize]), place=device)
            return bits.view(getattr(fw, arr.dtype.name))
        return fw.to_tensor(arr, place=device)
    if arr.dtype.name in _MLX_VIA_BITS:
        # mx.array does not take ml_dtypes arrays: move the bits, then reinterpret.
        return fw.array(arr.view(_CARRIER[arr.dtype.itemsize])).view(getattr(fw, arr.dtype.name))
    return fw.array(arr)


_PADDLE_VIA_BITS = frozenset({"bfloat16", "float8_e4m3fn", "float8_e5m2"})
_MLX_VIA_BITS = frozenset({"bfloat16"})


def to_numpy(framework: str, name: str, value: Any) -> np.ndarray[Any, Any]:
    """A host numpy array of a framework array's values (no copy where it is on the host)."""
    if isinstance(value, np.ndarray):
        return value
    fw = import_framework(framework)
    if framework == "jax":
        ok = isinstance(value, fw.Array)
    elif framework == "tensorflow":
        ok = isinstance(value, (fw.Tensor, fw.Variable))
    elif framework == "paddle":
        ok = isinstance(value, fw.Tensor)
    else:
        ok = isinstance(value, fw.array)
    if not ok:
        raise NotATensorError(
            f"tensor {name!r}: expected a {framework} array, got {type(value).__name__}"
        )
    if framework == "tensorflow":
        return np.asarray(value.numpy())
    if framework == "paddle":
        return _paddle_numpy(fw, value)
    if framework == "mlx" and str(value.dtype) in ("mlx.core.bfloat16",):
        import ml_dtypes

        return np.asarray(value.view(fw.uint16)).view(ml_dtypes.bfloat16)
    return np.asarray(value)


def _paddle_numpy(paddle: Any, t: Any) -> np.ndarray[Any, Any]:
    t = t.detach().cpu()
    for name in _PADDLE_VIA_BITS:
        if t.dtype == getattr(paddle, name):
            # paddle hands these out as raw unsigned integers (or not at all):
            # take the bits and give them their type back.
            import ml_dtypes

            width = _CARRIER[t.element_size()]
            bits = t.view(getattr(paddle, np.dtype(width).name))
            return np.asarray(bits.numpy()).view(getattr(ml_dtypes, name))
    return np.asarray(t.numpy())
