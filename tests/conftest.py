"""Suite-wide set-up.

``TENSORFILE_SIMULATE_NO_POSIX=1`` runs the tests as on a platform without
``os.preadv``, ``os.pread``, ``os.copy_file_range``, ``os.posix_fadvise``,
``O_NONBLOCK`` and Linux's ``sync_file_range`` (Windows lacks them all, macOS
some): they are removed before tensorfile is first imported, so every
fallback is what runs. ``.ci/run`` runs the format and integrity tests so.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

#: What the simulation removes from ``os``.
POSIX_ONLY = ("preadv", "pread", "copy_file_range", "posix_fadvise", "O_NONBLOCK")


def _remove_posix_only_calls() -> None:
    import ctypes

    for name in POSIX_ONLY:
        if hasattr(os, name):
            delattr(os, name)

    class _LibcWithoutSyncFileRange(ctypes.CDLL):
        def __getattr__(self, name: str) -> ctypes._NamedFuncPointer:
            if name == "sync_file_range":
                raise AttributeError(f"simulated: no {name}")
            return super().__getattr__(name)

    ctypes.CDLL = _LibcWithoutSyncFileRange  # type: ignore[misc]


if os.environ.get("TENSORFILE_SIMULATE_NO_POSIX") == "1":
    _remove_posix_only_calls()


# ------------------------------------------------------------------ page cache


@pytest.fixture
def evict() -> Callable[[str | os.PathLike[str]], None]:
    """Drops a file's pages from the page cache (written back first), so
    that the next read of it goes to the disk; skips where that cannot be
    done (no ``posix_fadvise``)."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise: the page cache cannot be emptied here")

    def drop(path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    return drop
