"""The fault matrix: a proxy of our own between the reader and nginx breaks
answers on purpose; each fault ends in a typed error or a retry, never in
wrong bytes handed over."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from remote_kit import Model, same
from servers import FaultProxy, Nginx, Request, Response

import tensorfile
from tensorfile.errors import (
    DigestMismatchError,
    RemoteChangedError,
    RemoteRangeError,
    RemoteReadError,
    RemoteRedirectError,
)
from tensorfile.remote import RemoteOptions, verify_remote

#: Small blocks, so a load is many requests; few quick retries.
OPTS = RemoteOptions(block_size=64 << 10, concurrency=4, retries=2)


@pytest.fixture
def proxy(nginx: Nginx) -> Iterator[FaultProxy]:
    with FaultProxy(nginx.port) as p:
        yield p


def _data(req: Request) -> bool:
    """A request for tensor bytes (not the first, header-probing one)."""
    return not req.headers.get("Range", "").startswith("bytes=0-")


def _policy(model: Model) -> tensorfile.integrity.TrustPolicy:
    return tensorfile.integrity.TrustPolicy(key=model.pub, signature=model.root / "model.sig")


def test_through_the_proxy_unbroken(proxy: FaultProxy, model: Model) -> None:
    same(tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS), model.tensors)
    assert proxy.requests > 5


def test_flipped_byte_is_a_digest_mismatch(proxy: FaultProxy, model: Model) -> None:
    def flip(n: int, req: Request, resp: Response) -> bytes:
        if _data(req) and len(resp.body) > 100:
            body = bytearray(resp.body)
            body[len(body) // 2] ^= 0x10
            return resp.encode(body=bytes(body))
        return resp.encode()

    proxy.fault = flip
    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(proxy.url("m.safetensors"), verify=_policy(model), remote=OPTS)
    with pytest.raises(DigestMismatchError):
        verify_remote(proxy.url("m.safetensors"), _policy(model), OPTS)
    with tensorfile.safe_open(proxy.url("m.safetensors"), verify=_policy(model), remote=OPTS) as f, \
            pytest.raises(DigestMismatchError):
        f.get_tensor("layer.0.weight")


def test_truncated_body_is_retried_then_refused(proxy: FaultProxy, model: Model) -> None:
    cut: set[str] = set()

    def truncate_once(n: int, req: Request, resp: Response) -> bytes:
        rng = req.headers.get("Range", "")
        if _data(req) and rng not in cut:
            cut.add(rng)
            # The full Content-Length promised, half the body sent, connection closed.
            return resp.encode(body=resp.body[: len(resp.body) // 2], length=len(resp.body))
        return resp.encode()

    proxy.fault = truncate_once
    same(tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS), model.tensors)
    assert cut  # every data range was cut once, and read again

    def truncate_always(n: int, req: Request, resp: Response) -> bytes:
        if _data(req):
            return resp.encode(body=resp.body[: len(resp.body) // 2], length=len(resp.body))
        return resp.encode()

    proxy.fault = truncate_always
    with pytest.raises(RemoteReadError, match="gave up after 3 attempts"):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS)


def test_short_body_with_a_short_content_length_is_refused(proxy: FaultProxy, model: Model) -> None:
    def short(n: int, req: Request, resp: Response) -> bytes:
        return resp.encode(body=resp.body[:-8]) if _data(req) else resp.encode()

    proxy.fault = short
    with pytest.raises(RemoteRangeError, match="Content-Length"):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS)


def test_server_ignoring_range_is_refused(proxy: FaultProxy, model: Model) -> None:
    def no_range(n: int, req: Request) -> Request:
        req.headers.pop("Range", None)
        return req

    proxy.rewrite = no_range
    with pytest.raises(RemoteRangeError, match="ignored the Range header"):
        tensorfile.safe_open(proxy.url("m.safetensors"), remote=OPTS)

    # Only the tensor ranges ignored: the header came back right, the data does not.
    proxy.rewrite = lambda n, req: no_range(n, req) if _data(req) else req
    with pytest.raises(RemoteRangeError, match="ignored the Range header"):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS)


def test_wrong_content_range_is_refused(proxy: FaultProxy, model: Model) -> None:
    def shift(n: int, req: Request) -> Request:
        if _data(req):
            a, b = req.headers["Range"].removeprefix("bytes=").split("-")
            req.headers["Range"] = f"bytes={int(a) + 16}-{int(b) + 16}"
        return req

    proxy.rewrite = shift
    with pytest.raises(RemoteRangeError, match="answered with bytes"):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS)


def test_redirects_within_the_host_only(proxy: FaultProxy, nginx: Nginx, model: Model) -> None:
    def redirect(host: str):  # type: ignore[no-untyped-def]
        def fault(n: int, req: Request, resp: Response) -> bytes:
            if req.path.startswith("/moved/"):
                target = f"http://{host}/{req.path.removeprefix('/moved/')}"
                return Response(302, "Found", {"Location": target}, b"").encode()
            return resp.encode()
        return fault

    proxy.fault = redirect(f"127.0.0.1:{proxy.port}")
    same(tensorfile.load_file(proxy.url("moved/m.safetensors"), remote=OPTS), model.tensors)
    proxy.fault = redirect(f"localhost:{nginx.port}")  # the same bytes, another host
    with pytest.raises(RemoteRedirectError, match="another host"):
        tensorfile.load_file(proxy.url("moved/m.safetensors"), remote=OPTS)


def test_dropped_connection_is_retried_then_refused(proxy: FaultProxy, model: Model) -> None:
    dropped: set[str] = set()

    def drop_once(n: int, req: Request, resp: Response) -> bytes | None:
        rng = req.headers.get("Range", "")
        if _data(req) and rng not in dropped:
            dropped.add(rng)
            return None  # no answer at all: the connection closes
        return resp.encode()

    proxy.fault = drop_once
    same(tensorfile.load_file(proxy.url("m.safetensors"), verify=_policy(model), remote=OPTS),
         model.tensors)
    proxy.fault = lambda n, req, resp: None if _data(req) else resp.encode()
    with pytest.raises(RemoteReadError):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS)


def test_a_stalled_server_times_out(proxy: FaultProxy, model: Model) -> None:
    def stall(n: int, req: Request, resp: Response) -> bytes:
        if _data(req):
            time.sleep(2)  # headers and body withheld
        return resp.encode()

    proxy.fault = stall
    quick = RemoteOptions(block_size=1 << 20, retries=1, read_timeout=0.3)
    t = time.monotonic()
    with pytest.raises(RemoteReadError, match="Timeout"):
        tensorfile.load_file(proxy.url("m.safetensors"), remote=quick)
    assert time.monotonic() - t < 2


def test_server_errors_are_retried(proxy: FaultProxy, model: Model) -> None:
    failed: set[str] = set()

    def fail_once(n: int, req: Request, resp: Response) -> bytes:
        rng = req.headers.get("Range", "")
        if rng not in failed:
            failed.add(rng)
            return Response(503, "Busy", {}, b"try later").encode()
        return resp.encode()

    proxy.fault = fail_once
    same(tensorfile.load_file(proxy.url("m.safetensors"), remote=OPTS), model.tensors)


def _replace(path: Path, model: Model) -> None:
    """Write other bytes of the same size over ``path`` (a new ETag: mtime-size)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(data))
    later = time.time() + 5
    os.utime(tmp, (later, later))
    os.replace(tmp, path)


