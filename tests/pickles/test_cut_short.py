"""A file cut short while the scanner or the converter reads it: a typed error, never SIGBUS.

Issue 22 (item 4): the scanner and the converter read checkpoints through a
memory map, and a page of a map whose file has been truncated kills the
process with ``SIGBUS`` (exit -7 from a child), with no message. Each test
truncates the file at a fixed point, between the reading of the container
(zip directory, GGUF header) and the reading of what it points at, in a
child process, so a signal shows as the child's exit code. The readers now
copy in what they read with ``pread`` (:mod:`tensorfile._io.sources`).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfile._io import sources
from tensorfile._io.sources import Image, open_image, unpack_from
from tensorfile.errors import FileReadError

ROOT = Path(__file__).resolve().parents[2]

# Each child cuts the file when the reader first sniffs an entry or assesses
# the GGUF: after the container was read (and the first bytes of every entry,
# asked for at once), before the entry's pickle stream is.
_CUT_AT_FIRST_STREAM = r"""
import json, os, sys
from pathlib import Path
from tensorfile.scan.pickle import containers
path = Path(sys.argv[1])
real = containers.sniff
def cut(*args, **kw):
    os.truncate(path, 0)
    return real(*args, **kw)
containers.sniff = cut
"""

_SCAN = _CUT_AT_FIRST_STREAM + r"""
from tensorfile.pickles import scan
(report,) = scan(path).files
print(json.dumps(report.to_dict()))
"""

_CLI_SCAN = _CUT_AT_FIRST_STREAM + r"""
from tensorfile_cli.main import main
sys.argv = ["tensorfile", "scan", "--json", str(path)]
main()
"""

_CONVERT = r"""
import os, sys
from pathlib import Path
from tensorfile.errors import TensorfileError
from tensorfile.convert import _checkpoint
from tensorfile.pickles.convert import convert
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
real = _checkpoint.run_stream
def cut(*args, **kw):
    os.truncate(src, 0)
    return real(*args, **kw)
_checkpoint.run_stream = cut
try:
    convert(src, dst)
except TensorfileError as e:
    print(type(e).__name__, e)
    sys.exit(3)
"""

_GGUF = r"""
import contextlib, json, os, sys
from pathlib import Path
from tensorfile.pickles import scan
from tensorfile.scan import gguf
path = Path(sys.argv[1])
real = gguf.mapped
@contextlib.contextmanager
def cut(p):
    with real(p) as buf:
        os.truncate(path, 0)
        yield buf
gguf.mapped = cut
(report,) = scan(path).files
print(json.dumps(report.to_dict()))
"""


def _child(script: str, *args: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "cli"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode != -signal.SIGBUS, "killed by SIGBUS"
    return proc


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    # A data.pkl past the first page, and storages after it: the cut removes both.
    torch.save({f"layer{i}.weight": torch.full((64, 64), float(i)) for i in range(40)}, path)
    return path


def test_scan_of_a_checkpoint_cut_short_is_an_error_verdict(checkpoint: Path) -> None:
    proc = _child(_SCAN, checkpoint)
    assert proc.returncode == 0, proc.stderr[-800:]
    report = json.loads(proc.stdout)
    assert report["verdict"] == "error"
    errors = " ".join(s.get("error") or "" for s in report["streams"])
    assert "cut short" in errors and str(checkpoint) in errors


def test_cli_scan_of_a_checkpoint_cut_short_exits_2_with_json(checkpoint: Path) -> None:
    proc = _child(_CLI_SCAN, checkpoint)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-800:])
    (report,) = json.loads(proc.stdout)["result"]["files"]
    assert report["verdict"] == "error"


def test_convert_of_a_checkpoint_cut_short_is_a_file_read_error(checkpoint: Path) -> None:
    dst = checkpoint.with_suffix(".safetensors")
    proc = _child(_CONVERT, checkpoint, dst)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-800:])
    assert proc.stdout.startswith("FileReadError") and "cut short" in proc.stdout
    assert not dst.exists()
    assert list(checkpoint.parent.iterdir()) == [checkpoint]  # no temporary left


def test_gguf_assessment_of_a_file_cut_short_is_an_error(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template("{{ messages[0]['content'] }}" * 400)
    w.add_tensor("w", __import__("numpy").zeros((256, 256), dtype="float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    proc = _child(_GGUF, path)
    assert proc.returncode == 0, proc.stderr[-800:]
    report = json.loads(proc.stdout)
    assert report["verdict"] == "error"
    assert any("cut short" in (s.get("error") or "") for s in report["streams"])


# -- the image itself ----------------------------------------------------------------

def test_an_image_reads_like_the_bytes_it_copies(tmp_path: Path) -> None:
    rng = random.Random(7)
    data = bytes(rng.choice(b"ab\nPK\x05\x06") for _ in range(3 * sources.PAGE + 123))
    path = tmp_path / "f"
    path.write_bytes(data)
    with open_image(path) as image:
        assert len(image) == len(data)
        for _ in range(300):
            lo, hi = sorted(rng.randrange(-50, len(data) + 50) for _ in range(2))
            sub = rng.choice([b"\n", b"PK\x05\x06", b"ab", b"zz"])
            assert image[lo:hi] == data[lo:hi]
            assert image.find(sub, lo, hi) == data.find(sub, lo, hi)
            assert image.rfind(sub, lo, hi) == data.rfind(sub, lo, hi)
            at = rng.randrange(-len(data), len(data))
            assert image[at] == data[at]
            try:
                want: object = struct.unpack_from("<IH", data, at)
            except struct.error:
                want = struct.error
            try:
                got: object = unpack_from("<IH", image, at)
            except struct.error:
                got = struct.error
            assert got == want
        assert image.find(b"\n") == data.find(b"\n") and image.rfind(b"a") == data.rfind(b"a")
        assert isinstance(image.buffer_for(0, 10), type(image._map))  # a real buffer
        assert image.buffer_for(0, sources.STREAM_WINDOW + 1) is image


def test_an_io_error_is_a_file_read_error_naming_path_and_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)

    def eio(fd: int, view: object, offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    with open_image(path) as image:
        assert image[0:5] == b"xxxxx"
        monkeypatch.setattr(sources, "pread_into", eio)
        with pytest.raises(FileReadError, match="byte 8192") as info:
            image[9000]
        assert info.value.errno == errno.EIO and info.value.filename == str(path)
        assert image[1:3] == b"xx"  # what was copied in stays readable


def test_an_image_is_not_a_map_of_the_file(tmp_path: Path) -> None:
    """The copy is private: a change of the file after a page was read is not seen
    (and a cut never faults); the pages not read yet are read from the file."""
    path = tmp_path / "f"
    path.write_bytes(b"a" * (2 * sources.PAGE))
    with Image(sources.FileSource(path)) as image:
        assert image[0] == ord("a")
        with open(path, "r+b") as f:
            f.write(b"b" * (2 * sources.PAGE))
        assert image[0] == ord("a") and image[sources.PAGE] == ord("b")
        os.truncate(path, 0)
        assert image[5] == ord("a")
