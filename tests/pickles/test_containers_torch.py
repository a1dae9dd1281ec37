"""Container differentials, each checked against the real torch.load in the same test.

Every test builds a file two readers can read differently (with zipfile,
tarfile and struct), asks the real ``torch.load(weights_only=False)`` what it
reaches, through the inert recording unpickler of ``fuzz/torch_oracle.py``
(nothing the file names is imported or run), and checks the scan: it is never
``safe``, it names the ambiguity, and it reports every global torch reached.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from pickle_kit import glob, proto, state_dict, text

from tensorfile._report import FileReport
from tensorfile.pickles import Verdict, scan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
from torch_oracle import Reading, numpy_reads, torch_reads

pytest.importorskip("torch")

MAGIC = proto(2) + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def payload(tag: str) -> bytes:
    """Calls ``fuzzpayload.<tag>()``: the oracle records it, nothing runs."""
    return proto(2) + glob("fuzzpayload", tag) + b")R."


def check(tmp_path: Path, data: bytes, tag: str, *, problem: str | None = None
          ) -> tuple[FileReport, Reading]:
    """torch reaches ``fuzzpayload.<tag>``; the scan is not safe, reports it (and ``problem``)."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    reading = torch_reads(path)
    assert f"fuzzpayload.{tag}" in reading.globals, reading
    (file,) = scan(path).files
    assert file.verdict is not Verdict.SAFE
    reported = {g for s in file.streams for g in s.globals}
    assert set(reading.globals) <= reported, (reading.globals, reported)
    if problem is not None:
        messages = " | ".join(f"{s.error} {[f.reason for f in s.findings]}" for s in file.streams)
        assert problem in messages, messages
    return file, reading


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


def _central(data: bytes) -> tuple[int, int, int]:
    """(central directory offset, its size, end record offset) of a zipfile-written zip."""
    eocd = data.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", data, eocd + 12)
    return offset, size, eocd


# -- zip -------------------------------------------------------------------------


def test_stated_directory_offset_wins_over_end_minus_size(tmp_path: Path) -> None:
    """miniz reads the directory where the end record says; zipfile where it ends.

    Two directories: the first (where the offset points) lists the payload, the
    second (right before the end record) the benign pickle.
    """
    real = _zip([("archive/data.pkl", payload("stated_offset")), ("archive/version", b"3\n")])
    decoy = _zip([("archive/data.pkl", state_dict("w")), ("archive/version", b"3\n")])
    r_ofs, r_size, _ = _central(real)
    d_ofs, d_size, d_eocd = _central(decoy)
    assert r_size == d_size  # same names: the stated size fits both directories
    # Layout: real local headers, decoy local headers, real directory, decoy
    # directory, end record (offset: the real directory; size: the decoy's).
    decoy_cd = bytearray(decoy[d_ofs:d_eocd])
    at = 0
    while at < len(decoy_cd):  # zipfile adds (end - size - offset) = r_size to each offset
        (loff,) = struct.unpack_from("<I", decoy_cd, at + 42)
        struct.pack_into("<I", decoy_cd, at + 42, loff + r_ofs - r_size)
        nlen, xlen, clen = struct.unpack_from("<HHH", decoy_cd, at + 28)
        at += 46 + nlen + xlen + clen
    real_cd_at = r_ofs + d_ofs
    data = (real[:r_ofs] + decoy[:d_ofs] + real[r_ofs:r_ofs + r_size] + bytes(decoy_cd)
            + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, d_size, real_cd_at, 0))
    # zipfile follows "end record minus size" and reads the decoy...
    assert zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl") == state_dict("w")
    # ...torch the directory the record names, with the payload.
    check(tmp_path, data, "stated_offset", problem="puts the central directory at byte")


def test_names_equal_ignoring_case_are_ambiguous(tmp_path: Path) -> None:
    data = _zip([("archive/DATA.PKL", payload("upper_case")), ("archive/version", b"3\n")])
    check(tmp_path, data, "upper_case")  # miniz finds data.pkl ignoring case
    both = _zip([("archive/Data.pkl", payload("mixed_case")), ("archive/data.pkl",
                state_dict("w")), ("archive/version", b"3\n")])
    path = tmp_path / "both.pt"
    path.write_bytes(both)
    (file,) = scan(path).files
    assert file.verdict is not Verdict.SAFE
    assert any("when case is ignored" in (s.error or "") for s in file.streams)
    assert "fuzzpayload.mixed_case" in {g for s in file.streams for g in s.globals}


def test_duplicate_names_are_ambiguous(tmp_path: Path) -> None:
    entries = [("archive/data.pkl", payload("first_copy")), ("archive/data.pkl", state_dict("w")),
               ("archive/version", b"3\n")]
    with pytest.warns(UserWarning):
        data = _zip(entries)
    check(tmp_path, data, "first_copy", problem="appears twice")


