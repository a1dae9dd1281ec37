"""Real servers on loopback for the remote tests and bench/bench_remote.py.

- :class:`Nginx`: the Debian ``nginx`` binary, run as this user with a
  config of its own in a temporary folder, serving a folder with range
  requests and ETags; its access log records each request's range, status
  and ``$body_bytes_sent`` (the server's own byte counts).
- :class:`S3Server`: moto in server mode (``ThreadedMotoServer``), the S3
  endpoint s3fs's own tests use; reached through s3fs.
- :class:`FaultProxy`: a small HTTP proxy of our own in front of nginx that
  breaks answers on purpose (flipped byte, cut body, ignored Range, wrong
  Content-Range, redirect to another host, dropped connection).

Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass
class LogLine:
    uri: str
    status: int
    body_bytes: int
    range: str
    #: The request's ``X-Rank`` header ("-" without one): which rank of a
    #: tensor-parallel test asked (fsspec's ``headers`` storage option sends it).
    rank: str = "-"


_LOG = re.compile(r'^(\S+) (\d+) (\d+) "([^"]*)" "([^"]*)"$')


class Nginx:
    """nginx serving ``root`` on a free loopback port (``with Nginx(root) as n:``)."""

    def __init__(self, root: Path, workdir: Path, *, limit_rate: str | None = None) -> None:
        """``limit_rate`` (nginx's syntax: ``"64m"`` is 64 MiB/s) caps each
        connection's sending rate, as an object store's per-connection
        bandwidth does: loads are then paced by the link, not by loopback's
        CPU-bound copy."""
        if NGINX is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        self.limit_rate = limit_rate
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def __enter__(self) -> Nginx:
        w = self.workdir
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (w / d).mkdir(parents=True, exist_ok=True)
        conf = w / "nginx.conf"
        # As root, nginx's workers would switch to nobody, who cannot read
        # pytest's private temporary folders: keep them as this user.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        conf.write_text(f"""
daemon off;
{user}
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format tf '$request_uri $status $body_bytes_sent "$http_range" "$http_x_rank"';
    access_log {self.access_log} tf;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    {f"limit_rate {self.limit_rate};" if self.limit_rate else ""}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ }}
    }}
}}
""")
        self._proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(w), "-e", str(w / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _wait_listening(self.port, self._proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def log(self) -> list[LogLine]:
        """The access log once no line has come for 0.2 s (at most 10 s).

        nginx writes a line as its request ends, which on a loaded machine can
        be well after the client has its bytes: a fixed short sleep miscounted
        requests under CI's load (and a late line of one test landed in the
        next one's count)."""
        lines = self._read_log()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.2)
            again = self._read_log()
            if len(again) == len(lines):
                break
            lines = again
        return lines

    def _read_log(self) -> list[LogLine]:
        out: list[LogLine] = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text().splitlines():
            m = _LOG.match(line)
            assert m is not None, line
            uri, status, sent, rng, rank = m.groups()
            out.append(LogLine(uri, int(status), int(sent), rng, rank))
        return out

    def clear_log(self) -> None:
        self.access_log.write_text("")
        if self._proc is not None:
            # nginx keeps its descriptor: truncating in place is what it sees.
            pass


class S3Server:
    """moto's S3 in server mode on a free loopback port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "testing", "secret": "testing", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def __enter__(self) -> S3Server:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(var, "testing")
        self._server.start()
        _wait_listening(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


#: What the proxy does to an answer: ``fault(request_number, request_head,
#: upstream_response) -> bytes to send`` (see the FAULTS in test_faults.py).
Fault = Callable[[int, "Request", "Response"], bytes | None]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]

    def head(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def encode(self, *, body: bytes | None = None, length: int | None = None) -> bytes:
        body = self.body if body is None else body
        headers = dict(self.headers)
        headers["Content-Length"] = str(len(body) if length is None else length)
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {self.status} {self.reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _read_head(f: Any) -> tuple[str, dict[str, str]] | None:
    first = f.readline()
    if not first:
        return None
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().title()] = v.strip()
    return first.decode("latin-1").strip(), headers


class FaultProxy:
    """An HTTP/1.1 proxy on loopback in front of ``upstream`` (host, port):
    every request is forwarded (one per connection) and its answer passed to
    ``fault``, which returns the bytes to send (None: close without a word).
    ``rewrite(n, request)`` may change a request before it is forwarded."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fault: Fault | None = None
        self.rewrite: Callable[[int, Request], Request] | None = None
        self.requests = 0
        #: Each answer passed on unchanged (no ``fault``), as nginx logs it:
        #: the byte counts of a server that keeps none (moto).
        self.log: list[LogLine] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    proxy._handle(self)
                except OSError:
                    pass  # the reader hung up first (it refused an answer): nothing to serve

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, h: socketserver.StreamRequestHandler) -> None:
        got = _read_head(h.rfile)
        if got is None:
            return
        first, headers = got
        method, path, _ = first.split(" ", 2)
        with self._lock:
            self.requests += 1
            n = self.requests
        req = Request(method, path, headers)
        if self.rewrite is not None:
            req = self.rewrite(n, req)
        req.headers["Connection"] = "close"
        req.headers["Host"] = f"127.0.0.1:{self.upstream_port}"
        with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
            up.sendall(req.head())
            uf = up.makefile("rb")
            status_line, rheaders = _read_head(uf) or ("HTTP/1.1 502 Bad", {})
            parts = status_line.split(" ", 2)
            body = uf.read(int(rheaders.get("Content-Length", "0")))
        resp = Response(int(parts[1]), parts[2] if len(parts) > 2 else "", rheaders, body)
        resp.headers.pop("Connection", None)
        resp.headers.pop("Keep-Alive", None)
        out = resp.encode() if self.fault is None else self.fault(n, req, resp)
        if self.fault is None:
            with self._lock:
                self.log.append(LogLine(req.path, resp.status, len(resp.body),
                                        req.headers.get("Range", ""), "-"))
        if out:
            try:
                h.wfile.write(out)
                h.wfile.flush()
            except OSError:
                pass
        # Closing without the rest of the body is the "dropped connection".
        h.connection.shutdown(socket.SHUT_RDWR)
