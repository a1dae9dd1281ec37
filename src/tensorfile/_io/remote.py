"""Reading safetensors files from object storage and HTTP, through fsspec.

A URL (``s3://``, ``gs://``, ``https://``, any scheme fsspec knows) opens as a
:class:`RemoteFile`: fsspec resolves the scheme, credentials and endpoint
(``storage_options``, as fsspec and its backends take them); tensorfile asks
it only for byte ranges and checks every answer before a byte is used.

- The header costs one range request (the first :data:`HEADER_GUESS` bytes),
  two when it is longer; that first answer also gives the object's size and
  its ETag.
- Tensor bytes are fetched in blocks of ``block_size``, ``concurrency`` at a
  time, straight into the caller's final buffers (no staging copy); ranges
  at most ``merge_gap`` apart share a request (the gap is dropped); a tensor
  that is verified is hashed in order as its blocks land, and the read
  returns only after every check passed.
- Each answer must be exactly the range asked for (``206`` and the right
  ``Content-Range`` over HTTP; the right ``ContentRange`` from S3) of the same
  object (ETag, sent back as ``If-Match``; a changed size): anything else is a
  typed :class:`~tensorfile.errors.RemoteError`. A dropped connection, a body
  that ends early or a 5xx is retried ``retries`` times. A redirect is
  followed only within one host.

fsspec is imported when the first URL is opened, never by the numpy-only core.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from tensorfile._format import header as hdr
from tensorfile._format.header import Header
from tensorfile._io.fresh import FaultIn
from tensorfile._io.verifier import FileVerifier, TensorCheck, Verifier
from tensorfile.errors import (
    RemoteChangedError,
    RemoteError,
    RemoteRangeError,
    RemoteReadError,
    RemoteRedirectError,
    RemoteSupportError,
    TruncatedFileError,
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")  # two letters at least: never C://

#: Bytes asked for by the first request: the length prefix and, for nearly
#: every model, the whole header (a 10,000-tensor header is about 1 MB, a
#: typical one a few tens of KB), so ``inspect`` is one request.
HEADER_GUESS = 1 << 18
DEFAULT_CONCURRENCY = 16
DEFAULT_BLOCK_SIZE = 16 << 20
DEFAULT_RETRIES = 3
#: Runs of a read at most this far apart are fetched by one request, the gap
#: read and dropped: 1 MiB costs about 1 ms at 1 GB/s, less than one round
#: trip to an object store (10-30 ms). A tensor-parallel rank's strided runs
#: (a block split along a later dimension) are otherwise one request each.
DEFAULT_MERGE_GAP = 1 << 20
#: Ranges of one :meth:`RemoteFile.read_many` fetched per concurrent batch.
_MANY_BATCH = 1024
#: Redirects followed for one request (within one host).
MAX_REDIRECTS = 5

T = TypeVar("T")


def is_url(name: object) -> bool:
    """Whether ``name`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(name, str) and _URL.match(name) is not None


@dataclass(frozen=True)
class RemoteOptions:
    """How a remote file is read: fsspec's ``storage_options`` (credentials,
    endpoint, headers), and how many range requests of what size are in flight."""

    storage_options: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    block_size: int = DEFAULT_BLOCK_SIZE
    retries: int = DEFAULT_RETRIES
    #: Seconds an HTTP answer may go silent (connecting, or between two reads
    #: of its body) before the attempt counts as failed: a stalled server
    #: never hangs a load.
    read_timeout: float = 60.0
    #: Bytes between two wanted ranges read (and dropped) rather than asked
    #: for by another request (0: only the wanted bytes, one request a run).
    merge_gap: int = DEFAULT_MERGE_GAP

    def __post_init__(self) -> None:
        if (self.concurrency < 1 or self.block_size < 1 or self.retries < 0
                or self.read_timeout <= 0 or self.merge_gap < 0):
            raise ValueError(
                "concurrency and block_size must be at least 1, retries and merge_gap at "
                "least 0, read_timeout above 0"
            )


class _Transient(Exception):
    """A failure worth retrying (dropped connection, short body, 5xx)."""


def _import_fsspec() -> Any:
    try:
        import fsspec
        import fsspec.asyn
    except ImportError:
        raise RemoteSupportError(
            "reading a URL needs fsspec: pip install 'tensorfile[remote]'"
        ) from None
    return fsspec


class _Sink:
    """Consecutive pieces of the caller's buffers that one response fills in order."""

    def __init__(self, views: Sequence[memoryview]) -> None:
        self._views = list(views)
        self.size = sum(len(v) for v in views)
        self._i = 0
        self._at = 0
        self.written = 0

    def reset(self) -> None:
        self._i = self._at = self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        if self.written + len(data) > self.size:
            raise _Overflow()
        src = memoryview(data)
        while len(src):
            view = self._views[self._i]
            n = min(len(view) - self._at, len(src))
            view[self._at : self._at + n] = src[:n]
            src = src[n:]
            self._at += n
            self.written += n
            if self._at == len(view):
                self._i += 1
                self._at = 0


class _Overflow(Exception):
    """The body is longer than the range asked for."""


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _parse_content_range(value: str | None, where: str) -> tuple[int, int, int | None]:
    m = _CONTENT_RANGE.match((value or "").strip())
    if m is None:
        raise RemoteRangeError(f"{where}: answered a range request without a valid Content-Range ({value!r:.80})")
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)) + 1, total


class _Fetcher:
    """One object behind a URL: ranged reads that are checked to be that range
    of that object. Subclasses speak one backend."""

    def __init__(self, url: str, label: str) -> None:
        self.url = url
        self.label = label
        self.size: int | None = None
        #: ETag (or version) of the first answer: every later answer must match it.
        self.validator: str | None = None

    def _expect(self, start: int, end: int, got: tuple[int, int, int | None]) -> None:
        a, b, total = got
        if total is not None and self.size is not None and total != self.size:
            raise RemoteChangedError(
                f"{self.label}: the object is now {total:,} bytes, was {self.size:,} "
                "(replaced between two requests)"
            )
        if (a, b) != (start, end):
            raise RemoteRangeError(
                f"{self.label}: asked for bytes [{start}, {end}), the server answered "
                f"with bytes [{a}, {b})"
            )

    def _same_object(self, validator: str | None) -> None:
        if validator is None:
            return
        if self.validator is None:
            self.validator = validator
        elif validator != self.validator:
            raise RemoteChangedError(
                f"{self.label}: the object changed between two requests "
                f"(ETag {self.validator} became {validator})"
            )

    async def _answer(self, start: int, end: int, sink: _Sink | None) -> tuple[bytes, int]:
        """One checked ranged GET: the bytes (into ``sink``, or returned when
        it is None) and the object's size."""
        raise NotImplementedError

    async def fetch(self, start: int, end: int, sink: _Sink) -> None:
        """Write bytes ``[start, end)`` into ``sink`` or raise."""
        await self._answer(start, end, sink)

    async def probe(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the object is smaller); sets ``size``."""
        data, total = await self._answer(0, n, None)
        self.size = total
        return data

    async def _body(
        self, read: Callable[[], Awaitable[bytes]], start: int, end: int, sink: _Sink | None,
        cut: Callable[[BaseException], bool],
    ) -> bytes:
        """Copy a response body (``read()``: its next chunk, empty at the end)
        into ``sink`` (or into bytes returned when it is None); exactly
        ``end - start`` bytes, or raise. ``cut(e)``: whether ``e`` means the
        connection broke (retried), not a bug."""
        out = bytearray(end - start) if sink is None else None
        target = _Sink([memoryview(out)]) if out is not None else sink
        assert target is not None
        target.reset()
        try:
            while chunk := await read():
                target.write(chunk)
        except _Overflow:
            raise RemoteRangeError(
                f"{self.label}: the body of the answer for bytes [{start}, {end}) is longer than the range"
            ) from None
        except Exception as e:
            if not cut(e):
                raise
            raise _Transient(f"body cut off: {type(e).__name__}: {e}") from None
        if target.written != end - start:
            raise _Transient(f"body ended after {target.written} of {end - start} bytes")
        return bytes(out) if out is not None else b""


def _aiohttp_cut(e: BaseException) -> bool:
    import aiohttp

    return isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                          asyncio.TimeoutError))


def _stream_cut(e: BaseException) -> bool:
    """A broken S3 body stream: an OSError, a timeout, or an aiohttp or botocore stream error."""
    return isinstance(e, (OSError, asyncio.TimeoutError)) or type(e).__module__.split(".")[0] in (
        "aiohttp", "botocore", "aiobotocore", "urllib3")


class _HTTPFetcher(_Fetcher):
    """HTTP(S) through fsspec's aiohttp session (its ``client_kwargs``,
    ``headers`` and other request options apply), with each answer checked."""

    def __init__(self, fs: Any, url: str, read_timeout: float) -> None:
        super().__init__(url, url)
        self._fs = fs
        self._origin = urlsplit(url)[:2]
        self._read_timeout = read_timeout

    async def _get(self, start: int, end: int) -> Any:
        import aiohttp

        session = await self._fs.set_session()
        kw = dict(self._fs.kwargs)
        kw.setdefault("timeout", aiohttp.ClientTimeout(
            total=None, sock_connect=self._read_timeout, sock_read=self._read_timeout))
        headers = dict(kw.pop("headers", None) or {})
        headers["Range"] = f"bytes={start}-{end - 1}"
        if self.validator is not None and not self.validator.startswith("W/"):
            # The server itself refuses (412) a range of another version.
            headers["If-Match"] = self.validator
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                r = await session.get(
                    self._fs.encode_url(url), headers=headers, allow_redirects=False, **kw
                )
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                raise _Transient(f"connection failed: {type(e).__name__}: {e}") from None
            if r.status not in (301, 302, 303, 307, 308):
                return r
            target = urljoin(url, r.headers.get("Location", ""))
            r.release()
            if urlsplit(target)[:2] != self._origin:
                raise RemoteRedirectError(
                    f"{self.label}: redirected to another host ({urlsplit(target).netloc or target!r}); "
                    "tensorfile follows redirects within one host only"
                )
            url = target
        raise RemoteRedirectError(f"{self.label}: more than {MAX_REDIRECTS} redirects")

    async def _answer(self, start: int, end: int, sink: _Sink | None) -> tuple[bytes, int]:

        r = await self._get(start, end)
        try:
            if r.status == 412:
                raise RemoteChangedError(
                    f"{self.label}: the object changed between two requests (If-Match failed)"
                )
            if r.status == 404:
                raise FileNotFoundError(2, "no such object (HTTP 404)", self.label)
            if r.status in (401, 403):
                raise PermissionError(13, f"access refused (HTTP {r.status})", self.label)
            if r.status == 416 and self.size is None:
                return b"", 0  # an empty object: nothing to range over
            if r.status == 416:
                raise RemoteChangedError(
                    f"{self.label}: bytes [{start}, {end}) are past the object's end (HTTP 416): "
                    "it is shorter than when it was opened"
                )
            if r.status >= 500:
                raise _Transient(f"HTTP {r.status}")
            if r.status == 200:
                raise RemoteRangeError(
                    f"{self.label}: the server ignored the Range header (HTTP 200 with the whole "
                    "object); tensorfile reads remote models by range only"
                )
            if r.status != 206:
                raise RemoteError(f"{self.label}: unexpected HTTP {r.status} for a range request")
            a, b, total = _parse_content_range(r.headers.get("Content-Range"), self.label)
            if self.size is None:  # the probe: the object may be shorter than asked
                if total is None or a != start or b > end or (b < end and b != total):
                    raise RemoteRangeError(
                        f"{self.label}: asked for bytes [{start}, {end}), the server answered "
                        f"with bytes [{a}, {b}) of {total}"
                    )
                end = b
            else:
                self._expect(start, end, (a, b, total))
            self._same_object(r.headers.get("ETag") or r.headers.get("Last-Modified"))
            length = r.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != end - start:
                raise RemoteRangeError(
                    f"{self.label}: Content-Length {length} for a range of {end - start} bytes"
                )
            data = await self._body(r.content.readany, start, end, sink, _aiohttp_cut)
            return data, (total if total is not None else end)
        finally:
            r.release()


class _S3Fetcher(_Fetcher):
    """S3 through s3fs (its credentials, endpoint and client options apply):
    ``get_object`` with ``Range`` and ``IfMatch`` (or the URL's version)."""

    def __init__(self, fs: Any, path: str, url: str) -> None:
        super().__init__(url, url)
        self._fs = fs
        self._bucket, self._key, self._version = fs.split_path(path)

    async def _answer(self, start: int, end: int, sink: _Sink | None) -> tuple[bytes, int]:
        kw: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key,
                              "Range": f"bytes={start}-{end - 1}"}
        if self._version:
            kw["VersionId"] = self._version
        elif self.validator is not None:
            kw["IfMatch"] = self.validator
        try:
            resp = await self._fs._call_s3("get_object", **kw)
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as e:
            code = _s3_error_code(e)
            if code in ("PreconditionFailed", "412"):
                raise RemoteChangedError(
                    f"{self.label}: the object changed between two requests (IfMatch failed)"
                ) from None
            if code in ("InvalidRange", "416") and self.size is None:
                return b"", 0  # an empty object: nothing to range over
            if code in ("InvalidRange", "416"):
                raise RemoteChangedError(
                    f"{self.label}: bytes [{start}, {end}) are past the object's end: it is "
                    "shorter than when it was opened"
                ) from None
            if code and code not in _S3_RETRY:
                raise RemoteError(f"{self.label}: S3 refused the range request ({code}): {e}") from None
            raise _Transient(str(e)) from None
        body = resp["Body"]
        try:
            a, b, total = _parse_content_range(resp.get("ContentRange"), self.label)
            if self.size is None:
                if total is None or a != start or b > end or (b < end and b != total):
                    raise RemoteRangeError(
                        f"{self.label}: asked for bytes [{start}, {end}), S3 answered bytes [{a}, {b})"
                    )
                end = b
            else:
                self._expect(start, end, (a, b, total))
            self._same_object(resp.get("VersionId") if self._version else resp.get("ETag"))
            data = await self._body(lambda: body.read(1 << 20), start, end, sink, _stream_cut)
            return data, (total if total is not None else end)
        finally:
            body.close()


#: S3 errors worth another try (with none: the connection itself failed).
_S3_RETRY = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                       "500", "502", "503", "504"})


def _s3_error_code(e: BaseException) -> str:
    """The S3 error code (or HTTP status) behind an error s3fs translated into
    an ``OSError``: botocore's ``ClientError`` is its cause."""
    seen: BaseException | None = e
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            meta = response.get("ResponseMetadata") or {}
            return str(error.get("Code") or meta.get("HTTPStatusCode") or "")
        seen = seen.__cause__ or seen.__context__
    return ""


class _GenericFetcher(_Fetcher):
    """Any other fsspec file system: ``cat_file`` by range, its length checked,
    and the size and ETag (where the backend reports one) from ``info``."""

    def __init__(self, fs: Any, path: str, url: str) -> None:
        super().__init__(url, url)
        self._fs = fs
        self._path = path

    async def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        if getattr(self._fs, "async_impl", False):
            return await getattr(self._fs, "_" + name)(*args, **kw)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: getattr(self._fs, name)(*args, **kw)
        )

    async def probe(self, n: int) -> bytes:
        info = await self._call("info", self._path)
        if info.get("type", "file") != "file":
            raise IsADirectoryError(21, "is a folder", self.label)
        self.size = int(info["size"])
        self._same_object(_etag(info))
        out = bytearray(min(n, self.size))
        await self.fetch(0, len(out), _Sink([memoryview(out)]))
        return bytes(out)

    async def fetch(self, start: int, end: int, sink: _Sink) -> None:
        if start == end:
            return
        data = await self._call("cat_file", self._path, start=start, end=end)
        if len(data) != end - start:
            raise _Transient(f"asked for {end - start} bytes at {start}, got {len(data)}")
        sink.reset()
        sink.write(data)


def _etag(info: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "crc32c", "version_id"):
        value = info.get(key)
        if value:
            return str(value)
    return None


class RemoteFile:
    """An object behind a URL, read by checked byte ranges (see the module docs)."""

    def __init__(self, url: str, options: RemoteOptions | None = None, fs: Any = None) -> None:
        """``fs``: the fsspec file system to use, from :func:`file_system` (one
        per model, so its shards share a client), or None for the URL's own."""
        fsspec = _import_fsspec()
        self.url = url
        self.options = options or RemoteOptions()
        if fs is None:
            fs, path = _url_to_fs(url, self.options)
        else:
            path = fs._strip_protocol(url)
        self.fs = fs
        self._loop = fsspec.asyn.get_loop()
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        fetcher: _Fetcher
        if "http" in protocols or "https" in protocols:
            fetcher = _HTTPFetcher(fs, url, self.options.read_timeout)
        elif "s3" in protocols or "s3a" in protocols:
            fetcher = _S3Fetcher(fs, path, url)
        else:
            fetcher = _GenericFetcher(fs, path, url)
        self._fetcher = fetcher
        self._lock = threading.Lock()
        #: Bytes received from the server for this file (header, tensors, retries too).
        self.bytes_fetched = 0
        #: Range requests answered.
        self.requests = 0
        self._prefix = self._run(self._retrying(lambda: fetcher.probe(HEADER_GUESS)))
        self._count(len(self._prefix))
        assert fetcher.size is not None
        self.size: int = fetcher.size

    @property
    def label(self) -> str:
        return self.url

    @property
    def validator(self) -> str | None:
        """The ETag (or version) every answer was checked against."""
        return self._fetcher.validator

    def _count(self, n: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes_fetched += n
            self.requests += requests

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        import fsspec.asyn

        if threading.current_thread() is getattr(self._loop, "_thread", None):
            raise RuntimeError("RemoteFile cannot be read from fsspec's own event loop thread")
        try:
            return fsspec.asyn.sync(self._loop, lambda: coro)  # type: ignore[no-any-return]
        except RemoteError:
            raise
        except _Transient as e:  # pragma: no cover - _retrying turns these into RemoteReadError
            raise RemoteReadError(f"{self.label}: {e}") from None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        last = ""
        for i in range(self.options.retries + 1):
            try:
                return await attempt()
            except _Transient as e:
                last = str(e)
                await asyncio.sleep(min(0.05 * 2**i, 1.0))
        raise RemoteReadError(
            f"{self.label}: gave up after {self.options.retries + 1} attempts: {last}"
        )

    def read_header(self) -> tuple[Header, bytes]:
        """The validated header and its raw bytes (one request more only when
        the header is longer than the first answer)."""
        prefix = self._prefix
        n = hdr.read_length(prefix[:8], self.size)
        if len(prefix) < 8 + n:
            rest = bytearray(8 + n - len(prefix))
            self.read([(len(prefix), memoryview(rest), None)])
            prefix = prefix + bytes(rest)
        raw = prefix[: 8 + n]
        header = hdr.parse_json(raw[8:], self.size - 8 - n, n)
        # Keep the header only: a sharded model holds one of these per shard.
        self._prefix = raw
        return header, raw

    def pread(self, size: int, offset: int, into: Any = None) -> Any:
        """Bytes ``[offset, offset + size)`` into a new or the given buffer."""
        buf = bytearray(size) if into is None else into
        self.read([(offset, memoryview(buf).cast("B")[:size], None)])
        return buf

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset`` (a
        :class:`~tensorfile._io.sources.ByteSource`, as the scanner and the
        converter read a checkpoint): from the first answer where it has them,
        otherwise by checked range requests."""
        self.read_many([(offset, view)])

    def read_many(self, jobs: Sequence[tuple[int, memoryview]]) -> None:
        """:meth:`read_into` of each ``(offset, view)``, fetched concurrently
        (a :class:`~tensorfile._io.sources.ByteSource`): exactly those
        ranges, never a gap between them, so a scan fetches only the pages it
        looks at."""
        rest = []
        for offset, view in jobs:
            end = offset + len(view)
            if 0 <= offset and end <= len(self._prefix):
                view[:] = self._prefix[offset:end]
            else:
                rest.append((offset, view, None))
        # In batches: a hostile zip may name 100,000 entries (the scanner's
        # limit), and one batch is one asyncio task per request.
        for at in range(0, len(rest), _MANY_BATCH):
            self.read(rest[at : at + _MANY_BATCH], merge_gap=0)

    def read(self, jobs: Sequence[tuple[int, memoryview, TensorCheck | None]],
             *, merge_gap: int | None = None, fresh: bool = False) -> None:
        """Fill each ``view`` with the object's bytes from ``offset`` on.

        Neighbouring ranges are fetched together, in requests of at most
        ``block_size`` bytes, ``concurrency`` at a time. A job's ``check`` is
        fed its bytes in order as they land and finished before this returns;
        any failure (a digest, a range, a changed object) raises and nothing
        is returned. ``merge_gap`` overrides the options' for this call.
        ``fresh``: the views are new memory, never touched; a helper thread
        faults their pages in, request by request, and each request is sent
        only once its memory is ready (tensorfile._io.fresh)."""
        for offset, view, _ in jobs:
            if offset < 0 or offset + len(view) > self.size:
                raise TruncatedFileError(
                    f"{self.label}: bytes [{offset}, {offset + len(view)}) are past the end of "
                    f"the {self.size:,}-byte object"
                )
        if jobs:
            gap = self.options.merge_gap if merge_gap is None else merge_gap
            self._run(self._read_all(jobs, gap, fresh))

    def _plan(
        self, jobs: Sequence[tuple[int, memoryview, TensorCheck | None]], merge_gap: int
    ) -> list[tuple[int, int, list[tuple[int, int, memoryview]]]]:
        """Requests ``(start, end, pieces)``: each piece ``(job, index in the
        job, view)``; runs of adjacent jobs share requests up to block_size,
        and so do runs at most ``merge_gap`` apart, each gap a piece of job
        ``-1`` (a scratch view, dropped)."""
        block = self.options.block_size
        gap = min(merge_gap, block)
        scratch = memoryview(bytearray(gap)) if gap else None
        order = sorted(range(len(jobs)), key=lambda j: jobs[j][0])
        requests: list[tuple[int, int, list[tuple[int, int, memoryview]]]] = []
        cur_start = cur_end = -1
        pieces: list[tuple[int, int, memoryview]] = []
        for j in order:
            offset, view, _ = jobs[j]
            at = k = 0
            while at < len(view):
                skip = offset + at - cur_end
                if pieces and scratch is not None and 0 < skip <= gap and offset + at - cur_start < block:
                    pieces.append((-1, 0, scratch[:skip]))
                    cur_end += skip
                if cur_end != offset + at or cur_end - cur_start >= block:
                    if pieces:
                        requests.append((cur_start, cur_end, pieces))
                    pieces, cur_start, cur_end = [], offset + at, offset + at
                n = min(len(view) - at, block - (cur_end - cur_start))
                pieces.append((j, k, view[at : at + n]))
                cur_end += n
                at += n
                k += 1
        if pieces:
            requests.append((cur_start, cur_end, pieces))
        return requests

    async def _read_all(self, jobs: Sequence[tuple[int, memoryview, TensorCheck | None]],
                        merge_gap: int, fresh: bool) -> None:
        requests = self._plan(jobs, merge_gap)
        n_pieces = [0] * len(jobs)
        for _, _, pieces in requests:
            for j, k, _ in pieces:
                if j >= 0:  # not a gap read and dropped
                    n_pieces[j] = max(n_pieces[j], k + 1)
        landed: list[dict[int, memoryview]] = [{} for _ in jobs]
        fed = [0] * len(jobs)
        locks = [asyncio.Lock() for _ in jobs]
        sem = asyncio.Semaphore(self.options.concurrency)
        loop = asyncio.get_running_loop()
        hasher = _hash_pool()

        async def settle(j: int) -> None:
            """Feed job j's check its pieces in order, as far as they have landed."""
            check = jobs[j][2]
            if check is None:
                return
            async with locks[j]:
                while fed[j] < n_pieces[j] and fed[j] in landed[j]:
                    piece = landed[j].pop(fed[j])
                    await loop.run_in_executor(hasher, check.update, piece)
                    fed[j] += 1
                if fed[j] == n_pieces[j] and n_pieces[j] >= 0:
                    n_pieces[j] = -1  # finished once
                    await loop.run_in_executor(hasher, check.finish)

        faults = FaultIn(loop, [[v for j, _, v in p if j >= 0] for _, _, p in requests]) if fresh else None

        async def one(i: int, start: int, end: int, pieces: list[tuple[int, int, memoryview]]) -> None:
            if faults is not None:
                await faults.ready(i)
            async with sem:
                sink = _Sink([v for _, _, v in pieces])
                await self._retrying(lambda: self._fetcher.fetch(start, end, sink))
            self._count(end - start)
            mine = [(j, k, v) for j, k, v in pieces if j >= 0]
            for j, k, v in mine:
                landed[j][k] = v
            for j in dict.fromkeys(j for j, _, _ in mine):
                await settle(j)

        tasks = [asyncio.ensure_future(one(i, *r)) for i, r in enumerate(requests)]
        # Jobs with nothing to read (empty tensors) still finish their checks.
        for j, (_, view, check) in enumerate(jobs):
            if check is not None and len(view) == 0:
                tasks.append(asyncio.ensure_future(settle(j)))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if faults is not None:
                await faults.close()  # nothing writes into the caller's memory after this returns

    def read_small(self, url: str, limit: int) -> bytes:
        """The whole of a small object beside this one (a signature, an index):
        at most ``limit + 1`` bytes, so the caller can tell one that is too big."""
        return read_remote_small(url, limit, self.options)

    def close(self) -> None:
        """Nothing to release: the session belongs to fsspec's cached file system."""


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """Threads that hash verified tensors off the event loop (the digests
    release the GIL, so several tensors hash at once)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(4, thread_name_prefix="tensorfile-hash")
        return _POOL


def file_system(url: str, options: RemoteOptions) -> Any:
    """The fsspec file system that reads ``url`` with ``options.storage_options``."""
    return _url_to_fs(url, options)[0]


def _url_to_fs(url: str, options: RemoteOptions) -> tuple[Any, str]:
    fsspec = _import_fsspec()
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(options.storage_options))
    except (ImportError, ValueError) as e:
        raise RemoteSupportError(f"{url}: fsspec cannot open this URL: {e}") from None
    return fs, path


def read_remote_small(
    url: str, limit: int, options: RemoteOptions | None = None, fs: Any = None
) -> bytes:
    """At most ``limit + 1`` bytes of the small object at ``url`` (a signature,
    an index, pins); ``FileNotFoundError`` when there is none."""
    f = RemoteFile(url, options, fs)
    if f.size <= len(f._prefix):
        return f._prefix[: limit + 1]
    n = min(f.size, limit + 1)
    return bytes(f.pread(n, 0))


class _OneFile:
    """A :class:`Verifier` that hands out one remote file's verifier."""

    def __init__(self, file_verifier: FileVerifier) -> None:
        self._fv = file_verifier

    def for_file(self, path: object) -> FileVerifier:
        return self._fv


def remote_verifier(
    verify: Verifier, remote: RemoteFile, fetch: Callable[[str], bytes] | None = None
) -> Verifier:
    """``verify`` for the remote file ``remote``: a verifier that knows URLs
    (``for_url``, as :mod:`tensorfile.integrity.onload`'s) is given the URL,
    its size and ``fetch`` (reads a small object beside it, the signature; by
    default :meth:`RemoteFile.read_small`); any other is given the URL as a path."""
    for_url = getattr(verify, "for_url", None)
    if for_url is None:
        return verify
    if fetch is None:
        fetch = lambda u: remote.read_small(u, MAX_SMALL)  # noqa: E731
    return _OneFile(for_url(remote.url, remote.size, fetch))


#: Bytes of a small object beside a model (a signature) read at most; the
#: caller refuses what is over its own, lower limit.
MAX_SMALL = 256 << 20


def url_parent(url: str) -> str:
    """The "folder" of a URL: everything before its last ``/`` (query dropped)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    return base.rsplit("/", 1)[0]


def url_join(folder: str, name: str) -> str:
    """``name`` (a relative path inside the folder) under the URL ``folder``."""
    return folder.rstrip("/") + "/" + name