def test_object_replaced_between_requests(nginx: Nginx, proxy: FaultProxy, model: Model) -> None:
    swap = model.root / "swap.safetensors"
    shutil.copyfile(model.root / "m.safetensors", swap)
    # The server itself refuses the old ETag (If-Match: 412).
    with tensorfile.safe_open(nginx.url("swap.safetensors"), remote=OPTS) as f:
        assert f.remote is not None and f.remote.validator
        _replace(swap, model)
        with pytest.raises(RemoteChangedError):
            f.get_tensor("embed")
    # A server (or cache) that ignores If-Match: the client compares the ETag itself.
    shutil.copyfile(model.root / "m.safetensors", swap)

    def no_if_match(n: int, req: Request) -> Request:
        req.headers.pop("If-Match", None)
        return req

    proxy.rewrite = no_if_match
    with tensorfile.safe_open(proxy.url("swap.safetensors"), remote=OPTS) as f:
        _replace(swap, model)
        with pytest.raises(RemoteChangedError, match="ETag"):
            f.tensors()
    # The size changed too: the Content-Range total says so.
    shutil.copyfile(model.root / "m.safetensors", swap)
    with tensorfile.safe_open(proxy.url("swap.safetensors"), remote=OPTS) as f:
        swap.write_bytes(swap.read_bytes() + b"\0" * 10)
        with pytest.raises(RemoteChangedError):
            f.get_tensor("embed")
    swap.unlink()


def test_nothing_is_handed_over_from_a_failed_load(proxy: FaultProxy, model: Model) -> None:
    """A verified safe_open keeps no partially checked tensor: after a failure
    the next read fetches and checks again."""
    bad = {"on": True}

    def flip(n: int, req: Request, resp: Response) -> bytes:
        if bad["on"] and _data(req) and len(resp.body) > 100:
            body = bytearray(resp.body)
            body[0] ^= 1
            return resp.encode(body=bytes(body))
        return resp.encode()

    proxy.fault = flip
    with tensorfile.safe_open(proxy.url("m.safetensors"), verify=_policy(model), remote=OPTS) as f:
        with pytest.raises(DigestMismatchError):
            f.tensors()
        bad["on"] = False
        got = f.tensors()
    same(got, model.tensors)
    assert isinstance(got["embed"], np.ndarray)
