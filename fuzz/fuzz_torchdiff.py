"""Differential fuzzing of the scanner's container reading, with torch.load as the oracle.

Each input is a stream of choices (see :class:`Choices`) that builds one
checkpoint from a template (a torch zip, a tar of torch < 0.4, the legacy
sequential format, a raw pickle, or any of these nested in
``torch.storage._load_from_bytes``) and mutates its structure: zip offsets,
sizes, names, flags, extra fields, central directories, zip64 records, data
descriptors; tar header formats, member names, links, duplicates; FRAME
lengths; data before and after. Every template carries a hidden payload pickle
(``fuzzpayload.run_*``) that a mutation may expose to one reader and not another.

Contract checked on every input: the real ``torch.load(weights_only=False)``
reads the file through :mod:`torch_oracle` (every global recorded, nothing
imported or run). Then

1. every global torch's loader asked for is among the globals the scan reports
   (the scan found every stream torch unpickles, up to where torch stopped).
   Where the verdict is ``error`` (the scan says it could not read the file
   completely or unambiguously) a global it did not reach is counted in
   :data:`GAPS` (printed by the replay) rather than raised;
2. a ``safe`` verdict only when torch imported nothing outside the scan's
   allowlisted globals (no ``fuzzpayload``), i.e. no file torch reads differently
   is called safe;
3. ``scan`` never raises and never unpickles (as in ``fuzz_scan.py``).

:func:`check_file` applies the same contract to a file on disk; the regression
vectors in ``spec/container-vectors/`` are replayed through it by
``tests/pickles/test_containers_vectors.py``.
"""

from __future__ import annotations

import _compat_pickle
import io
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import fuzzlib

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile.pickles import Verdict, scan

from torch_oracle import Reading, torch_reads

PAYLOAD_MODULE = "fuzzpayload"
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF

# ---------------------------------------------------------------------------
# Choices: the input bytes, read as a sequence of small decisions
# ---------------------------------------------------------------------------


