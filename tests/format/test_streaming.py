"""The public streaming writer (issue 28 item 4): tensorfile.StreamWriter and save_streaming.

Same bytes as save_file / save_sharded, readable by the reference, atomic
(an exception or a kill leaves no new file and an old one whole), bounded
memory (a 512 MiB model written under a 256 MiB peak RSS, measured in a
fresh process), and digests equal to what signing computes, reused by
``sign(written=...)`` without reading the files again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile import SerializationError, StreamWriter, save_file, save_streaming
from tensorfile._format.dtypes import dtype_from_name
from tensorfile._format.header import Entry
from tensorfile.integrity import hash_model
from tensorfile.integrity.manifest import hash_model_update
from tensorfile.sharded import save_sharded

DTYPES = ["float32", "float64", "int8", "uint8", "int16", "int64", "float16", "bool"]

# Any encodable name but NUL: no surrogates (not UTF-8). Spelt with arguments
# hypothesis 6.0 (the lower bound, CI's 3.10 run) already has: codec= and
# exclude_characters= came later, and blacklist_* are deprecated since.
_name_chars = st.characters(min_codepoint=1).filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF)

tensor_dicts = st.dictionaries(
    st.text(_name_chars, min_size=1, max_size=8),
    st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 5), max_size=3)),
    max_size=6,
)


def _make(spec: dict[str, tuple[str, list[int]]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(spec))
    return {n: np.asarray(rng.integers(0, 100, size=shape) > 50 if dt == "bool"
                          else rng.integers(0, 100, size=shape), dtype=dt)
            for n, (dt, shape) in spec.items()}


def _stream(tensors: dict[str, np.ndarray], path: Path, **kw: Any) -> StreamWriter:
    with StreamWriter(path, tensors, **kw) as w:
        for name in w.order:
            w.write(name, tensors[name])
    return w


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=tensor_dicts, meta=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
def test_same_bytes_as_save_file(tmp_path: Path, spec: dict[str, tuple[str, list[int]]],
                                 meta: dict[str, str] | None) -> None:
    tensors = _make(spec)
    save_file(tensors, tmp_path / "ref.safetensors", meta)
    w = _stream(tensors, tmp_path / "s.safetensors", metadata=meta, digests=True)
    assert (tmp_path / "s.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    # The digests computed on the way are the ones signing computes from the file.
    assert w.digests == hash_model(tmp_path / "s.safetensors").files


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=tensor_dicts, shard=st.integers(1, 200))
def test_sharded_same_files_as_save_sharded(tmp_path: Path, spec: dict[str, tuple[str, list[int]]],
                                            shard: int) -> None:
    tensors = _make(spec)
    ref, out = tmp_path / f"ref{shard}", tmp_path / f"out{shard}"
    save_sharded(tensors, ref, max_shard_size=shard)
    order = tensorfile.sharded.write_order({n: (a.dtype, a.shape) for n, a in tensors.items()})
    digests = save_streaming(((n, tensors[n]) for n in order), out, tensors,
                             max_shard_size=shard, digests=True)
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    assert digests == hash_model(out).files


def test_reference_safetensors_reads_it(tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="the reference reader is in the test extra only")
    import safetensors.numpy as snp

    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3, dtype=np.int64)}
    save_streaming(tensors.__getitem__, tmp_path / "m.safetensors",
                   {n: (a.dtype, a.shape) for n, a in tensors.items()}, metadata={"k": "v"})
    got = snp.load_file(str(tmp_path / "m.safetensors"))
    assert got.keys() == tensors.keys()
    for n, a in tensors.items():
        np.testing.assert_array_equal(got[n], a)


def test_torch_meta_entries_and_torch_values(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    real = {"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "b": torch.ones(4)}
    meta = {n: t.to("meta") for n, t in real.items()}
    _stream(real, tmp_path / "s.safetensors")  # announced by the tensors themselves
    with StreamWriter(tmp_path / "m.safetensors", meta) as w:
        for name in w.order:
            w.write(name, real[name])
    import tensorfile.torch as tft

    tft.save_file(real, tmp_path / "ref.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def _old(path: Path) -> bytes:
    save_file({"old": np.arange(5, dtype=np.int32)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("where", ["first", "middle"])
def test_producer_exception_leaves_the_old_file(tmp_path: Path, where: str) -> None:
    dest = tmp_path / "m.safetensors"
    before = _old(dest)
    tensors = {f"t{i}": np.full(1000, i, dtype=np.float32) for i in range(4)}

    def produce(name: str) -> np.ndarray:
        if name == ("t0" if where == "first" else "t2"):
            raise KeyError(name)
        return tensors[name]

    with pytest.raises(KeyError):
        save_streaming(produce, dest, tensors)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_with_block_exception_and_misuse_leave_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "m.safetensors"
    before = _old(dest)
    tensors = {"a": np.zeros(4, np.float32), "b": np.ones(3, np.int8)}
    with pytest.raises(RuntimeError), StreamWriter(dest, tensors) as w:
        w.write(w.order[0], tensors[w.order[0]])
        raise RuntimeError("boom")
    cases: list[tuple[str, Any]] = [
        ("b", tensors["b"]),  # out of order (a is F32, written first)
        ("zz", tensors["b"]),  # not announced
        ("a", np.zeros(5, np.float32)),  # wrong shape
        ("a", np.zeros(4, np.int32)),  # wrong dtype
        ("a", b"123"),  # wrong byte count
    ]
    for name, value in cases:
        with pytest.raises(SerializationError), StreamWriter(dest, tensors) as w:
            w.write(name, value)
    with pytest.raises(SerializationError, match="closed before tensor 'b'"), StreamWriter(dest, tensors) as w:
        w.write("a", tensors["a"])
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(SerializationError, match="outside"):
        StreamWriter(dest, tensors).write("a", tensors["a"])
    with pytest.raises(SerializationError, match="announced twice"):
        StreamWriter(dest, [Entry("a", dtype_from_name("F32"), (1,))] * 2)


def test_sharded_abort_writes_no_index(tmp_path: Path) -> None:
    tensors = {f"t{i}": np.full(100, i, dtype=np.float32) for i in range(4)}
    with pytest.raises(RuntimeError), StreamWriter(tmp_path / "m", tensors, max_shard_size=400) as w:
        for name in w.order[:3]:
            w.write(name, tensors[name])
        raise RuntimeError("boom")
    assert not (tmp_path / "m" / "model.safetensors.index.json").exists()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "m").iterdir())


def test_sign_reuses_the_digests_and_rehashes_a_changed_file(tmp_path: Path) -> None:
    tensors = {f"t{i}": np.full(1000, i, dtype=np.float32) for i in range(5)}
    folder = tmp_path / "m"
    w = _stream(tensors, folder, max_shard_size=8000, digests=True)
    (folder / "config.json").write_text("{}")
    manifest, hashed = hash_model_update(folder, None, written=w.manifest())
    assert hashed == ("config.json",)  # the shards and the index were not read again
    assert manifest == hash_model(folder)
    # A file changed after the save is hashed again (its inode or times moved on).
    shard = folder / "model-00001-of-00003.safetensors"
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data[:-1] + b"\x01")
    manifest, hashed = hash_model_update(folder, None, written=w.manifest())
    assert shard.name in hashed and manifest == hash_model(folder)
    # And the signature made from reused digests verifies.
    from tensorfile.integrity import generate_key, sign, verify

    keys = generate_key(tmp_path / "k")
    shard.write_bytes(data)  # back to what was written, but a new file: hashed again
    w2 = _stream(tensors, folder, max_shard_size=8000, digests=True)
    sig = sign(folder, keys.private_key, tmp_path / "m.sig", written=w2.manifest())
    verify(folder, keys.public_key, signature=sig)  # raises if any digest were wrong
    with pytest.raises(SerializationError, match="digests=True"):
        _stream(tensors, tmp_path / "x", max_shard_size=8000).manifest()


_KILL_WRITER = """
import sys, numpy as np
from tensorfile import StreamWriter
dest = sys.argv[1]
entries = {f"t{i:02d}": ("F32", (1 << 20,)) for i in range(64)}
with StreamWriter(dest, entries, digests=True) as w:
    for i, name in enumerate(w.order):
        w.write(name, np.full(1 << 20, i, dtype=np.float32))
        if i == 8:
            print("writing", flush=True)
        if i >= 8:
            sys.stdin.readline()  # wait to be killed, mid-file
