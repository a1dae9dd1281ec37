"""The public loading functions: the thin layer above the readers.

:func:`safe_open`, :func:`load_file` and :func:`load` decide what the
single-file reader (:mod:`tensorfile._io.reader`) does not know about: a
folder or an index is a sharded model (:mod:`tensorfile.sharded`), a folder
bound for a device is read through pinned staging buffers, and ``verify=``
(whatever a user holds: a key, certificates, a trust policy, pins) becomes
one :class:`~tensorfile._io.verifier.Verifier` handed down to the readers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from tensorfile._frameworks import device_name
from tensorfile._io.reader import SafeOpen, _norm_framework, load_bytes
from tensorfile._io.remote import RemoteOptions, is_url
from tensorfile._verifying import verifier_of
from tensorfile.errors import NotSignedError
from tensorfile.sharded._reader import is_sharded_path, load_sharded

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


def safe_open(
    filename: str | os.PathLike[str] | IO[Any],
    framework: str = "np",
    device: str | int | None = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> SafeOpen:
    """Open a safetensors file for lazy, zero-copy reading.

    ``filename`` may also be an open file object: one backed by a file is
    read through its descriptor (from byte 0), any other (``io.BytesIO``, an
    fsspec file) is read once into memory.

    ``framework`` is ``"np"`` (numpy arrays, read-only views of the file map)
    or ``"pt"`` (torch tensors, views of a private copy-on-write map); also
    ``"flax"``, ``"tf"``, ``"paddle"`` or ``"mlx"`` (read as numpy, then
    converted as :mod:`tensorfile.flax` and its siblings say).
    ``backend="pread"`` reads each tensor into private memory instead of mapping.
    ``verify`` (a public key, or a trust policy from :mod:`tensorfile.integrity`)
    checks the file's signature and header digest at open, and each tensor's
    digest the first time it is read; a tampered tensor is never returned.

    ``filename`` may be a URL (``s3://``, ``https://``, any fsspec scheme):
    the header is read in one or two range requests and tensors on demand,
    with fsspec's ``storage_options`` (credentials, endpoint) and ``remote``
    (a :class:`~tensorfile.remote.RemoteOptions`: concurrency, block size,
    retries). See :mod:`tensorfile.remote`.
    """
    if is_url(filename):
        from tensorfile.remote import open_remote, remote_options

        assert isinstance(filename, str)
        return open_remote(filename, framework, device_name(device), verify=verifier_of(verify),
                           options=remote_options(remote, storage_options))
    return SafeOpen(filename, framework, device, backend=backend, verify=verifier_of(verify))


def load_file(
    filename: str | os.PathLike[str],
    framework: str = "np",
    device: str | int | None = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> dict[str, Any]:
    """Every tensor of a file, keyed by name.

    A folder (or a ``*.safetensors.index.json``) is read as a sharded model:
    see :func:`tensorfile.sharded.load_sharded`. A URL is fetched by
    concurrent range requests straight into the tensors' memory (see
    :func:`safe_open`); with ``verify`` each tensor is checked as it arrives.
    """
    verifier = verifier_of(verify)
    device = device_name(device)
    if is_url(filename):
        from tensorfile.remote import load_remote, remote_options

        assert isinstance(filename, str)
        return load_remote(filename, framework, device, verify=verifier,
                           options=remote_options(remote, storage_options))
    if is_sharded_path(filename):
        return load_sharded(filename, framework, device, backend=backend, verify=verifier)
    with SafeOpen(filename, framework, device, backend=backend, verify=verifier) as f:
        return f.tensors()


def load(
    data: bytes | bytearray | memoryview, framework: str = "np", *, verify: VerifyWith | None = None
) -> dict[str, Any]:
    """Every tensor of in-memory safetensors bytes (copies out of ``data``).

    ``verify`` checks the bytes as the file a single-file signature covers; it
    must be a ``TrustPolicy`` naming its ``signature`` (bytes have no folder in
    which to look for ``model.sig``).
    """
    fw = _norm_framework(framework)
    if verify is None:
        return load_bytes(data, fw)
    # Imported when asked for: it loads cryptography (see tensorfile._verifying).
    from tensorfile.integrity.verify import TrustPolicy

    if not isinstance(verify, TrustPolicy) or verify.signature is None:
        raise NotSignedError(
            "verifying bytes needs verify=TrustPolicy(signature=...): bytes have no "
            "folder in which to look for model.sig"
        )
    with SafeOpen(io.BytesIO(data), fw, verify=verifier_of(verify)) as f:
        return f.tensors()
