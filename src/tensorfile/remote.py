"""Remote models: ``safe_open`` and ``load_file`` of a URL, through fsspec.

``tensorfile.safe_open("s3://bucket/model.safetensors", storage_options=...)``
and ``load_file`` of any fsspec URL come here (the public functions pass
URLs on). The bytes are read by checked range requests
(:mod:`tensorfile._io.remote`); ``verify=`` fetches and checks the signature
first, then each tensor as its bytes arrive. A URL naming a
``*.safetensors.index.json`` is a sharded model: its shards are read from
beside it. Install with ``pip install 'tensorfile[remote]'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorfile._format.strict_json import loads_strict
from tensorfile._io.remote import (
    RemoteFile,
    RemoteOptions,
    is_url,
    read_remote_small,
    url_join,
    url_parent,
)
from tensorfile._io.verifier import FileVerifier, Verifier
from tensorfile.errors import ShardIndexError

if TYPE_CHECKING:
    from tensorfile._io.reader import SafeOpen
    from tensorfile.integrity.hashing import HashOptions
    from tensorfile.integrity.manifest import Manifest
    from tensorfile.integrity.onload import VerifyWith
    from tensorfile.integrity.verify import VerificationReport

__all__ = ["RemoteFile", "RemoteOptions", "hash_remote", "is_url", "load_remote", "open_remote", "verify_remote"]

#: Bytes of tensors ``verify_remote`` holds at once (plus one tensor bigger than this).
VERIFY_WINDOW = 256 << 20

#: An index JSON over this size is refused (the largest real ones are a few MB).
MAX_INDEX_BYTES = 64 << 20
INDEX_SUFFIX = ".safetensors.index.json"


def remote_options(
    remote: RemoteOptions | None, storage_options: Mapping[str, Any] | None
) -> RemoteOptions:
    """``remote`` (or the defaults) with ``storage_options`` put in, if given."""
    base = remote or RemoteOptions()
    if storage_options is None:
        return base
    return dataclasses.replace(base, storage_options=dict(storage_options))


class _OneFile:
    """A :class:`Verifier` that hands out one remote file's verifier."""

    def __init__(self, file_verifier: FileVerifier) -> None:
        self._fv = file_verifier

    def for_file(self, path: Path) -> FileVerifier:
        return self._fv


def _remote_verifier(verify: Verifier, remote: RemoteFile) -> Verifier:
    for_url = getattr(verify, "for_url", None)
    if for_url is None:  # the caller's own Verifier: it is given the URL as a path
        return verify
    return _OneFile(for_url(remote.url, remote.size, lambda u: remote.read_small(u, 256 << 20)))


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
    verifier = None if verify is None else _remote_verifier(verify, remote)
    return SafeOpen(remote, framework, device, backend="pread", verify=verifier)


def load_remote(
    url: str,
    framework: str = "np",
    device: str = "cpu",
    *,
    verify: Verifier | None = None,
    options: RemoteOptions | None = None,
) -> dict[str, Any]:
    """Every tensor of the remote file (or sharded model: an index URL) at ``url``."""
    if url.split("?", 1)[0].endswith(INDEX_SUFFIX):
        out: dict[str, Any] = {}
        for shard, names in shard_map(url, options).items():
            got = load_remote(shard, framework, device, verify=verify, options=options)
            if set(got) != names:
                extra, missing = sorted(set(got) - names), sorted(names - set(got))
                raise ShardIndexError(
                    f"{url}: {shard} holds other tensors than the index says (not in the index: "
                    f"{extra[:5]}, missing: {missing[:5]})"
                )
            out.update(got)
        return out
    with open_remote(url, framework, device, verify=verify, options=options) as f:
        return f.tensors()


def shard_urls(index_url: str, options: RemoteOptions | None = None) -> list[str]:
    """The shard URLs an index names, in the index's order (see :func:`shard_map`)."""
    return list(shard_map(index_url, options))