def test_local_and_central_names_and_sizes_must_agree(tmp_path: Path) -> None:
    data = bytearray(_zip([("archive/data.pkl", payload("local_name")), ("archive/version", b"3\n")]))
    at = data.index(b"archive/data.pkl")  # the local header's copy
    data[at:at + 16] = b"archive/data.pkx"
    check(tmp_path, bytes(data), "local_name", problem="its local header names it")
    sized = bytearray(_zip([("archive/data.pkl", payload("local_size")), ("archive/version", b"3\n")]))
    struct.pack_into("<I", sized, 18, 5)  # local compressed size
    check(tmp_path, bytes(sized), "local_size", problem="sizes disagree")


def test_trailing_data_and_a_second_end_record(tmp_path: Path) -> None:
    data = _zip([("archive/data.pkl", payload("trailing")), ("archive/version", b"3\n")])
    check(tmp_path, data + b"\0" * 9, "trailing", problem="follow the end record")
    # An archive in the comment: its end record is the last one, so miniz reads
    # its directory (at the wrong offsets: torch fails) while the first one
    # still describes a readable archive: never safe, both directories scanned.
    hidden = _zip([("archive/data.pkl", state_dict("w")), ("archive/version", b"3\n")])
    with_comment = bytearray(data)
    struct.pack_into("<H", with_comment, len(data) - 2, len(hidden))
    path = tmp_path / "comment.pt"
    path.write_bytes(bytes(with_comment) + hidden)
    assert torch_reads(path).error is not None
    (file,) = scan(path).files
    assert file.verdict is not Verdict.SAFE
    assert "fuzzpayload.trailing" in {g for s in file.streams for g in s.globals}


def test_zip64_locator_must_point_before_itself(tmp_path: Path) -> None:
    path = tmp_path / "z64.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload("zip64"))
        zf.writestr("archive/version", "3\n")
    data = bytearray(path.read_bytes())
    cd, size, eocd = _central(bytes(data))
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 2, 2, size, cd)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, cd + size, 1)
    zip64 = bytes(data[:cd + size]) + record + locator + bytes(data[eocd:])
    path.write_bytes(zip64)
    assert "fuzzpayload.zip64" in torch_reads(path).globals
    assert scan(path).files[0].verdict is not Verdict.SAFE  # a payload, read the same by all
    assert not any(s.error for s in scan(path).files[0].streams)
    # A second zip64 record the locator points at (miniz) while zipfile reads
    # the one right before the locator: the decoy lists the benign pickle.
    benign = _zip([("archive/data.pkl", state_dict("w")), ("archive/version", b"3\n")])
    b_cd, b_size, b_eocd = _central(benign)
    shift = len(data[:cd + size])
    decoy_cd = bytearray(benign[b_cd:b_eocd])
    pos = 0
    while pos < len(decoy_cd):
        (loff,) = struct.unpack_from("<I", decoy_cd, pos + 42)
        struct.pack_into("<I", decoy_cd, pos + 42, loff + shift)
        nlen, xlen, clen = struct.unpack_from("<HHH", decoy_cd, pos + 28)
        pos += 46 + nlen + xlen + clen
    decoy_at = shift + b_cd
    records = (bytes(data[:cd + size]) + benign[:b_cd] + bytes(decoy_cd) + record
               + struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 2, 2, b_size,
                             decoy_at))
    two = records + struct.pack("<4sIQI", b"PK\x06\x07", 0, len(records) - 112, 1) + bytes(
        data[eocd:])
    path.write_bytes(two)
    (file,) = scan(path).files
    assert file.verdict is not Verdict.SAFE
    assert any("zip64 locator points" in (s.error or "") for s in file.streams)


