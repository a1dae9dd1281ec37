"""What the reader asks of a verifier: the one type ``verify`` has below the public layer.

The public functions (:func:`tensorfile.safe_open`, ``load_file``,
:func:`tensorfile.sharded.open_sharded`, the drop-in facades) take what a user
holds (a key, root certificates, a trust policy, pins) and turn it into a
:class:`Verifier` with :func:`tensorfile.integrity.onload.as_verifier`. The
readers below them see only these protocols: they know nothing of signatures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


class TensorCheck(Protocol):
    """A running digest of one tensor's bytes, fed in order as they are read."""

    @property
    def chunk_size(self) -> int:
        """Bytes the reader should copy between two :meth:`update` calls."""
        ...

    def update(self, data: memoryview) -> None: ...

    def finish(self) -> None:
        """Raise (a :class:`tensorfile.errors.VerificationError`) unless the bytes fed are the trusted ones."""
        ...


class FileVerifier(Protocol):
    """Checks one safetensors file: its raw header at open, each tensor when first read."""

    @property
    def eager(self) -> bool:
        """Read and check every tensor at open (rather than on first use)."""
        ...

    def check_open(self, raw_header: bytes, size: int) -> TensorCheck | None:
        """Check the signature, ``size`` and the raw header the reader parsed.

        None: each tensor is checked on read (:meth:`tensor_check`). Otherwise
        the file is signed only whole: the reader feeds the returned check with
        ``raw_header`` and then every later byte, in order, as it copies them
        into private memory through its own descriptor, and hands out nothing
        before :meth:`TensorCheck.finish` passes.
        """
        ...

    def check_header(self, raw_header: bytes, fd: int | None = None) -> None:
        """:meth:`check_open`, and for a file signed only whole, hash it now
        through ``fd`` (the caller's descriptor), deriving the tensor digests
        that :meth:`tensor_check` then checks reads against."""
        ...

    def tensor_check(self, name: str, nbytes: int) -> TensorCheck: ...


@runtime_checkable
class Verifier(Protocol):
    """A model's trust: hands out the :class:`FileVerifier` of each file it covers."""

    def for_file(self, path: Path) -> FileVerifier: ...