def shard_map(index_url: str, options: RemoteOptions | None = None) -> dict[str, set[str]]:
    """Each shard URL an index names and the tensors it assigns to it; each
    shard is checked to be a plain relative name inside the index's folder
    (no ``..``, no absolute path, no URL)."""
    raw = read_remote_small(index_url, MAX_INDEX_BYTES, options)
    if len(raw) > MAX_INDEX_BYTES:
        raise ShardIndexError(f"{index_url}: index is over the {MAX_INDEX_BYTES:,}-byte limit")
    doc = loads_strict(raw, index_url, ShardIndexError)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShardIndexError(f"{index_url}: 'weight_map' must be an object of tensor names to files")
    folder = url_parent(index_url)
    shards: dict[str, set[str]] = {}
    for name, rel in weight_map.items():
        if (not isinstance(rel, str) or not rel or rel.startswith("/") or "://" in rel
                or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/"))):
            raise ShardIndexError(f"{index_url}: tensor {name!r} names shard {rel!r:.80}, not a "
                                  "relative path inside the index's folder")
        shards.setdefault(rel, set()).add(name)
    return {url_join(folder, rel): names for rel, names in shards.items()}


def verify_remote(
    url: str, verify: VerifyWith, options: RemoteOptions | None = None
) -> VerificationReport:
    """Check the remote file at ``url`` (or every shard an index URL names)
    against its signature without writing it anywhere: the signature and the
    header first, then every tensor's digest as its bytes stream in, at most
    :data:`VERIFY_WINDOW` bytes of them held at once. Raises on the first
    mismatch (a :class:`~tensorfile.errors.VerificationError`) or on a
    server answer that cannot be trusted (a :class:`~tensorfile.errors.RemoteError`).
    """
    import numpy as np

    from tensorfile._io.reader import SafeOpen
    from tensorfile.integrity.onload import LoadVerifier, as_verifier
    from tensorfile.integrity.verify import VerificationReport

    verifier = as_verifier(verify)
    is_index = url.split("?", 1)[0].endswith(INDEX_SUFFIX)
    urls = shard_urls(url, options) if is_index else [url]
    files: list[str] = []
    tensors = hashed = 0
    last: LoadVerifier | None = None
    for u in urls:
        remote = RemoteFile(u, options)
        one = _remote_verifier(verifier, remote)
        fv = one.for_file(Path(u))
        if not isinstance(fv, LoadVerifier):
            raise TypeError("verify_remote needs a key, certificates, a trust policy or pins")
        with SafeOpen(remote, "np", backend="pread", verify=one) as f:  # checks the header
            base = f.header.data_offset
            batch: list[Any] = []
            size = 0
            infos = [*list(f.header.tensors.values()), None]
            for info in infos:
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
            tensors += len(f.header.tensors)
        files.append(fv.resource or u)
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
    at a time (each window by concurrent ranges). Nothing is written."""
    import numpy as np

    from tensorfile.integrity.hashing import (
        DEFAULT_HASH_OPTIONS,
        SAFETENSORS_SUFFIX,
        SINGLE_FILE_NAME,
        FileDigest,
        SafetensorsDigests,
        digest_hex,
        new_hasher,
    )
    from tensorfile.integrity.manifest import Manifest, Serialization

    opts = options or DEFAULT_HASH_OPTIONS
    f = RemoteFile(url, remote)
    name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    whole = new_hasher(opts.file_algorithm, f.size)
    parts: SafetensorsDigests | None = None
    start = 0
    spans: list[tuple[str, int, int]] = []  # tensor name, absolute [start, end)
    running: dict[str, Any] = {}
    header_digest = ""
    tensors = opts.tensors and name.endswith(SAFETENSORS_SUFFIX)
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
    digest = FileDigest(SINGLE_FILE_NAME, whole.hexdigest(), f.size, parts, opts.file_algorithm)
    return Manifest(name, (digest,), Serialization(hash_type=opts.file_algorithm))
