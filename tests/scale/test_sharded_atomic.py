"""Sharded saves are all or nothing; readers refuse shards that changed; close() is thread-safe.

Issue 22 items 2-4. The kill tests (SIGKILL, SIGTERM, SIGINT at observed
moments) are in tests/format/test_crash_safety.py; the full-disk tests are
here (a small tmpfs, mounted where this process may).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tensorfile
from tensorfile._io.atomic import looks_like_temp_file, sweep_temp_files
from tensorfile.errors import ClosedFileError, ShardIndexError
from tensorfile.sharded import load_sharded, open_sharded, save_sharded, save_sharded_iter

ROWS = 64


@pytest.fixture(autouse=True)
def python_ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, whatever this process inherited: a
    shell starts background jobs with SIGINT ignored, and Python keeps that."""
    import signal

    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _version(v: int, shards: int = 5) -> dict[str, np.ndarray]:
    """``shards`` tensors of 1 KiB each (max_shard_size=1024: one a shard), every value ``v``."""
    return {f"t{i}": np.full(ROWS * 4, v, dtype=np.float32) for i in range(shards)}


def _one_version(folder: Path) -> int:
    """The version every tensor of the model in ``folder`` holds (fails on a mix)."""
    got = load_sharded(folder)
    values = {float(np.unique(a)[0]) for a in got.values()}
    assert all(len(np.unique(a)) == 1 for a in got.values())
    assert len(values) == 1, f"a model of several versions: {sorted(values)}"
    return int(values.pop())


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if looks_like_temp_file(n))


# --------------------------------------------------------------------------
# producer exceptions (Ctrl-C, a failing producer) leave the old model
# --------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError, RuntimeError])
@pytest.mark.parametrize("shards", [5, 3, 1])
def test_producer_failure_leaves_the_old_model(tmp_path: Path, exc: type[BaseException], shards: int) -> None:
    """The old model has 5 shards; the new one (5, 3 or 1 shards: the same
    layout or another) fails at its third tensor: the old model, whole, and no
    temporary file is left. Before the fix, two shards were already new."""
    folder = tmp_path / "m"
    save_sharded(_version(1), folder, max_shard_size=1024)
    before = sorted(os.listdir(folder))
    new = _version(2, shards)
    calls = []

    def produce(name: str) -> np.ndarray:
        calls.append(name)
        if len(calls) == 3 or shards == 1:
            raise exc("stop")
        return new[name]

    entries = {n: (a.dtype, a.shape) for n, a in new.items()}
    with pytest.raises(exc):
        save_sharded_iter(entries, produce, folder, max_shard_size=1024)
    assert sorted(os.listdir(folder)) == before
    assert _one_version(folder) == 1


def test_resave_same_layout_and_other_layouts(tmp_path: Path) -> None:
    """A complete save replaces the model whatever the layouts, leaving no
    temporary file and no shard of the old layout."""
    folder = tmp_path / "m"
    (folder).mkdir()
    (folder / "config.json").write_text("{}")
    for v, shards, limit in [(1, 5, 1024), (2, 5, 1024), (3, 3, 1024), (4, 3, 10**6), (5, 5, 1024),
                             (6, 2, 10**6)]:
        save_sharded(_version(v, shards), folder, max_shard_size=limit)
        assert _one_version(folder) == v
        assert _temps(folder) == []
        names = set(os.listdir(folder)) - {"config.json"}
        if limit == 10**6:
            assert names == {"model.safetensors"}
        else:
            assert names == {f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)} | {
                "model.safetensors.index.json"}


def test_interrupted_after_the_switch_is_the_new_model_and_the_next_save_finishes(tmp_path: Path) -> None:
    """State after step 2 of the switch (index names the temporary files): the
    new model loads; a sweep keeps the files the index names; the next save
    leaves a clean folder."""
    from tensorfile._format.dtypes import DTYPES
    from tensorfile._format.header import Entry
    from tensorfile._io.atomic import TempFile
    from tensorfile._io.writer import write_stream
    from tensorfile.sharded._switch import write_index

    folder = tmp_path / "m"
    save_sharded(_version(1, 2), folder, max_shard_size=1024)
    staged = {}
    for i in (1, 2):
        name = f"model-{i:05d}-of-00002.safetensors"
        tmp = TempFile(folder / name, durable=False)
        t = f"t{i - 1}"
        write_stream(tmp.file, [Entry(t, DTYPES["F32"], (ROWS * 4,))],
                     iter([(t, np.full(ROWS * 4, 2, dtype=np.float32))]))
        tmp.file.close()  # the writer dies here: its lock goes
        staged[t] = tmp.path.name
    write_index(folder / "model.safetensors.index.json", staged, 2 * ROWS * 16, durable=False)
    assert _one_version(folder) == 2
    assert sweep_temp_files(folder) == []  # named by the index: kept
    assert len(_temps(folder)) == 2
    save_sharded(_version(3, 2), folder, max_shard_size=1024)
    assert _one_version(folder) == 3 and _temps(folder) == []


