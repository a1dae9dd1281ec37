"""save_file: atomic, permission-preserving, correct for strided input."""

from __future__ import annotations

import itertools
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorfile
from tensorfile._io import writer
from tensorfile.errors import SerializationError


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("size", [100, 600_000])
def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, durable: bool
) -> None:
    """A full disk mid-write: small files go out in one gathered write
    (``os.writev``; without ``durable`` straight through the descriptor),
    big ones a tensor at a time (``write_all``); either way the old file
    stays and no temporary file is left."""
    path = tmp_path / "m.safetensors"
    tensorfile.save_file({"a": np.arange(10, dtype=np.float32)}, path)
    before = path.read_bytes()
    calls = 0
    real = writer.write_all

    def failing(f, data):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real(f, data)

    def full(fd: int, buffers: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_all", failing)
    monkeypatch.setattr(os, "writev", full)
    with pytest.raises(OSError, match="No space"):
        tensorfile.save_file({"x": np.ones(size), "y": np.ones(size, dtype=np.float32)}, path,
                             durable=durable)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.safetensors"]


@pytest.mark.parametrize("durable", [True, False])
def test_gathered_write_survives_partial_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """``writev`` may write fewer bytes than asked (a signal, a pipe, a
    nearly full quota): the rest follows, in order, and the file is the same."""
    tensors = {f"t{i}": np.arange(i * 7 + 1, dtype=np.float32) for i in range(40)}
    real = os.writev

    def stingy(fd: int, buffers: list[memoryview]) -> int:
        first = buffers[0]
        return real(fd, [first[: max(1, len(first) // 3)]])

    monkeypatch.setattr(os, "writev", stingy)
    tensorfile.save_file(tensors, tmp_path / "a.safetensors", durable=durable)
    monkeypatch.undo()
    assert (tmp_path / "a.safetensors").read_bytes() == tensorfile.save(tensors)


def test_refused_input_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    with pytest.raises(SerializationError, match="object arrays"):
        tensorfile.save_file({"a": np.array([object()])}, path)
    with pytest.raises(SerializationError, match="reserved"):
        tensorfile.save_file({"__metadata__": np.ones(1)}, path)
    with pytest.raises(SerializationError, match="metadata"):
        tensorfile.save_file({"a": np.ones(1)}, path, metadata={"k": 1})  # type: ignore[dict-item]
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("durable", [True, False])
def test_new_file_gets_umask_mode_existing_keeps_its_own(tmp_path: Path, durable: bool) -> None:
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.safetensors"
        tensorfile.save_file({"a": np.ones(2)}, fresh, durable=durable)
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"old")
    kept.chmod(0o604)
    tensorfile.save_file({"a": np.ones(2)}, kept, durable=durable)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    assert tensorfile.load_file(kept)["a"].tolist() == [1.0, 1.0]


def test_strided_and_big_endian_arrays_are_written_as_values(tmp_path: Path) -> None:
    base = np.arange(48, dtype=np.float64).reshape(6, 8)
    cases = {
        "transposed": base.T,
        "stepped": base[::2, ::-3],
        "negative": base[::-1],
        "big_endian": base.astype(">f8"),
        "fortran": np.asfortranarray(base),
    }
    path = tmp_path / "s.safetensors"
    tensorfile.save_file(cases, path)
    back = tensorfile.load_file(path)
    for k, v in cases.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == np.dtype("<f8")


def test_save_matches_save_file(tmp_path: Path) -> None:
    tensors = {"a": np.arange(7, dtype=np.int16), "b": np.ones((2, 2), dtype=np.float32)}
    path = tmp_path / "x.safetensors"
    tensorfile.save_file(tensors, path, metadata={"m": "1"})
    assert path.read_bytes() == tensorfile.save(tensors, metadata={"m": "1"})


def test_save_stream_writes_tensors_produced_one_at_a_time(tmp_path: Path) -> None:
    from tensorfile._format.dtypes import DTYPES
    from tensorfile._format.header import Entry, canonical_order

    entries = [Entry(f"layer{i}", DTYPES["F32"], (4, 4)) for i in range(5)]

    def produce():  # type: ignore[no-untyped-def]
        for e in canonical_order(entries):
            yield e.name, np.full((4, 4), int(e.name[5:]), dtype=np.float32)

    path = tmp_path / "stream.safetensors"
    writer.save_stream(entries, produce(), path)
    back = tensorfile.load_file(path)
    assert all(back[f"layer{i}"][0, 0] == i for i in range(5))

    def wrong_order():  # type: ignore[no-untyped-def]
        yield "layer4", np.zeros((4, 4), dtype=np.float32)

    with pytest.raises(SerializationError, match="expected"):
        writer.save_stream(entries, wrong_order(), tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    assert _listing(tmp_path) == ["stream.safetensors"]


def test_torch_shared_tensors_refused_then_saved_by_save_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch as spt

    import tensorfile.torch as tpt

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    with pytest.raises(SerializationError, match="share memory"):
        tpt.save_file(model.state_dict(), tmp_path / "no.safetensors")
    ours, ref = tmp_path / "ours.safetensors", tmp_path / "ref.safetensors"
    tpt.save_model(model, ours)
    spt.save_model(model, ref)
    assert ours.read_bytes() == ref.read_bytes()
    with tensorfile.safe_open(ours, "np") as f:
        assert f.keys() == ["emb.weight"]
        assert f.metadata() == {"head.weight": "emb.weight"}
    fresh = Tied()
    missing, unexpected = tpt.load_model(fresh, ours)
    assert missing == set() and unexpected == []  # a set, as the reference
    assert torch.equal(fresh.head.weight, model.emb.weight)
    # and the reference loads ours
    other = Tied()
    spt.load_model(other, ours)
    assert torch.equal(other.emb.weight, model.emb.weight)


def test_load_model_strict_reports_missing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import tensorfile.torch as tpt

    path = tmp_path / "lin.safetensors"
    tpt.save_file({"weight": torch.ones(2, 3)}, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        tpt.load_model(torch.nn.Linear(3, 2), path)
    missing, unexpected = tpt.load_model(torch.nn.Linear(3, 2), path, strict=False)
    assert missing == {"bias"} and unexpected == []


def test_durable_writes_start_writeback_as_they_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each WRITEBACK_BYTES written are handed to the disk at once (so the final
    fsync waits only for the tail), in order, covering the file without gaps;
    the file is the same as without it."""
    from tensorfile._io import atomic

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(atomic, "WRITEBACK_BYTES", 1000)
    monkeypatch.setattr(atomic.WriteBehindFile, "_start",
                        staticmethod(lambda fd, offset, n: calls.append((offset, n))))
    tensors = {f"t{i}": np.full(700 + i, i, dtype=np.uint8) for i in range(10)}
    tensorfile.save_file(tensors, tmp_path / "a.safetensors")
    size = (tmp_path / "a.safetensors").stat().st_size
    assert calls and calls[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(calls))
    assert all(n >= 1000 for _, n in calls)
    # Only the tail is left to the fsync: under the threshold plus one write.
    assert 0 <= size - (calls[-1][0] + calls[-1][1]) < 1000 + 709
    assert tensorfile.save(tensors) == (tmp_path / "a.safetensors").read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or os.environ.get("TENSORFILE_SIMULATE_NO_POSIX") == "1",
                    reason="sync_file_range is Linux's (and the suite simulates its absence)")
def test_sync_file_range_is_found_and_harmless(tmp_path: Path) -> None:
    from tensorfile._io import atomic

    start = atomic._sync_file_range()
    assert start is not None
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 10000)
        f.flush()
        start(f.fileno(), 0, 10000)
        start(-1, 0, 10)  # a bad fd is ignored: the head start is advisory
    assert (tmp_path / "f").read_bytes() == b"x" * 10000


def test_kernel_copied_spans_get_writeback_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes a FileSpan copies in the kernel (never through write()) are counted
    as well: the writeback ranges still run end to start over the whole file."""
    from tensorfile._format.dtypes import DTYPES
    from tensorfile._format.header import Entry
    from tensorfile._io import atomic

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(atomic, "WRITEBACK_BYTES", 1000)
    monkeypatch.setattr(writer, "_KERNEL_COPY_STEP", 512)
    monkeypatch.setattr(atomic.WriteBehindFile, "_start",
                        staticmethod(lambda fd, offset, n: calls.append((offset, n))))
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    entries = [Entry("a", DTYPES["U8"], (6000,)), Entry("b", DTYPES["U8"], (4000,))]
    with open(src, "rb") as fh:
        spans = iter([("a", writer.FileSpan(fh.fileno(), 100, 6000)),
                      ("b", writer.FileSpan(fh.fileno(), 6100, 4000))])
        writer.save_stream(entries, spans, tmp_path / "out.safetensors")
    out = (tmp_path / "out.safetensors").read_bytes()
    assert out.endswith(src.read_bytes()[100:10100])
    assert calls and calls[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(calls))
    assert 0 <= len(out) - (calls[-1][0] + calls[-1][1]) < 1000 + 512


_ODD_TEXT = ['q"uote', "back\\slash", "new\nline", "nul\x00", "del\x7f", "sep\u2028", "é", "🙂", "/", ""]


@pytest.mark.parametrize("text", _ODD_TEXT)
def test_header_text_is_json_dumps_text(text: str) -> None:
    """The header is assembled by hand (not json.dumps of a dict): names and
    metadata are escaped exactly as json.dumps(ensure_ascii=False) escapes
    them, which is also how the reference writes them (test_interop)."""
    import json

    from tensorfile._format.header import DTYPES, Entry, encode

    name = text or "n"
    entries = [Entry(name, DTYPES["F32"], (2, 3)), Entry("b" + text, DTYPES["U8"], ()),
               Entry("c", DTYPES["BF16"], (0,))]
    head, _ = encode(entries, {text: text, "k": "v"})
    doc = {"__metadata__": {text: text, "k": "v"} if text < "k" else {"k": "v", text: text},
           name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
           "c": {"dtype": "BF16", "shape": [0], "data_offsets": [24, 24]},
           "b" + text: {"dtype": "U8", "shape": [], "data_offsets": [24, 25]}}
    want = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    assert head[8:].rstrip(b" ") == want
    assert len(head) % 8 == 0 and int.from_bytes(head[:8], "little") == len(head) - 8


def test_header_refuses_lone_surrogates_and_odd_dimensions() -> None:
    from tensorfile._format.header import DTYPES, Entry, encode

    with pytest.raises(SerializationError, match="not valid text"):
        encode([Entry("a\ud800", DTYPES["F32"], (1,))])
    with pytest.raises(SerializationError, match="not valid text"):
        encode([Entry("a", DTYPES["F32"], (1,))], {"k": "\udc00"})
    # A dimension that is not a plain int is spelled (or refused) as json does.
    head, _ = encode([Entry("a", DTYPES["U8"], (True, 2))])
    assert b'"shape":[true,2]' in head
    with pytest.raises(TypeError):
        encode([Entry("a", DTYPES["U8"], (np.int64(2),))])


def test_scratch_save_temp_is_locked_swept_pattern_and_removed_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``durable=False`` writes through the descriptor, not atomic_write: its
    temporary file still has the one pattern, is locked against another
    process's sweep while written, and a Ctrl-C before the rename removes it
    and keeps the old file."""
    from tensorfile._io.atomic import looks_like_temp_file, sweep_temp_files

    path = tmp_path / "m.safetensors"
    tensorfile.save_file({"a": np.arange(3)}, path, durable=False)
    before = path.read_bytes()
    seen: list[str] = []
    real = os.writev

    def watch(fd: int, buffers: list[memoryview]) -> int:
        temps = [n for n in os.listdir(tmp_path) if n != "m.safetensors"]
        seen.extend(temps)
        assert [looks_like_temp_file(n) for n in temps] == [True]
        assert sweep_temp_files(tmp_path) == []  # locked: a live writer's
        return real(fd, buffers)

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "writev", watch)
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tensorfile.save_file({"b": np.ones(5)}, path, durable=False)
    monkeypatch.undo()
    assert seen and seen[0].startswith(".m.safetensors.")
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.safetensors"]
    tensorfile.save_file({"b": np.ones(5)}, path, durable=False)
    assert path.read_bytes() == tensorfile.save({"b": np.ones(5)})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_forked_children_draw_other_temp_names() -> None:
    """Temporary names come from a seeded generator, not a system call per
    name: a forked child must not replay its parent's sequence (two writers
    would then collide on every name into one folder)."""
    from tensorfile._io.atomic import _random_part, looks_like_temp_file

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(_random_part() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    mine = "".join(_random_part() for _ in range(4))
    assert len(child) == 32 and child != mine
    assert looks_like_temp_file(f".m.safetensors.{mine[:8]}.tmp")
