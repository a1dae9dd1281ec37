"""Scan and convert remote checkpoints without downloading them (issue 25, item 4).

A real nginx on loopback (its access log is the byte count) and moto's S3
server. The scanner reads a remote file through the same
:class:`~tensorfile._io.sources.Image` as a local one, fetching only the pages
it looks at: a torch zip checkpoint costs its central directory, its pickle
and the first page of each record, not the tensor data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import NGINX, Nginx, S3Server

from tensorfile.errors import ConversionError, RemoteChangedError
from tensorfile.pickles import Verdict, scan
from tensorfile.pickles.convert import convert
from tensorfile.scan.pickle import containers as containers_module

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
#: Tensors of 1 MiB each: the storages are most of the file.
N, SIDE = 8, 512


def _state(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer.{i}.weight": torch.randn(SIDE, SIDE, generator=g) for i in range(N)}


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scanio-www")
    torch.save(_state(), root / "model.pt")
    torch.save(_state(), root / "legacy.pt", _use_new_zipfile_serialization=False)
    (root / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    return root


@pytest.fixture(scope="module")
def server(www: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    with Nginx(www, tmp_path_factory.mktemp("scanio-nginx")) as n:
        yield n


def _fetched(server: Nginx, since: int) -> int:
    lines = server.log()[since:]  # log() waits for nginx's late lines
    assert all(line.status == 206 for line in lines), lines
    return sum(line.body_bytes for line in lines)


def _later(path: Path) -> None:
    """A modification time 10 s on: nginx's ETag is the time in seconds and the
    size, and a replacement within the same second would keep it."""
    t = time.time() + 10
    os.utime(path, (t, t))


def _same_streams(remote: Any, local: Any) -> None:
    assert (remote.format, remote.verdict) == (local.format, local.verdict)
    assert [s.to_dict() for s in remote.streams] == [s.to_dict() for s in local.streams]


def test_remote_zip_scan_reads_directory_and_pickle_not_storages(server: Nginx, www: Path) -> None:
    size = (www / "model.pt").stat().st_size
    before = len(server.log())
    (report,) = scan(server.url("model.pt")).files
    fetched = _fetched(server, before)
    (local,) = scan(www / "model.pt").files
    _same_streams(report, local)
    assert report.verdict is Verdict.SAFE and report.path == server.url("model.pt")
    # The first answer (256 KiB: the pickle and the start of the records), the
    # central directory and a page per record: about 2% of this 8 MiB file.
    assert fetched < 400_000 < size // 20, (fetched, size)


def test_remote_scan_of_many_records_asks_in_batches_for_exactly_their_pages(
        server: Nginx, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 records of 40 KiB: a local header and a sniff page each, fetched by
    # read_many in batches (made small here so that several run), never the
    # records' data between them.
    path = www / "many.pt"
    torch.save({f"t{i}": torch.full((10240,), float(i)) for i in range(300)}, path)
    from tensorfile._io import remote as remote_module

    monkeypatch.setattr(remote_module, "_MANY_BATCH", 7)
    before = len(server.log())
    (report,) = scan(server.url("many.pt")).files
    lines = server.log()[before:]
    (local,) = scan(path).files
    _same_streams(report, local)
    assert report.verdict is Verdict.SAFE
    pages = sum(1 for line in lines if line.body_bytes == 4096)
    assert pages >= 300, len(lines)  # one or two pages a record
    assert sum(line.body_bytes for line in lines) < path.stat().st_size // 4


def test_remote_legacy_and_raw_pickles_keep_their_verdicts(server: Nginx, www: Path) -> None:
    for name in ("legacy.pt", "evil.pkl"):
        (report,) = scan(server.url(name)).files
        (local,) = scan(www / name).files
        _same_streams(report, local)
    assert scan(server.url("evil.pkl")).files[0].verdict is Verdict.DANGEROUS


def test_an_object_replaced_mid_scan_is_an_error(
        server: Nginx, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = www / "swapped.pt"
    torch.save(_state(), victim)
    real = containers_module.zip_layout
    swapped = []

    def swap(*args: Any, **kw: Any) -> Any:
        if not swapped:  # after the first answer, before the central directory is read
            swapped.append(1)
            tmp = victim.with_suffix(".tmp")
            torch.save(_state(seed=1), tmp)  # the same size: only the ETag tells
            _later(tmp)
            os.replace(tmp, victim)
        return real(*args, **kw)

    monkeypatch.setattr(containers_module, "zip_layout", swap)
    (report,) = scan(server.url("swapped.pt")).files
    assert swapped and report.verdict is Verdict.ERROR
    errors = " ".join(s.error or "" for s in report.streams)
    assert "changed" in errors, errors


def test_a_remote_folder_or_missing_object_is_an_error(server: Nginx) -> None:
    (folder,) = scan(server.url("")).files
    assert folder.verdict is Verdict.ERROR and "remote folders" in (folder.error or "")
    (missing,) = scan(server.url("nothing.pt")).files
    assert missing.verdict is Verdict.ERROR


def test_convert_over_http_writes_the_same_tensors(server: Nginx, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    report = convert(server.url("model.pt"), out)
    from tensorfile import load_file

    got = load_file(out, framework="pt")
    want = _state()
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor)
    assert report.source == server.url("model.pt") and report.format == "torch-zip"
    assert len(report.source_sha256[server.url("model.pt")]) == 64


def test_convert_of_a_url_needs_a_local_output_and_refuses_dangerous(
        server: Nginx, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="local output path"):
        convert(server.url("model.pt"))
    with pytest.raises(ConversionError, match="remote folder"):
        convert(server.url("sub/"), tmp_path / "x.safetensors")
    from tensorfile.errors import UnsafePickleError

    with pytest.raises(UnsafePickleError):
        convert(server.url("evil.pkl"), tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()


def test_convert_of_an_object_replaced_midway_writes_nothing(
        server: Nginx, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorfile.convert import _checkpoint

    victim = www / "swapped2.pt"
    torch.save(_state(), victim)
    real = _checkpoint.Source.__init__

    def swap_after_open(self: Any, *args: Any, **kw: Any) -> None:
        real(self, *args, **kw)
        tmp = victim.with_suffix(".tmp")
        torch.save(_state(seed=2), tmp)
        _later(tmp)
        os.replace(tmp, victim)

    monkeypatch.setattr(_checkpoint.Source, "__init__", swap_after_open)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RemoteChangedError):
        convert(server.url("swapped2.pt"), out)
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "cli"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", "from tensorfile_cli.main import main; main()",
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})})


def test_cli_scan_and_convert_of_a_url(server: Nginx, tmp_path: Path) -> None:
    scanned = _cli("scan", "--json", server.url("model.pt"), server.url("evil.pkl"))
    assert scanned.returncode == 1, scanned.stderr
    files = json.loads(scanned.stdout)["result"]["files"]
    assert [f["verdict"] for f in files] == ["safe", "dangerous"]
    assert files[0]["path"] == server.url("model.pt")  # "//" kept, not folded as a path
    out = tmp_path / "m.safetensors"
    conv = _cli("convert", "--json", server.url("model.pt"), str(out))
    assert conv.returncode == 0, conv.stderr
    assert json.loads(conv.stdout)["result"]["outputs"] == [str(out)]
    # Run again over its own output: refused before anything is fetched, the file kept.
    before = out.read_bytes()
    again = _cli("convert", "--json", server.url("model.pt"), str(out))
    assert again.returncode == 2 and "--overwrite" in again.stdout + again.stderr
    assert out.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert _cli("convert", server.url("model.pt"), str(notes)).returncode == 2
    assert notes.read_text() == "mine"


@pytest.fixture(scope="module")
def s3_bucket(s3: S3Server, www: Path) -> S3Server:
    """The session's S3 server (conftest), with a bucket of this module's own."""
    client = s3.client()
    client.create_bucket(Bucket="ckpt")
    client.upload_file(str(www / "model.pt"), "ckpt", "model.pt")
    return s3


def test_s3_scan_and_convert(s3_bucket: S3Server, www: Path, tmp_path: Path) -> None:
    options = s3_bucket.storage_options
    (report,) = scan("s3://ckpt/model.pt", storage_options=options).files
    (local,) = scan(www / "model.pt").files
    _same_streams(report, local)
    out = tmp_path / "model.safetensors"
    convert("s3://ckpt/model.pt", out, storage_options=options)
    from tensorfile import load_file

    got = load_file(out, framework="pt")
    assert all(torch.equal(got[k], v) for k, v in _state().items())
    cli = _cli("scan", "s3://ckpt/model.pt",
               env={"TENSORFILE_STORAGE_OPTIONS": json.dumps(options)})
    assert cli.returncode == 0, (cli.stdout, cli.stderr)