@pytest.mark.parametrize("index_write", [1, 2])
@pytest.mark.parametrize("shards", [5, 1])
def test_ctrl_c_during_the_switch_takes_effect_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_write: int, shards: int
) -> None:
    """A Ctrl-C that lands just after an index write of the switch (the one
    naming the temporary files, or the final one) is raised once the switch
    is over: the new model, complete, and no temporary file. Before the fix
    the first left an index naming removed files (no model at all), the
    second left the temporary names of every shard behind."""
    import signal

    from tensorfile.sharded import _switch

    folder = tmp_path / "m"
    save_sharded(_version(1), folder, max_shard_size=1024)
    real = _switch.write_index
    calls = []

    def write_then_ctrl_c(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == index_write:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_switch, "write_index", write_then_ctrl_c)
    if shards == 1 and index_write == 2:
        # A one-file model has no final index: no second write, no signal.
        save_sharded(_version(2, shards), folder, max_shard_size=1024)
        assert calls == [1]
    else:
        with pytest.raises(KeyboardInterrupt):
            save_sharded(_version(2, shards), folder, max_shard_size=1024)
    assert _one_version(folder) == 2
    assert _temps(folder) == []


@pytest.mark.parametrize("links", [True, False])
def test_saves_with_and_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           links: bool) -> None:
    """Final names are hard links to the temporary files (a new name: one
    link; an old one: a link and a rename over it); where the file system has
    no hard links (FAT, some FUSE and network ones), copies. Either way a
    first save, a re-save of the same layout and one of another are whole."""
    import errno

    if not links:
        def no_links(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "m"
    for v, shards in ((1, 5), (2, 5), (3, 3), (4, 1), (5, 4)):
        save_sharded(_version(v, shards), folder, max_shard_size=1024)
        assert _one_version(folder) == v and _temps(folder) == []
        assert len(load_sharded(folder)) == shards
        names = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
        assert len(names) == shards, names


def test_signals_deferred_holds_ctrl_c_until_the_block_ends() -> None:
    """Ctrl-C inside the block (even while a thread runs) raises at its end."""
    import signal
    import time

    from tensorfile._io.atomic import signals_deferred

    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    reached = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    time.sleep(0)
                reached = True
        assert reached
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        stop.set()
        busy.join()


def test_dead_temporary_files_are_swept_by_the_next_write_live_ones_are_not(tmp_path: Path) -> None:
    """A killed writer's file (no lock) goes at the next write into the
    folder; a live writer's file (locked) and names outside the pattern stay."""
    from tensorfile._io.atomic import TempFile

    dead = tmp_path / ".model.safetensors.abcd1234.tmp"
    dead.write_bytes(b"partial")
    other = tmp_path / ".notes.tmp"  # not the pattern: never touched
    other.write_bytes(b"x")
    live = TempFile(tmp_path / "other.safetensors", durable=False)
    code = ("import sys, numpy as np, tensorfile; "
            "tensorfile.save_file({'a': np.zeros(2)}, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.safetensors")],
                   check=True, env={**os.environ})
    assert not dead.exists()
    assert other.exists() and live.path.exists()
    live.discard()


