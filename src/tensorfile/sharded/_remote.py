"""The shards of a remote model (a URL): what :class:`~tensorfile.sharded.ShardedOpen`
reads through when it is given an index, folder or file URL.

The index is fetched and checked by the rules local indexes follow
(:func:`~tensorfile.sharded._index.parse_index_doc`); every shard's header is
read at open, concurrently (one range request each, two for a long header),
and cross-checked against the index. Each shard stays one
:class:`~tensorfile._io.remote.RemoteFile`: its ETag (or version) and size,
taken with the header, are its identity, and every later request must answer
for the same object (``If-Match``), so a shard replaced after the model opened
is a :class:`~tensorfile.errors.RemoteChangedError` at its next read, never
bytes of another version. The signature is fetched once per model, however
many shards it covers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tensorfile._format.header import MAX_HEADER_SIZE, Header
from tensorfile._io.reader import SafeOpen
from tensorfile._io.remote import (
    MAX_SMALL,
    RemoteFile,
    RemoteOptions,
    file_system,
    read_remote_small,
    remote_verifier,
    url_join,
    url_parent,
)
from tensorfile._io.verifier import FileVerifier, Verifier
from tensorfile.errors import ShardIndexError, VerificationError
from tensorfile.sharded._index import (
    DEFAULT_PREFIX,
    INDEX_SUFFIX,
    SAFETENSORS_SUFFIX,
    RemoteIndex,
    check_shard,
    check_total_size,
    parse_index_doc,
)

#: Shard headers fetched at once when a remote model opens.
OPEN_CONCURRENCY = 16


def _path_part(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def names_one_file(url: str) -> bool:
    """Whether a URL names one ``.safetensors`` file (rather than an index or
    a model folder): its path ends in ``.safetensors``."""
    return _path_part(url).endswith(SAFETENSORS_SUFFIX)


def _exists(url: str, options: RemoteOptions, fs: Any) -> bool:
    try:
        read_remote_small(url, 0, options, fs)
    except FileNotFoundError:
        return False
    return True


def _listed(folder: str, fs: Any) -> list[str] | None:
    """The file names in a remote folder, or None where the backend cannot
    list it (plain HTTP without an index page)."""
    try:
        entries = fs.ls(fs._strip_protocol(folder), detail=False)
    except Exception:  # whatever the backend raises, it cannot list this folder
        return None
    return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})


def find_remote_model(url: str, options: RemoteOptions, fs: Any) -> tuple[str | None, str | None]:
    """``(index URL, None)`` or ``(None, single-file URL)`` for a model URL.

    An index or ``.safetensors`` URL is itself; a folder URL has, as a local
    folder, ``model.safetensors.index.json``, else ``model.safetensors``, else
    its only ``*.safetensors.index.json`` or only ``*.safetensors`` (where the
    backend can list a folder: S3, GCS, Azure; not plain HTTP).
    """
    base = _path_part(url)
    if base.endswith(INDEX_SUFFIX):
        return url, None
    if base.endswith(SAFETENSORS_SUFFIX):
        return None, url
    folder = base.rstrip("/")
    for name, is_index in ((DEFAULT_PREFIX + INDEX_SUFFIX, True), (DEFAULT_PREFIX + SAFETENSORS_SUFFIX, False)):
        if _exists(url_join(folder, name), options, fs):
            return (url_join(folder, name), None) if is_index else (None, url_join(folder, name))
    names = _listed(folder, fs)
    if names is None:
        raise ShardIndexError(
            f"{folder}: no {DEFAULT_PREFIX}{INDEX_SUFFIX} or {DEFAULT_PREFIX}{SAFETENSORS_SUFFIX} "
            "there, and the folder cannot be listed: give the index's or the file's URL"
        )
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    if len(indexes) > 1:
        raise ShardIndexError(f"{folder} has several indexes ({', '.join(indexes)}); open one of them")
    if indexes:
        return url_join(folder, indexes[0]), None
    files = [n for n in names if n.endswith(SAFETENSORS_SUFFIX)]
    if len(files) != 1:
        raise ShardIndexError(
            f"{folder} has no {DEFAULT_PREFIX}{INDEX_SUFFIX} and {len(files)} .safetensors "
            "files; expected an index or one file"
        )
    return None, url_join(folder, files[0])


class RemoteShards:
    """A remote model's index, shard headers and open shard objects (see the module docs)."""

    #: Remote shards are read by range into private memory, never mapped.
    backend = "pread"

    def __init__(self, url: str, options: RemoteOptions) -> None:
        self.options = options
        #: One file system (one client, one connection pool) for every object of the model.
        self.fs = fs = file_system(url, options)
        index_url, single = find_remote_model(url, options, fs)
        if index_url is not None:
            raw = read_remote_small(index_url, MAX_HEADER_SIZE, options, fs)
            weight_map, metadata = parse_index_doc(raw, index_url)
            folder = url_parent(index_url)
            urls = {s: url_join(folder, s) for s in sorted(set(weight_map.values()))}
        else:
            assert single is not None
            folder = url_parent(single)
            urls = {_path_part(single).rsplit("/", 1)[-1]: single}  # its query kept: presigned URLs
        with ThreadPoolExecutor(max(1, min(OPEN_CONCURRENCY, len(urls)))) as pool:
            opened = dict(zip(urls, pool.map(lambda u: _open_shard(u, options, fs), urls.values()),
                              strict=True))
        self.files: dict[str, RemoteFile] = {s: f for s, (f, _, _) in opened.items()}
        self.headers: dict[str, Header] = {s: h for s, (_, h, _) in opened.items()}
        self._raw: dict[str, bytes] = {s: raw for s, (_, _, raw) in opened.items()}
        if index_url is not None:
            self.index = RemoteIndex(folder, weight_map, metadata, index_url)
            for shard, header in self.headers.items():
                check_shard(self.index, shard, header)
            check_total_size(self.index, self.headers)
        else:
            ((name, header),) = self.headers.items()
            self.index = RemoteIndex(folder, {n: name for n in header.tensors}, {}, None)
        self._small: dict[str, bytes] = {}
        self._small_lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.index.folder

    def location(self, shard: str) -> str:
        return self.files[shard].url

    def size(self, shard: str) -> int:
        return self.files[shard].size

    def local_path(self, shard: str) -> Path | None:
        return None

    def check_unchanged(self, shard: str) -> None:
        """Nothing to look at between reads: every request of the shard is
        checked to answer for the object opened (its ETag and size)."""

    def _fetch_small(self, url: str) -> bytes:
        """A small object beside the model (its signature), fetched once per model."""
        with self._small_lock:
            data = self._small.get(url)
        if data is None:
            # The model's file system where the signature sits on the same kind
            # of store; its own for one elsewhere (TrustPolicy(signature=URL)).
            same = url.split("://", 1)[0] == self.index.folder.split("://", 1)[0]
            data = read_remote_small(url, MAX_SMALL, self.options, self.fs if same else None)
            with self._small_lock:
                data = self._small.setdefault(url, data)
        return data

    def verifier(self, shard: str, verify: Verifier) -> Verifier:
        return remote_verifier(verify, self.files[shard], self._fetch_small)

    def open(self, shard: str, framework: str, device: str, backend: str,
             verify: Verifier | None) -> SafeOpen:
        v = None if verify is None else self.verifier(shard, verify)
        return SafeOpen(self.files[shard], framework, device, backend="pread", verify=v)

    def file_verifier(self, shard: str, verify: Verifier) -> FileVerifier:
        """The shard's verifier, its raw header checked (the signature fetched first)."""
        v = self.verifier(shard, verify).for_file(Path(self.location(shard)))
        if v.check_open(self._raw[shard], self.size(shard)) is not None:
            raise VerificationError(
                f"{self.location(shard)}: signed only whole, so it can only be checked whole: "
                "download it and verify the copy"
            )
        return v


def _open_shard(url: str, options: RemoteOptions, fs: Any) -> tuple[RemoteFile, Header, bytes]:
    f = RemoteFile(url, options, fs)
    header, raw = f.read_header()
    return f, header, raw


__all__ = ["RemoteShards", "find_remote_model", "names_one_file"]

