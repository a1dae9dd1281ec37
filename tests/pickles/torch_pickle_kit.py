"""Hand-assembled torch checkpoints for the converter tests (no torch needed to build them).

Torch-written files cover what ``torch.save`` produces; these cover what it
cannot be asked to produce (a ``cuda:0`` location on a CPU-only machine, a
big-endian file, views past their storage, short or missing records, odd
persistent ids) with exact control over every opcode. Loaded by path from the
test modules (``load_kit()``) so the tests need no package layout.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Opcode helpers shared with the scanner tests' kit (same folder, on sys.path).
from pickle_kit import binbytes, glob, text  # noqa: F401  (re-exported: kit.binbytes)

# -- opcodes (protocol 2: no frames, so byte edits keep streams valid) -------------
MARK, STOP, TUPLE, REDUCE, BINPERSID = b"(", b".", b"t", b"R", b"Q"
EMPTY_DICT, EMPTY_TUPLE, EMPTY_LIST, SETITEMS, APPENDS = b"}", b")", b"]", b"u", b"e"
NEWFALSE, NONE, PROTO2 = b"\x89", b"N", b"\x80\x02"


def integer(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(items: Iterable[bytes]) -> bytes:
    return MARK + b"".join(items) + TUPLE


def ints(values: Sequence[int]) -> bytes:
    return tup(integer(v) for v in values)


def storage(key: str, stype: str = "FloatStorage", numel: int = 4, location: str = "cpu",
            module: str = "torch", legacy_view: bytes | None = None) -> bytes:
    """BINPERSID on ('storage', <stype>, key, location, numel[, view])."""
    extra = [legacy_view] if legacy_view is not None else []
    return tup([text("storage"), glob(module, stype), text(key), text(location),
                integer(numel), *extra]) + BINPERSID


def tensor_v2(pid: bytes, offset: int, size: Sequence[int], stride: Sequence[int]) -> bytes:
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(
        [pid, integer(offset), ints(size), ints(stride), NEWFALSE, hooks]) + REDUCE


def tensor_v1(pid: bytes, offset: int, size: Sequence[int], stride: Sequence[int]) -> bytes:
    return glob("torch._utils", "_rebuild_tensor") + tup(
        [pid, integer(offset), ints(size), ints(stride)]) + REDUCE


def dict_of(pairs: Iterable[tuple[str, bytes]]) -> bytes:
    body = b"".join(text(k) + v for k, v in pairs)
    return EMPTY_DICT + MARK + body + SETITEMS


def stream(body: bytes) -> bytes:
    return PROTO2 + body + STOP


@dataclass
class Checkpoint:
    """A state dict assembled from pieces: ``pickle`` bytes plus raw ``records``."""

    pickle: bytes
    records: dict[str, bytes] = field(default_factory=dict)
    byteorder: str | None = "little"

    def zip_bytes(self, prefix: str = "archive", omit: Iterable[str] = ()) -> bytes:
        out = io.BytesIO()
        skip = set(omit)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            z.writestr(f"{prefix}/data.pkl", self.pickle)
            if self.byteorder is not None:
                z.writestr(f"{prefix}/byteorder", self.byteorder)
            for key, data in self.records.items():
                if key not in skip:
                    z.writestr(f"{prefix}/data/{key}", data)
            z.writestr(f"{prefix}/version", "3\n")
        return out.getvalue()

    def legacy_bytes(self, element_sizes: dict[str, int], little_endian: bool = True) -> bytes:
        magic = stream(integer(0x1950A86A20F9469CFC6C))
        proto = stream(integer(1001))
        sys_info = stream(dict_of([
            ("protocol_version", integer(1001)),
            ("little_endian", b"\x88" if little_endian else NEWFALSE),
        ]))
        keys = sorted(self.records)
        key_list = stream(EMPTY_LIST + MARK + b"".join(text(k) for k in keys) + APPENDS)
        body = b"".join(
            struct.pack("<q", len(self.records[k]) // element_sizes[k]) + self.records[k]
            for k in keys)
        return magic + proto + sys_info + self.pickle + key_list + body


def tar_checkpoint(values: dict[str, list[float]]) -> bytes:
    """torch < 0.4's tar layout: one FloatStorage and one contiguous 1-d tensor per name."""
    storages = [stream(integer(len(values)))]
    tensors = [stream(integer(len(values)))]
    refs = []
    for i, (name, data) in enumerate(values.items()):
        skey, tkey = 100 + i, 200 + i  # ints in the headers, digit strings as persistent ids
        storages.append(stream(tup([integer(skey), text("cpu"), glob("torch", "FloatStorage")])))
        storages.append(struct.pack("<q", len(data)) + struct.pack(f"<{len(data)}f", *data))
        tensors.append(stream(tup([integer(tkey), integer(skey), glob("torch", "FloatTensor")])))
        tensors.append(struct.pack("<ii", 1, 0) + struct.pack("<qqq", len(data), 1, 0))
        refs.append((name, text(str(tkey)) + b"Q"))
    storages.append(stream(EMPTY_LIST))
    members = {
        "sys_info": stream(dict_of([("protocol_version", integer(1001)),
                                    ("little_endian", b"\x88")])),
        "pickle": stream(dict_of(refs)),
        "storages": b"".join(storages),
        "tensors": b"".join(tensors),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