class Choices:
    """Reads decisions from the input; once it runs out, every decision is 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self, n: int) -> int:
        """A number in ``range(n)``."""
        if n <= 1:
            return 0
        width = 1 if n <= 256 else 2 if n <= 65536 else 4
        raw = self.data[self.pos:self.pos + width]
        self.pos += width
        return int.from_bytes(raw.ljust(width, b"\0"), "little") % n

    def flag(self) -> bool:
        return self.int(2) == 1

    def pick(self, items: list) -> object:  # type: ignore[type-arg]
        return items[self.int(len(items))]

    def delta(self) -> int:
        return self.pick([-64, -22, -20, -8, -4, -2, -1, 1, 2, 4, 8, 16, 30, 46])  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Pickles
# ---------------------------------------------------------------------------


def _glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def payload(tag: str) -> bytes:
    """A pickle that calls ``fuzzpayload.run_<tag>()`` (never run: the oracle is inert)."""
    return b"\x80\x02" + _glob(PAYLOAD_MODULE, f"run_{tag}") + b")R."


def _text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def state_dict(key: str = "0", numel: int = 4) -> bytes:
    """A one-tensor state dict as torch.save writes it (protocol 2)."""
    pid = (b"(" + _text("storage") + _glob("torch", "FloatStorage") + _text(key) + _text("cpu")
           + b"J" + struct.pack("<i", numel) + b"tQ")
    hooks = _glob("collections", "OrderedDict") + b")R"
    tensor = (_glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00(K"
              + bytes([numel]) + b"t(K\x01t\x89" + hooks + b"tR")
    return b"\x80\x02" + _glob("collections", "OrderedDict") + b")R(" + _text("w") + tensor + b"u."


def framed(pickle_bytes: bytes, ch: Choices) -> bytes:
    """Re-frame a protocol 2 pickle as protocol 4 with a FRAME of a chosen length."""
    body = pickle_bytes[2:]
    cut = ch.int(len(body) + 1)
    length = max(0, len(body) - cut + ch.pick([0, 0, -1, 1, 3, 9, 40]))  # type: ignore[operator]
    return b"\x80\x04" + body[:cut] + b"\x95" + struct.pack("<Q", length) + body[cut:]


# ---------------------------------------------------------------------------
# Zip: a small writer whose every field can be bent
# ---------------------------------------------------------------------------


class ZEntry:
    def __init__(self, name: bytes, data: bytes) -> None:
        self.name = name
        self.local_name = name
        self.data = data
        self.flags = 0
        self.method = 0
        self.local_extra = b""
        self.central_extra = b""
        self.descriptor = False
        self.size_delta = 0  # central directory sizes
        self.local_size_delta = 0
        self.offset_delta = 0
        self.deflate = False


def write_zip(entries: list[ZEntry], ch: Choices) -> bytes:
    before = ch.pick([b"", b"", b"", payload("before"), b"junk" * 4])
    out = bytearray(before)  # type: ignore[arg-type]
    base = len(out) if ch.int(4) == 1 else 0  # offsets absolute (miniz) or relative (zipfile)
    dual = ch.int(5) == 1
    hide = dual and ch.int(2) == 0
    if dual:
        # Room before the entries, so offsets relative to the second directory
        # (the first's size less) stay positive: an entry no directory lists.
        room = sum(46 + len(e.name) + len(e.central_extra) for e in entries)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0,
                           zlib.crc32(bytes(room)), room, room, 11, 0) + b"archive/pad" + bytes(room)
    headers = []
    for e in entries:
        data = zlib.compress(e.data)[2:-4] if e.deflate else e.data
        method = 8 if e.deflate else e.method
        crc = zlib.crc32(e.data)
        flags = e.flags | (8 if e.descriptor else 0)
        headers.append(len(out) - base + e.offset_delta)
        lsize = (0, 0) if e.descriptor else ((len(data) + e.local_size_delta) & M32, len(e.data))
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0, crc,
                           *lsize, len(e.local_name), len(e.local_extra))
        out += e.local_name + e.local_extra + data
        if e.descriptor:
            out += struct.pack("<4sIII", b"PK\x07\x08", crc,
                               (len(data) + e.local_size_delta) & M32, len(e.data))
        e._written = (method, crc, len(data), flags)  # type: ignore[attr-defined]
    def directory(shift: int, swap: bool, hide: bool = False) -> bytes:
        # swap: "data.pkl" describes the payload entry's body (a second directory);
        # hide: the payload entry itself is listed by neither directory.
        by_name = {e.name: (e, off) for e, off in zip(entries, headers, strict=True)}
        cd = bytearray()
        for e, off in zip(entries, headers, strict=True):
            if hide and e.name == b"archive/xdata.bin":
                continue
            body, at = e, off
            if swap and e.name == b"archive/data.pkl" and b"archive/xdata.bin" in by_name:
                body, at = by_name[b"archive/xdata.bin"]
            method, crc, csize, flags = body._written  # type: ignore[attr-defined]
            usize = len(body.data) + (body.size_delta if body.deflate else 0)
            cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0,
                              0, crc, (csize + body.size_delta) & M32, usize & M32, len(e.name),
                              len(e.central_extra), 0, 0, 0, 0, (at + shift) & M32)
            cd += e.name + e.central_extra
        return bytes(cd)

    stated = len(out)
    if dual:
        # Two directories: the end record states the first (miniz reads it, and
        # it lists the payload as data.pkl); the second ends right before the
        # end record, with offsets relative to it (Python's zipfile reads that one).
        first = directory(0, swap=True, hide=hide)
        out += first
        second = directory(-len(first), swap=False, hide=hide)
        out += second
        cd_size = len(second)
        listed = len(entries) - (hide and any(e.name == b"archive/xdata.bin" for e in entries))
    else:
        out += directory(0, swap=False)
        cd_size = len(out) - stated
        listed = len(entries)
    count = listed + (ch.pick([0, 0, 0, -1, 1]) if ch.flag() else 0)  # type: ignore[operator]
    cd_ofs = stated - base + (ch.delta() if ch.int(6) == 1 else 0)
    size_field = cd_size + (ch.delta() if ch.int(8) == 1 else 0)
    if ch.int(4) == 1:  # zip64 end record and locator, as torch writes them
        rec = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count & M64,
                           count & M64, size_field & M64, cd_ofs & M64)
        loc_ofs = rec - base + (ch.delta() if ch.int(4) == 1 else 0)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, loc_ofs & M64, 1)
    comment = b""
    if ch.int(6) == 1:  # a second, hidden archive in the comment
        comment = hidden_zip(ch)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count & 0xFFFF, count & 0xFFFF,
                       size_field & 0xFFFFFFFF, cd_ofs & 0xFFFFFFFF,
                       len(comment) + (ch.pick([0, 0, 1, -1]) if ch.flag() else 0) & 0xFFFF)  # type: ignore[operator]
    out += comment
    out += ch.pick([b"", b"", b"", b"\0" * 7, payload("after"), b"PK\x05\x06"])  # type: ignore[operator]
    return bytes(out)


def hidden_zip(ch: Choices) -> bytes:
    inner = [ZEntry(b"archive/data.pkl", payload("hidden")), ZEntry(b"archive/version", b"3\n")]
    return write_zip(inner, Choices(b""))


def zip_template(ch: Choices) -> bytes:
    entries = [ZEntry(b"archive/data.pkl", state_dict()), ZEntry(b"archive/byteorder", b"little"),
               ZEntry(b"archive/data/0", bytes(16)), ZEntry(b"archive/version", b"3\n"),
               ZEntry(b"archive/.data/serialization_id", b"0" * 40),
               ZEntry(b"archive/xdata.bin", payload("entry"))]
    for _ in range(ch.int(6)):
        e = ch.pick(entries)
        what = ch.int(17)
        if what == 0:
            e.name = e.name.upper() if ch.flag() else e.name.replace(b"data", b"Data")  # type: ignore[attr-defined]
        elif what == 1:
            evil = ZEntry(ch.pick([b"archive/data.pkl", b"archive/DATA.PKL", b"archive/Data.pkl",  # type: ignore[arg-type]
                                   b"other/data.pkl"]), payload("dup"))
            entries.insert(ch.int(len(entries) + 1), evil)
        elif what == 2:
            e.local_name = ch.pick([b"archive/data.pkl", b"archive/xdata.bin", e.name + b"x"])  # type: ignore[attr-defined]
        elif what == 3:
            e.flags ^= ch.pick([1, 8, 0x20, 0x40, 0x800, 0x2000])  # type: ignore[attr-defined]
        elif what == 4:
            e.size_delta = ch.delta()  # type: ignore[attr-defined]
        elif what == 5:
            e.local_size_delta = ch.delta()  # type: ignore[attr-defined]
        elif what == 6:
            e.descriptor = not e.descriptor  # type: ignore[attr-defined]
        elif what == 7:
            e.offset_delta = ch.delta()  # type: ignore[attr-defined]
        elif what == 8:
            e.local_extra = struct.pack("<HH", 0xCAFE, 4) + b"abcd"  # type: ignore[attr-defined]
        elif what == 9:
            e.central_extra = struct.pack("<HH", 1, 8) + struct.pack("<Q", 0)  # type: ignore[attr-defined]
        elif what == 10:
            e.deflate = True  # type: ignore[attr-defined]
        elif what == 11:
            entries.reverse()
        elif what == 12:
            e.data = framed(e.data, ch) if e.data.startswith(b"\x80\x02") else e.data  # type: ignore[attr-defined]
        elif what == 13:
            e.data = e.data + payload("trail")  # type: ignore[attr-defined]
        elif what == 14:
            e.name = ch.pick([b"archive/xdata.pkl", b"archive/data.pkl", b"archive/constants.pkl",  # type: ignore[attr-defined]
                              b"data.pkl", b"archive\\data.pkl"])
        elif what == 15:
            e.method = ch.pick([0, 8, 12, 99])  # type: ignore[attr-defined]
        else:
            entries.remove(e)  # type: ignore[arg-type]
            if not entries:
                entries.append(ZEntry(b"archive/data.pkl", payload("last")))
    return write_zip(entries, ch)


# ---------------------------------------------------------------------------
# Tar (torch < 0.4) and the legacy sequential format
# ---------------------------------------------------------------------------


def _storages_member() -> bytes:
    count = b"\x80\x02K\x01."
    header = b"\x80\x02(K\x01" + _text("cpu") + _glob("torch", "FloatStorage") + b"t."
    return count + header + struct.pack("<q", 4) + bytes(16) + b"\x80\x02]."


def _tensors_member() -> bytes:
    header = b"\x80\x02(K\x02K\x01" + _glob("torch", "FloatTensor") + b"t."
    return b"\x80\x02K\x01." + header + struct.pack("<ii", 1, 0) + struct.pack("<qqq", 4, 1, 0)


def tar_template(ch: Choices) -> bytes:
    members = [("sys_info", b"\x80\x02}."), ("pickle", b"\x80\x02" + _text("2") + b"Q."),
               ("storages", _storages_member()), ("tensors", _tensors_member()),
               ("notes", payload("member"))]
    links: dict[str, str] = {}
    for _ in range(ch.int(4)):
        what = ch.int(6)
        if what == 0:
            members.insert(ch.int(len(members) + 1), (ch.pick(["pickle", "storages", "tensors"]),  # type: ignore[arg-type]
                                                      payload("tardup")))
        elif what == 1:
            links[ch.pick(["pickle", "storages", "tensors"])] = "notes"  # type: ignore[index]
        elif what == 2:
            i = ch.int(len(members))
            members[i] = (members[i][0], members[i][1] + payload("tartrail"))
        elif what == 3:
            members.reverse()
        elif what == 4:
            i = ch.int(len(members))
            members[i] = ("./" + members[i][0], members[i][1])
        else:
            i = ch.int(len(members))
            members[i] = (members[i][0], framed(members[i][1], ch)
                          if members[i][1].startswith(b"\x80\x02") else members[i][1])
    fmt = ch.pick([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name in links:
                info.type, info.linkname = tarfile.LNKTYPE, links.pop(name)
                tf.addfile(info)
                continue
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = bytearray(out.getvalue())
    if ch.int(3) == 1:
        polyglot(raw)
    if ch.int(3) == 1:  # v7 headers: no ustar magic, checksum still valid
        pos = 0
        while pos + 512 <= len(raw) and raw[pos:pos + 512].count(0) != 512:
            size = tarfile.nti(bytes(raw[pos + 124:pos + 136]))
            raw[pos + 257:pos + 265] = bytes(8)
            raw[pos + 148:pos + 156] = b" " * 8
            raw[pos + 148:pos + 156] = b"%06o\0 " % (sum(raw[pos:pos + 512]) & 0o777777)
            pos += 512 + (size + 511) // 512 * 512
    if ch.int(4) == 1:
        raw = raw[:ch.int(len(raw) + 1)]
    return bytes(raw)


LEGACY_MAGIC_PICKLE = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def polyglot(raw: bytearray) -> None:
    """Make the first tar header's name field a legacy torch file whose one storage
    record spans the rest of the archive (a reader that takes the file for the
    legacy format steps over every tar member), keeping the checksum valid."""
    def short(t: bytes) -> bytes:
        return b"\x8c" + bytes([len(t)]) + t

    pid = b"(" + short(b"storage") + _glob("torch", "ByteStorage") + short(b"k") + short(b"c")
    pid += b"K\x01NtQ"
    magic = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    prefix = magic + b"M\xe9\x03." + b"}." + pid + b"." + b"]" + short(b"k") + b"a."
    if len(prefix) + 8 > 100:  # the name field: the other fields must stay numbers
        return
    count = len(raw) - len(prefix) - 8
    head = prefix + struct.pack("<q", count)
    raw[0:len(head)] = head
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % (sum(raw[0:512]) & 0o777777)


def legacy_template(ch: Choices) -> bytes:
    magic = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    proto = b"\x80\x02M\xe9\x03."
    sys_info = b"\x80\x02}" + b"(" + _text("protocol_version") + b"M\xe9\x03u."
    pid = (b"(" + _text("storage") + _glob("torch", "FloatStorage") + _text("0") + _text("cpu")
           + b"K\x04Nt" + b"Q")
    objects = (b"\x80\x02" + _glob("torch._utils", "_rebuild_tensor") + b"(" + pid
               + b"K\x00(K\x04t(K\x01ttR.")
    keys = b"\x80\x02]" + _text("0") + b"a."
    parts = [magic, proto, sys_info, objects, keys]
    records = struct.pack("<q", 4) + bytes(16)
    for _ in range(ch.int(4)):
        i = ch.int(len(parts))
        what = ch.int(4)
        if what == 0:
            parts[i] = framed(parts[i], ch)
        elif what == 1:
            parts[i] = parts[i] + payload("legacytrail")
        elif what == 2:
            records = struct.pack("<q", ch.pick([0, 3, 5, 1 << 40])) + bytes(16)  # type: ignore[arg-type]
        else:
            parts.insert(i, payload("legacyextra"))
    tail = ch.pick([b"", b"", payload("afterrecords")])
    return b"".join(parts) + records + tail  # type: ignore[operator]


def nested_template(ch: Choices) -> bytes:
    inner = build(ch, depth=1)
    arg = b"C" + bytes([len(inner)]) + inner if len(inner) < 256 else (
        b"B" + struct.pack("<I", len(inner)) + inner)
    outer = (b"\x80\x02}" + _text("n") + _glob("torch.storage", "_load_from_bytes") + b"("
             + arg + b"tRs.")
    return outer


def raw_template(ch: Choices) -> bytes:
    first = ch.pick([state_dict(), b"\x80\x02}.", payload("raw")])
    data = framed(first, ch) if ch.flag() else first  # type: ignore[arg-type]
    return data + (payload("second") if ch.flag() else b"")  # type: ignore[operator]


TEMPLATES = [zip_template, tar_template, legacy_template, raw_template, nested_template]


def build(ch: Choices, depth: int = 0) -> bytes:
    templates = TEMPLATES if depth == 0 else TEMPLATES[:-1]
    return ch.pick(templates)(ch)  # type: ignore[operator]


# ---------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------


def _names(qualname: str) -> set[str]:
    """A global and its protocol < 3 renames (the C find_class applies them after ours)."""
    module, _, name = qualname.partition(".")
    out = {qualname}
    for mod in (module, qualname.rsplit(".", 1)[0]):
        name = qualname[len(mod) + 1:]
        if (mod, name) in _compat_pickle.NAME_MAPPING:
            out.add(".".join(_compat_pickle.NAME_MAPPING[mod, name]))
        if mod in _compat_pickle.IMPORT_MAPPING:
            out.add(f"{_compat_pickle.IMPORT_MAPPING[mod]}.{name}")
    return out


def compare(path: Path) -> tuple[Verdict, Reading, list[str]]:
    """Scan ``path``, read it with the oracle, return the verdict, reading and violations."""
    with fuzzlib.no_unpickling():
        report = scan(path)
    (file,) = report.files
    reading = torch_reads(path)
    reported = {g for s in file.streams for g in s.globals}
    problems = []
    for g in dict.fromkeys(reading.globals):
        if not _names(g) & reported:
            problems.append(f"torch imported {g} but the scan ({file.verdict.value}) "
                            "did not report it")
    if file.verdict is Verdict.SAFE and any(g.startswith(PAYLOAD_MODULE) for g in reading.globals):
        problems.append("safe, but torch reached the hidden payload")
    return file.verdict, reading, problems


#: Unreported globals behind an ``error`` verdict, counted, not raised (see module doc).
GAPS: dict[str, int] = {}


def check_file(path: Path) -> None:
    """The contract for one file on disk (regression vectors)."""
    verdict, reading, problems = compare(path)
    if verdict is Verdict.ERROR and not any(p.startswith("safe") for p in problems):
        for p in problems:  # the file is refused; what was not reached is only counted
            GAPS[p] = GAPS.get(p, 0) + 1
        return
    assert not problems, f"{path.name}: {problems} (torch: {reading})"


_scratch: fuzzlib.Scratch | None = None


def TestOneInput(data: bytes) -> None:
    global _scratch
    if _scratch is None:
        _scratch = fuzzlib.Scratch(".pt")
    path = _scratch.write(build(Choices(data)))
    check_file(path)


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    fuzzlib.main(TestOneInput, "torchdiff")
