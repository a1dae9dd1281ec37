"""Checkpoints as torch 0.4 wrote them under Python 2, assembled opcode by opcode.

Python 2 cannot run here, so these files are built by hand the way
``cPickle`` (protocol 2) and torch 0.4's ``torch.save`` wrote them:

* the legacy layout: magic number (LONG1), protocol version 1001 (BININT2),
  ``sys_info``, the object pickle, the storage-key list, then one record per
  storage (8-byte element count, raw little-endian bytes);
* every ``str`` as SHORT_BINSTRING (BINSTRING past 255 bytes), memoized with BINPUT;
* a state dict as ``OrderedDict.__reduce__`` of Python 2.7 gives it:
  ``REDUCE(OrderedDict, ([[key, value], ...],))`` then BUILD ``{'_metadata': ...}``;
* tensors as ``_rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad, backward_hooks=None)``, storages as BINPERSID of
  ``('storage', torch.FloatStorage, key, location, numel, None)``.

LPIPS weights (``lpips`` package, ``weights/v0.1/*.pth``) are such files.
``torch.load(weights_only=True)`` reads them; the tests use it as the oracle.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence


class Py2Pickler:
    """Writes protocol 2 opcodes with a BINPUT after each memoizable value, as cPickle does."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> None:
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else (
            b"r" + struct.pack("<I", self.memo))
        self.memo += 1

    def string(self, s: str) -> None:
        raw = s.encode("ascii")
        self.out += (b"U" + bytes([len(raw)]) if len(raw) < 256
                     else b"T" + struct.pack("<i", len(raw))) + raw
        self.put()

    def integer(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif 0 <= n < 65536:
            self.out += b"M" + struct.pack("<H", n)
        elif -(2**31) <= n < 2**31:
            self.out += b"J" + struct.pack("<i", n)
        else:
            raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put()

    def ints(self, values: Sequence[int]) -> None:
        self.tuple_of([lambda v=v: self.integer(v) for v in values])

    def tuple_of(self, items: Sequence[object]) -> None:
        if not items:
            self.out += b")"
            return
        if len(items) > 3:
            self.out += b"("
        for item in items:
            item()  # type: ignore[operator]
        self.out += b"t" if len(items) > 3 else bytes([0x84 + len(items)])
        self.put()

    def stop(self) -> bytes:
        return bytes(self.out + b".")


def _single(write) -> bytes:  # type: ignore[no-untyped-def]
    p = Py2Pickler()
    write(p)
    return p.stop()


def py2_checkpoint(tensors: dict[str, tuple[list[float], Sequence[int]]], *,
                   location: str = "cpu", metadata: bool = True,
                   storage: str = "FloatStorage") -> bytes:
    """A torch 0.4 / Python 2 ``torch.save(state_dict)``: one float32 storage per tensor.

    ``tensors`` maps each name to (values, shape); strides are contiguous.
    """
    magic = _single(lambda p: p.integer(0x1950A86A20F9469CFC6C))
    version = _single(lambda p: p.integer(1001))

    def sys_info(p: Py2Pickler) -> None:
        p.out += b"}"
        p.put()
        p.out += b"("
        p.string("little_endian")
        p.out += b"\x88"
        p.string("type_sizes")
        p.out += b"}"
        p.put()
        p.out += b"("
        for name, size in (("int", 4), ("long", 8), ("short", 2)):
            p.string(name)
            p.integer(size)
        p.out += b"u"
        p.string("protocol_version")
        p.integer(1001)
        p.out += b"u"

    keys = [str(94_000_000 + 16 * i) for i in range(len(tensors))]
    p = Py2Pickler()
    p.glob("collections", "OrderedDict")
    p.out += b"]"  # the one argument: a list of [key, value] lists
    p.put()
    p.out += b"("
    for (name, (values, shape)), key in zip(tensors.items(), keys, strict=True):
        p.out += b"]"
        p.put()
        p.out += b"("
        p.string(name)
        p.glob("torch._utils", "_rebuild_tensor_v2")
        p.out += b"("
        p.out += b"("  # the persistent id tuple (6 items)
        p.string("storage")
        p.glob("torch", storage)
        p.string(key)
        p.string(location)
        p.integer(len(values))
        p.out += b"N" + b"t"
        p.put()
        p.out += b"Q"
        p.integer(0)
        p.ints(shape)
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        p.ints(strides)
        p.out += b"\x89N"  # requires_grad False, backward_hooks None
        p.out += b"t"
        p.put()
        p.out += b"R"
        p.put()
        p.out += b"e"
    p.out += b"e\x85"
    p.put()
    p.out += b"R"
    p.put()
    if metadata:
        p.out += b"}"
        p.put()
        p.string("_metadata")
        p.glob("collections", "OrderedDict")
        p.out += b"]"
        p.put()
        p.out += b"("
        p.out += b"]"
        p.put()
        p.out += b"("
        p.string("")
        p.out += b"}"
        p.put()
        p.string("version")
        p.integer(1)
        p.out += b"s" + b"e"
        p.out += b"e\x85"
        p.put()
        p.out += b"R"
        p.put()
        p.out += b"s" + b"b"
    objects = p.stop()

    def key_list(p: Py2Pickler) -> None:
        p.out += b"]"
        p.put()
        if keys:
            p.out += b"("
            for key in keys:
                p.string(key)
            p.out += b"e"

    records = b"".join(struct.pack("<q", len(values)) + struct.pack(f"<{len(values)}f", *values)
                       for values, _ in tensors.values())
    return (magic + version + _single(sys_info) + objects + _single(key_list) + records)