"""


@pytest.mark.parametrize("existing", [False, True])
def test_kill_mid_write_leaves_no_new_file(tmp_path: Path, existing: bool) -> None:
    dest = tmp_path / "m.safetensors"
    before = _old(dest) if existing else None
    proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(dest)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "writing\n"
        temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].stat().st_size > 8 << 22  # mid-write for sure
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    if before is None:
        assert not dest.exists()
    else:
        assert dest.read_bytes() == before


_RSS_WRITER = """
import json, sys, numpy as np
from pathlib import Path
import tensorfile, tensorfile.integrity.hashing
def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
n, mib = int(sys.argv[2]), int(sys.argv[3])
elems = mib * (1 << 20) // 4
entries = {f"layer{i:03d}": ("F32", (elems,)) for i in range(n)}
base = status("VmRSS")
def produce(name):
    return np.full(elems, int(name[5:]) + 0.5, dtype=np.float32)
digests = tensorfile.save_streaming(produce, sys.argv[1], entries, max_shard_size=sys.argv[4],
                                    digests=True)
print(json.dumps({"peak": status("VmHWM"), "base": base, "files": len(digests)}))
"""


def test_512mib_written_under_256mib_rss(tmp_path: Path) -> None:
    """32 tensors of 16 MiB into 128 MiB shards: the process's peak RSS, imports
    included, stays under 256 MiB (a model twice that size)."""
    n, mib = 32, 16
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _RSS_WRITER, str(tmp_path / "m"), str(n), str(mib),
                          "128MiB"], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(run.stdout)
    assert got["files"] == 5  # 4 shards and the index
    total = sum(p.stat().st_size for p in (tmp_path / "m").iterdir())
    assert total > n * mib << 20
    assert got["peak"] < 256 << 20, (got, time.perf_counter() - t0)
    # Values as produced: a few spot checks through the reader.
    with tensorfile.sharded.open_sharded(tmp_path / "m") as f:
        assert float(f.get_tensor("layer007")[123]) == 7.5
    assert os.path.exists(tmp_path / "m" / "model.safetensors.index.json")
