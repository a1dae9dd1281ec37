"""Tar archives (torch < 0.4 checkpoints) as :mod:`tarfile` reads them.

torch tries :mod:`tarfile` on every file that is not a zip, and tarfile needs
only a valid header checksum (no ``ustar`` magic): the member list is
tarfile's own, a name read twice resolves to its last member, hard links are
followed (spec/SCANNING.md, "Tar").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Final, NamedTuple

from tensorfile._picklevm.opcodes import (
    Buffer,
)
from tensorfile.errors import ScanError, ScanLimitError, UnsupportedContainerError

#: First pickle of the legacy torch format (``torch.serialization.MAGIC_NUMBER``).


class TarMember(NamedTuple):
    """A member as :mod:`tarfile` lists it (offsets in the scanned buffer)."""

    name: str
    #: 'file' (tarfile hands out its bytes), 'link', 'symlink', 'sparse' or 'other'.
    kind: str
    data: int
    size: int
    linkname: str
    #: Its place in the listing (a hard link names an earlier member).
    position: int


#: The most one tarfile read may ask for (a pax or GNU long-name header).
_MAX_TAR_READ: Final = 16 << 20


class _Window:
    """``buf[start:end]`` as the seekable file :mod:`tarfile` reads (no copy of the whole)."""

    def __init__(self, buf: Buffer, start: int, end: int) -> None:
        self.buf, self.start, self.end, self.pos = buf, start, end, start

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        if n > _MAX_TAR_READ:
            raise ScanLimitError(f"tar header asks to read {n} bytes at once")
        stop = min(self.end, self.pos + n)
        data = bytes(self.buf[self.pos:stop])
        self.pos = stop
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (self.start, self.pos, self.end)[whence]
        self.pos = max(self.start, base + pos)
        return self.pos - self.start

    def tell(self) -> int:
        return self.pos - self.start


def tar_checksum_ok(head: bytes) -> bool:
    """Whether ``tarfile`` takes this first block for a header (``TarInfo.frombuf``).

    Only the checksum is checked (no ``ustar`` magic): torch tries ``tarfile``
    on every file that does not start like a zip. This is ``frombuf``'s test
    (``nti(buf[148:156]) in calc_chksums(buf)``) without importing
    :mod:`tarfile` (8 ms of every scan's start-up); a test holds it to
    tarfile's own functions.
    """
    block = head[:512]
    if len(block) < 512 or block.count(0) == 512:
        return False
    field = block[148:156]
    if field[0] in (0o200, 0o377):  # base-256
        stated = int.from_bytes(field[1:], "big")
        if field[0] == 0o377:
            stated -= 256 ** 7
    else:
        try:  # nts(): up to the first NUL, ASCII; then int(s.strip() or "0", 8)
            text = field.split(b"\0", 1)[0].decode("ascii")
            stated = int(text.strip() or "0", 8)
        except ValueError:
            return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    high = len(block[:148].translate(None, _LOW_BYTES)) + len(
        block[156:].translate(None, _LOW_BYTES))
    return stated in (unsigned, unsigned - 256 * high)


_LOW_BYTES: Final = bytes(range(128))


def tar_listing(buf: Buffer, start: int, end: int, max_entries: int) -> list[TarMember] | None:
    """Members of ``buf[start:end]`` exactly as Python's :mod:`tarfile` lists them.

    ``None`` when ``tarfile.open`` or the listing raises ``TarError``: torch's
    legacy loader then falls back to reading the file as pickles. The listing
    stops, as ``tarfile``'s does, at the first header after the first that is
    not valid. tarfile only parses headers here; nothing is extracted.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=_Window(buf, start, end), mode="r:") as tf:  # type: ignore[call-overload]
            members = []
            for index, info in enumerate(tf):
                if index >= max_entries:
                    raise ScanLimitError(f"tar archive has more than {max_entries} members")
                kind = ("sparse" if info.issparse() else "file" if info.isreg()
                        or info.type not in tarfile.SUPPORTED_TYPES else "link" if info.islnk()
                        else "symlink" if info.issym() else "other")
                members.append(TarMember(info.name, kind, start + info.offset_data, info.size,
                                         info.linkname, index))
            return members
    except tarfile.TarError:
        return None
    except ScanError:
        raise
    except Exception as exc:  # tarfile's own failure outside TarError: torch.load fails too
        raise UnsupportedContainerError(f"tar header cannot be read ({type(exc).__name__})"
                                        ) from None


def tar_members(buf: Buffer, start: int, end: int, max_entries: int
                ) -> Iterator[tuple[str, int, int]]:
    """(name, data start, size) of each member whose bytes tarfile hands out as a file."""
    members = tar_listing(buf, start, end, max_entries)
    if members is None:
        raise UnsupportedContainerError("tarfile does not read it as a tar archive")
    for m in members:
        if m.kind == "file":
            yield m.name, m.data, m.size


def _tar_target(members: list[TarMember], member: TarMember) -> TarMember | None:
    """What tarfile reads for ``member``: a hard link's target (``_find_link_target``:
    the last member before it with that name), anything else itself."""
    seen = 0
    while member.kind == "link" and seen < 64:
        seen += 1
        name = os.path.normpath(member.linkname)
        found = [m for m in members[:member.position] if os.path.normpath(m.name) == name]
        if not found:
            return None
        member = found[-1]
    return member