# --------------------------------------------------------------------------
# full disk (a small tmpfs)
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    try:
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("mount is not available here")
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {run.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def _big_version(v: int, shards: int) -> dict[str, np.ndarray]:
    return {f"t{i}": np.full(256 * 1024, v, dtype=np.float32) for i in range(shards)}  # 1 MiB each


@pytest.mark.parametrize("new_shards", [3, 5, 1])
def test_full_disk_leaves_the_old_model(tmp_path: Path, new_shards: int) -> None:
    """A 3 MiB model on a 4.6 MiB disk: the re-save (same layout, more shards,
    one file) runs out of space; the old model stays, loadable, one version,
    and no temporary file is left. Before the fix the same layout left a mix
    and a new layout an unloadable model."""
    with _small_tmpfs(tmp_path / "disk", "4700k") as disk:
        folder = disk / "m"
        save_sharded(_big_version(1, 3), folder, max_shard_size=1 << 20)
        before = sorted(os.listdir(folder))
        limit = 3 << 20 if new_shards == 1 else 1 << 20
        with pytest.raises(OSError) as err:
            save_sharded(_big_version(2, 3 if new_shards == 1 else new_shards), folder,
                         max_shard_size=limit)
        assert "No space" in str(err.value) or err.value.errno == 28
        assert sorted(os.listdir(folder)) == before
        assert _one_version(folder) == 1


def test_full_disk_folder_convert_leaves_nothing(tmp_path: Path) -> None:
    """A folder convert into a folder on a full disk leaves the folder as it
    was (no half-written shard next to the .bin files)."""
    torch = pytest.importorskip("torch")
    from tensorfile.pickles.convert import convert

    with _small_tmpfs(tmp_path / "disk", "6m") as disk:
        src = disk / "hf"
        src.mkdir()
        names = {}
        for i in (1, 2):
            shard = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({f"w{i}": torch.full((300_000,), float(i))}, src / shard)  # 1.2 MB each
            names[f"w{i}"] = shard
        (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": names}))
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (6 * 1024 * 1024 - 2 * 1200 * 1024 - 1_200_000))
        before = sorted(os.listdir(src))
        with pytest.raises(Exception) as err:
            convert(src)
        assert "space" in str(err.value).lower() or "28" in str(err.value)
        assert sorted(os.listdir(src)) == before


# --------------------------------------------------------------------------
# readers: shards replaced or changed after open
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["replaced", "rewritten in place", "touched"])
def test_shard_replaced_with_same_shapes_after_open_is_refused(tmp_path: Path, how: str) -> None:
    """Before the fix a shard replaced by one with the same shapes was read
    without error, handing out tensors of two versions."""
    folder = tmp_path / "m"
    save_sharded(_version(1), folder, max_shard_size=1024)
    with open_sharded(folder) as model:
        first = model["t0"].load().copy()
        shard = folder / model["t3"].shard
        if how == "replaced":
            tensorfile.save_file({"t3": np.full(ROWS * 4, 2, dtype=np.float32)}, shard)
        elif how == "rewritten in place":
            blob = shard.read_bytes()
            with open(shard, "r+b") as f:
                f.write(blob[:-4] + np.float32(2).tobytes())
        else:
            st = shard.stat()
            os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        with pytest.raises(ShardIndexError, match="replaced or changed"):
            model["t3"].load()
        with pytest.raises(ShardIndexError):
            model.tensors()
    assert float(first[0]) == 1.0


def test_shard_changed_after_it_was_read_is_refused_on_the_next_read(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    save_sharded(_version(1), folder, max_shard_size=1024)
    with open_sharded(folder, backend="pread") as model:
        model["t1"].load()
        shard = folder / model["t1"].shard
        tensorfile.save_file({"t1": np.full(ROWS * 4, 2, dtype=np.float32)}, shard)
        with pytest.raises(ShardIndexError, match="replaced or changed"):
            model["t1"].load()


def test_shard_removed_after_open_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    save_sharded(_version(1), folder, max_shard_size=1024)
    with open_sharded(folder) as model:
        (folder / model["t2"].shard).unlink()
        with pytest.raises(ShardIndexError, match="gone"):
            model["t2"].load()


# --------------------------------------------------------------------------
# close() with concurrent readers
# --------------------------------------------------------------------------


def test_close_is_safe_with_eight_reader_threads(tmp_path: Path) -> None:
    """8 threads read every tensor (each in its own order) while the main
    thread closes: no RuntimeError from the shard dict, only ClosedFileError
    (or a successful read), and no shard handle open or readable after
    close() returns. Before the fix: "dictionary changed size during
    iteration", and shards opened after close() stayed open."""
    folder = tmp_path / "m"
    save_sharded(_version(1, 48), folder, max_shard_size=1024)
    failures: list[str] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the races show in a few trials
    try:
        _close_trials(folder, failures)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def _close_trials(folder: Path, failures: list[str]) -> None:
    import random

    for trial in range(60):
        model = open_sharded(folder)
        errors: list[BaseException] = []
        start = threading.Barrier(9)

        def read(seed: int, model: object = model, start: threading.Barrier = start,
                 errors: list[BaseException] = errors) -> None:
            names = sorted(model.keys())  # type: ignore[attr-defined]
            random.Random(seed).shuffle(names)
            start.wait()
            for name in names:
                try:
                    model[name].load()  # type: ignore[index]
                except ClosedFileError:
                    return
                except BaseException as exc:  # collected, then asserted
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=read, args=(trial * 8 + k,)) for k in range(8)]
        for t in threads:
            t.start()
        start.wait()
        try:
            model.close()
        except RuntimeError as e:
            failures.append(f"close() raised {e}")
        for t in threads:
            t.join()
        left = [f for f in model._open.values()]
        if left:
            failures.append(f"{len(left)} shards open after close()")
        failures.extend(repr(e) for e in errors)
        with pytest.raises(ClosedFileError):
            model["t0"].load()
