"""Remote models: ``safe_open`` and ``load_file`` of a URL, through fsspec.

``tensorfile.safe_open("s3://bucket/model.safetensors", storage_options=...)``
and ``load_file`` of any fsspec URL come here (the public functions pass
URLs on). The bytes are read by checked range requests
(:mod:`tensorfile._io.remote`); ``verify=`` fetches and checks the signature
first, then each tensor as its bytes arrive. A URL naming a
``*.safetensors.index.json`` or a folder is a sharded model, read through
:func:`tensorfile.sharded.open_sharded`. Install with ``pip install 'tensorfile[remote]'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tensorfile._io.remote import RemoteFile, RemoteOptions, is_url, remote_verifier
from tensorfile._io.verifier import Verifier
from tensorfile.sharded._remote import RemoteShards, names_one_file

if TYPE_CHECKING:
    from tensorfile._io.reader import SafeOpen
    from tensorfile.integrity.hashing import FileDigest, HashOptions
    from tensorfile.integrity.manifest import Manifest
    from tensorfile.integrity.onload import VerifyWith
    from tensorfile.integrity.verify import VerificationReport

__all__ = ["RemoteFile", "RemoteOptions", "hash_remote", "is_url", "load_remote", "open_remote", "verify_remote"]

#: Bytes of tensors ``verify_remote`` holds at once (plus one tensor bigger than this).
VERIFY_WINDOW = 256 << 20


def remote_options(
    remote: RemoteOptions | None, storage_options: Mapping[str, Any] | None
) -> RemoteOptions:
    """``remote`` (or the defaults) with ``storage_options`` put in, if given."""
    base = remote or RemoteOptions()
    if storage_options is None:
        return base
    return dataclasses.replace(base, storage_options=dict(storage_options))


def open_remote(
    url: str,
    framework: str = "np",
    device: str = "cpu",
    *,
    verify: Verifier | None = None,
    options: RemoteOptions | None = None,
) -> SafeOpen:
    """A :class:`~tensorfile.SafeOpen` over the remote file at ``url``: its
    header read in one or two range requests, tensors fetched on demand
    (``get_slice`` fetches only the rows it needs)."""
    from tensorfile._io.reader import SafeOpen

    remote = RemoteFile(url, options)
    verifier = None if verify is None else remote_verifier(verify, remote)
    return SafeOpen(remote, framework, device, backend="pread", verify=verifier)


def load_remote(
    url: str,
    framework: str = "np",
    device: str = "cpu",
    *,
    verify: Verifier | None = None,
    options: RemoteOptions | None = None,
) -> dict[str, Any]:
    """Every tensor of the remote file at ``url``, or of the sharded model an
    index or folder URL names (any URL not ending in ``.safetensors``: see
    :func:`tensorfile.sharded.open_sharded`)."""
    if not names_one_file(url):
        from tensorfile.sharded._reader import load_sharded

        return load_sharded(url, framework, device, verify=verify, remote=options)
    with open_remote(url, framework, device, verify=verify, options=options) as f:
        return f.tensors()


def verify_remote(
    url: str, verify: VerifyWith, options: RemoteOptions | None = None
) -> VerificationReport:
    """Check the remote file at ``url`` (or every shard of the model an index
    or folder URL names) against its signature without writing it anywhere:
    the signature and the header first, then every tensor's digest as its
    bytes stream in, at most :data:`VERIFY_WINDOW` bytes of them held at
    once. Raises on the first mismatch (a
    :class:`~tensorfile.errors.VerificationError`) or on a server answer that
    cannot be trusted (a :class:`~tensorfile.errors.RemoteError`).
    """
    import numpy as np

    from tensorfile.integrity.onload import LoadVerifier, as_verifier
    from tensorfile.integrity.verify import VerificationReport

    verifier = as_verifier(verify)
    shards = RemoteShards(url, options or RemoteOptions())
    files: list[str] = []
    tensors = hashed = 0
    last: LoadVerifier | None = None
    for shard, header in shards.headers.items():
        remote = shards.files[shard]
        fv = shards.file_verifier(shard, verifier)  # the signature, then the raw header
        if not isinstance(fv, LoadVerifier):
            raise TypeError("verify_remote needs a key, certificates, a trust policy or pins")
        base = header.data_offset
        batch: list[Any] = []
        size = 0
        for info in [*header.tensors.values(), None]:
            if info is None or (batch and size + info.nbytes > VERIFY_WINDOW):
                buf = np.empty(max(size, 1), dtype=np.uint8)
                views, at = [], 0
                for i in batch:
                    views.append(memoryview(buf.data)[at : at + i.nbytes])
                    at += i.nbytes
                remote.read([(base + i.start, v, fv.tensor_check(i.name, i.nbytes))
                             for i, v in zip(batch, views, strict=True)])
                batch, size = [], 0
            if info is not None:
                batch.append(info)
                size += info.nbytes
        tensors += len(header.tensors)
        files.append(fv.resource or remote.url)
        hashed += fv.bytes_hashed
        last = fv
    assert last is not None and last.manifest is not None and last.signer is not None
    manifest = last.manifest
    return VerificationReport(
        model=url, signature=last.signature_where,
        model_name=manifest.model_name, root_digest=manifest.root_digest,
        serialization=manifest.serialization.to_dict(), signer=last.signer,
        files=tuple(files), bytes_hashed=hashed, tensors=tensors,
        tensor_digests_checked=True, tensor_algorithm=manifest.tensor_algorithm,
    )


#: Bytes of the file ``hash_remote`` holds at once.
HASH_WINDOW = 64 << 20


def hash_remote(
    url: str, options: HashOptions | None = None, remote: RemoteOptions | None = None
) -> Manifest:
    """The manifest of the remote file at ``url`` (what ``sign`` would sign for
    a copy of it): its file digest and, for a ``.safetensors`` file, header and
    tensor digests, in one ordered pass over its bytes, fetched ``HASH_WINDOW``
    at a time (each window by concurrent ranges). Nothing is written.

    An index or folder URL (a sharded model) gives the manifest of a folder
    holding the index and the shards it names (a remote folder cannot always
    be listed, so other files in it are not covered), with ``model.sig``
    ignored as ``sign`` ignores it."""
    from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME
    from tensorfile.integrity.hashing import (
        DEFAULT_HASH_OPTIONS,
        DEFAULT_IGNORED,
        SINGLE_FILE_NAME,
        resource_sort_key,
    )
    from tensorfile.integrity.manifest import Manifest, Serialization

    opts = options or DEFAULT_HASH_OPTIONS
    if names_one_file(url):
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        digest = _file_digest(RemoteFile(url, remote), SINGLE_FILE_NAME, name, opts)
        return Manifest(name, (digest,), Serialization(hash_type=opts.file_algorithm))
    shards = RemoteShards(url, remote or RemoteOptions())
    files = dict(shards.files)
    index = shards.index.path
    if index is not None:
        files[index.split("?", 1)[0].rsplit("/", 1)[-1]] = RemoteFile(index, remote, shards.fs)
    digests = [_file_digest(f, name, name, opts)
               for name, f in sorted(files.items(), key=lambda kv: resource_sort_key(kv[0]))]
    git = DEFAULT_IGNORED if opts.ignore_git_paths else ()
    ignored = tuple(sorted({*git, DEFAULT_SIGNATURE_NAME}))
    return Manifest(shards.index.folder.rstrip("/").rsplit("/", 1)[-1], tuple(digests),
                    Serialization(hash_type=opts.file_algorithm, ignore_paths=ignored))


def _file_digest(f: RemoteFile, name: str, file_name: str, opts: HashOptions) -> FileDigest:
    """The digest of one remote file named ``name`` in the manifest
    (``file_name``: its own name, which says whether it is ``.safetensors``)."""
    import numpy as np

    from tensorfile.integrity.hashing import (
        SAFETENSORS_SUFFIX,
        FileDigest,
        SafetensorsDigests,
        digest_hex,
        new_hasher,
    )

    whole = new_hasher(opts.file_algorithm, f.size)
    parts: SafetensorsDigests | None = None
    start = 0
    spans: list[tuple[str, int, int]] = []  # tensor name, absolute [start, end)
    running: dict[str, Any] = {}
    header_digest = ""
    tensors = opts.tensors and file_name.endswith(SAFETENSORS_SUFFIX)
    if tensors:
        header, raw = f.read_header()
        whole.update(raw)
        start = len(raw)
        spans = [(i.name, header.data_offset + i.start, header.data_offset + i.end)
                 for i in header.tensors.values()]
        running = {n: new_hasher(opts.tensor_algorithm, b - a) for n, a, b in spans}
        header_digest = digest_hex(opts.tensor_algorithm, raw)
    buf = np.empty(min(HASH_WINDOW, max(f.size - start, 1)), dtype=np.uint8)
    for a in range(start, f.size, HASH_WINDOW):
        b = min(a + HASH_WINDOW, f.size)
        view = memoryview(buf.data)[: b - a]
        f.read([(a, view, None)])
        whole.update(view)
        for n, ta, tb in spans:
            lo, hi = max(a, ta), min(b, tb)
            if lo < hi:
                running[n].update(view[lo - a : hi - a])
    if tensors:
        parts = SafetensorsDigests(header_digest, {n: running[n].hexdigest() for n, _, _ in spans},
                                   opts.tensor_algorithm)
    return FileDigest(name, whole.hexdigest(), f.size, parts, opts.file_algorithm)