def test_frame_straddling_in_data_pkl_is_refused(tmp_path: Path) -> None:
    """torch reads data.pkl from a BytesIO: frames are read whole, so an opcode
    that straddles a frame's end reads other bytes than pickle.loads reads.
    Here the flat reading sees one long text (no import), the frame-by-frame
    reading skips the frame's last bytes and reaches a GLOBAL."""
    hidden = glob("fuzzpayload", "straddle") + b")R0"
    hidden += b"N0" * ((99 - len(hidden)) // 2)  # 99 bytes, starting with "c" (99)
    assert len(hidden) == 99 and hidden[0] == 99
    # FRAME(2) holds "M" and one byte of its 2-byte argument. Flat, "M" takes
    # "a\0" and SHORT_BINBYTES ("C", length 99 = the "c") swallows the GLOBAL;
    # frame by frame, "M" takes "\0C" and the GLOBAL at "c" runs.
    stream = b"\x80\x04\x95" + struct.pack("<Q", 2) + b"Ma" + b"\x00C" + hidden + b"N."
    assert pickle.loads(stream) == hidden[1:] + b"N"
    data = _zip([("archive/data.pkl", stream), ("archive/version", b"3\n")])
    file, _ = check(tmp_path, data, "straddle", problem="ends past it")
    assert any("frame by frame" in s.location for s in file.streams)


# -- tar -------------------------------------------------------------------------


def _tar(members: list[tuple[str, bytes]], *, links: dict[str, str] | None = None,
         fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if links and name in links:
                info.type, info.linkname = tarfile.LNKTYPE, links[name]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _strip_magic(data: bytes) -> bytes:
    """Old (v7) headers: no 'ustar' magic, the checksum recomputed, so still valid."""
    raw = bytearray(data)
    pos = 0
    while pos + 512 <= len(raw) and raw[pos:pos + 512].count(0) != 512:
        size = int(raw[pos + 124:pos + 136].rstrip(b"\0 ") or b"0", 8)
        raw[pos + 257:pos + 265] = bytes(8)
        raw[pos + 148:pos + 156] = b" " * 8
        raw[pos + 148:pos + 156] = b"%06o\0 " % sum(raw[pos:pos + 512])
        pos += 512 + (size + 511) // 512 * 512
    return bytes(raw)


TAR_MEMBERS = [("storages", proto(2) + b"K\x00." + proto(2) + b"]."),
               ("tensors", proto(2) + b"K\x00.")]


def test_tar_without_ustar_magic_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    data = _strip_magic(_tar([*TAR_MEMBERS, ("pickle", payload("no_magic"))]))
    assert data[257:262] != b"ustar"
    check(tmp_path, data, "no_magic")


def test_ustar_magic_with_a_bad_checksum_is_a_pickle_to_torch(tmp_path: Path) -> None:
    """tarfile refuses the header, so torch unpickles the file from byte 0."""
    block = bytearray(payload("bad_checksum").ljust(512, b"\0"))
    block[257:263] = b"ustar\0"
    block[148:156] = b"0000001\0"
    check(tmp_path, bytes(block) + bytes(1024), "bad_checksum")


def test_tar_hard_link_and_duplicate_members(tmp_path: Path) -> None:
    linked = _tar([*TAR_MEMBERS, ("notes", payload("hard_link")), ("pickle", b"")],
                  links={"pickle": "notes"})
    check(tmp_path, linked, "hard_link")
    twice = _tar([*TAR_MEMBERS, ("pickle", state_dict("w")), ("pickle", payload("last_copy"))])
    check(tmp_path, twice, "last_copy", problem="appears more than once")


# -- legacy and nested ---------------------------------------------------------------


def _legacy_with_frame_past_stop(hidden: bytes) -> bytes:
    """The sys_info pickle inside a FRAME that runs on over the next two pickles."""
    sys_info = b"}."
    objects = proto(2) + b"}."
    keys = proto(2) + b"]."
    framed = b"\x80\x04\x95" + struct.pack("<Q", len(sys_info + objects + keys)) + sys_info
    return MAGIC + proto(2) + b"M\xe9\x03." + framed + objects + keys + hidden


def test_frame_past_stop_read_from_a_bytesio(tmp_path: Path) -> None:
    """Nested in _load_from_bytes (a BytesIO): the next pickle starts at the frame's end."""
    inner = _legacy_with_frame_past_stop(payload("after_frame") + proto(2) + b"]." )
    outer = (proto(2) + b"}" + text("n") + glob("torch.storage", "_load_from_bytes")
             + b"(B" + struct.pack("<I", len(inner)) + inner + b"tRs.")
    check(tmp_path, outer, "after_frame", problem="runs 8 bytes past it")


def test_nested_stream_is_never_read_as_tar(tmp_path: Path) -> None:
    """torch.load(BytesIO) never tries tar: a valid tar header is a pickle there."""
    block = bytearray(payload("nested_tar").ljust(512, b"\0"))
    block[257:263] = b"ustar\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    inner = bytes(block) + bytes(1024)
    assert tarfile.open(fileobj=io.BytesIO(inner)).getnames()
    outer = (proto(2) + b"}" + text("n") + glob("torch.storage", "_load_from_bytes")
             + b"(B" + struct.pack("<I", len(inner)) + inner + b"tRs.")
    check(tmp_path, outer, "nested_tar")


# -- npy, with numpy as the oracle ----------------------------------------------------


def _npy(descr: str, body: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize("descr", ["O", "object", "object_", "b1,O", "=O", "O8"])
def test_npy_object_dtype_as_numpy_decides_it(tmp_path: Path, descr: str) -> None:
    """``dtype.hasobject`` is numpy's test: 'object' and 'b1,O' are object arrays too."""
    path = tmp_path / "a.npy"
    path.write_bytes(_npy(descr, payload("npy_object")))
    reading = numpy_reads(path)
    assert "fuzzpayload.npy_object" in reading.globals, reading
    (file,) = scan(path).files
    assert file.verdict is not Verdict.SAFE
    assert "fuzzpayload.npy_object" in {g for s in file.streams for g in s.globals}


def test_npy_python2_long_header_is_read(tmp_path: Path) -> None:
    """numpy re-reads a version 1/2 header with Python 2 longs ('3L') after dropping the L."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1L,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path = tmp_path / "py2.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                     + payload("py2_header"))
    assert "fuzzpayload.py2_header" in numpy_reads(path).globals
    (file,) = scan(path).files
    assert "fuzzpayload.py2_header" in {g for s in file.streams for g in s.globals}
