"""The dtype table of the safetensors format.

Each dtype has a header name, a width in bits, and a *rank*: the position of
the dtype in the reference implementation's ``Dtype`` enum. The reference
writer orders tensors by descending rank and then by name, which puts wider
types first so every tensor starts at a multiple of its element size;
tensorfile uses the same rank so its output is byte-identical.

numpy has no native bf16/fp8/fp4/fp6 types; ``ml_dtypes`` supplies them. Sub-byte
dtypes (F4, F6_*) are packed: the header shape counts logical elements, the
data holds ``numel * bits / 8`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensorfile.errors import InvalidDtypeError, SerializationError

if TYPE_CHECKING:
    # Imported where an array is made: reading a header, hashing or signing
    # need the table, not numpy (about 0.1 s of every command's start-up).
    import numpy as np


@dataclass(frozen=True, slots=True)
class DType:
    name: str
    bits: int
    rank: int
    #: numpy dtype name (numpy builtin or ml_dtypes attribute), or None.
    numpy_name: str | None
    #: torch dtype attribute name, or None where torch has none.
    torch_name: str | None

    @property
    def itemsize(self) -> int:
        """Bytes per element for byte-sized dtypes; 1 for packed sub-byte dtypes."""
        return max(1, self.bits // 8)

    @property
    def sub_byte(self) -> bool:
        return self.bits < 8

    def nbytes(self, numel: int) -> int:
        """Bytes occupied by ``numel`` elements. Callers check divisibility first."""
        return numel * self.bits // 8


# Ranks follow the reference enum order (ascending): BOOL, F4, F6_E2M3, F6_E3M2,
# U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16,
# I32, U32, F32, C64, F64, I64, U64. Checked against safetensors 0.8.0 output in
# tests/format/test_interop.py.
_TABLE: tuple[DType, ...] = (
    DType("BOOL", 8, 0, "bool", "bool"),
    DType("F4", 4, 1, "float4_e2m1fn", "float4_e2m1fn_x2"),
    DType("F6_E2M3", 6, 2, "float6_e2m3fn", None),
    DType("F6_E3M2", 6, 3, "float6_e3m2fn", None),
    DType("U8", 8, 4, "uint8", "uint8"),
    DType("I8", 8, 5, "int8", "int8"),
    DType("F8_E5M2", 8, 6, "float8_e5m2", "float8_e5m2"),
    DType("F8_E4M3", 8, 7, "float8_e4m3fn", "float8_e4m3fn"),
    DType("F8_E8M0", 8, 8, "float8_e8m0fnu", "float8_e8m0fnu"),
    DType("F8_E4M3FNUZ", 8, 9, "float8_e4m3fnuz", "float8_e4m3fnuz"),
    DType("F8_E5M2FNUZ", 8, 10, "float8_e5m2fnuz", "float8_e5m2fnuz"),
    DType("I16", 16, 11, "int16", "int16"),
    DType("U16", 16, 12, "uint16", "uint16"),
    DType("F16", 16, 13, "float16", "float16"),
    DType("BF16", 16, 14, "bfloat16", "bfloat16"),
    DType("I32", 32, 15, "int32", "int32"),
    DType("U32", 32, 16, "uint32", "uint32"),
    DType("F32", 32, 17, "float32", "float32"),
    DType("C64", 64, 18, "complex64", "complex64"),
    DType("F64", 64, 19, "float64", "float64"),
    DType("I64", 64, 20, "int64", "int64"),
    DType("U64", 64, 21, "uint64", "uint64"),
)

DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}


def dtype_from_name(name: object) -> DType:
    """The DType called ``name`` in a header, or InvalidDtypeError."""
    if isinstance(name, str):
        found = DTYPES.get(name)
        if found is not None:
            return found
    raise InvalidDtypeError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")


_ML_DTYPES = frozenset(
    {
        "bfloat16",
        "float8_e5m2",
        "float8_e4m3fn",
        "float8_e8m0fnu",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float4_e2m1fn",
        "float6_e2m3fn",
        "float6_e3m2fn",
    }
)


def numpy_dtype(dt: DType) -> np.dtype[Any]:
    """The little-endian numpy dtype that views this dtype's bytes."""
    # Made once per dtype (by name: hashing the dataclass costs more than the
    # look-up): every saved and every read tensor asks.
    found = _NUMPY_DTYPES.get(dt.name)
    if found is None:
        found = _NUMPY_DTYPES[dt.name] = _make_numpy_dtype(dt)
    return found


_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {}


def _make_numpy_dtype(dt: DType) -> np.dtype[Any]:
    import numpy as np

    assert dt.numpy_name is not None
    if dt.numpy_name in _ML_DTYPES:
        import ml_dtypes

        found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, dt.numpy_name))
        return found
    return np.dtype(dt.numpy_name).newbyteorder("<")


#: numpy dtype -> format dtype, filled lazily: numpy's own dtypes on first
#: use, ml_dtypes' only once an array of theirs is seen. Importing ml_dtypes
#: costs up to 0.6 s (0.7.0), so a save of plain float32 must not pay for it.
_FROM_NUMPY: dict[np.dtype[Any], DType] = {}
_ML_LOADED = False


def is_ml_dtype(npdt: np.dtype[Any]) -> bool:
    """True for a dtype that ml_dtypes defines (bf16, fp8, fp4, ...)."""
    return getattr(npdt.type, "__module__", "") == "ml_dtypes"


def _fill(ml: bool) -> None:
    for d in _TABLE:
        if d.numpy_name is None or d.sub_byte or (d.numpy_name in _ML_DTYPES) != ml:
            continue
        try:
            npd = numpy_dtype(d)
        except (ImportError, AttributeError):  # an ml_dtypes too old for this dtype
            continue
        _FROM_NUMPY[npd] = d
        _FROM_NUMPY[npd.newbyteorder(">")] = d


def known_numpy_dtype(npdt: np.dtype[Any]) -> DType | None:
    """:func:`dtype_from_numpy` for dtypes already in the table, else None
    (a sub-byte dtype, or one of ml_dtypes' not seen yet)."""
    if not _FROM_NUMPY:
        _fill(ml=False)
    return _FROM_NUMPY.get(npdt)


def dtype_from_numpy(npdt: np.dtype[Any]) -> DType:
    """The format dtype of a numpy array dtype (either byte order)."""
    global _ML_LOADED
    if not _FROM_NUMPY:
        _fill(ml=False)
    found = _FROM_NUMPY.get(npdt)
    if found is None and not _ML_LOADED and is_ml_dtype(npdt):
        _ML_LOADED = True  # the array exists, so ml_dtypes is imported already
        _fill(ml=True)
        found = _FROM_NUMPY.get(npdt)
    if found is None:
        raise SerializationError(f"numpy dtype {npdt} has no safetensors equivalent")
    return found
