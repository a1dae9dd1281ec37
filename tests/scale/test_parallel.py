"""Tensor-parallel loading: each rank reads only its block of each tensor, verified if asked."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile.errors import DigestMismatchError, NotSignedError, PartitionError
from tensorfile.integrity.hashing import HashOptions, ModelFile, hash_files
from tensorfile.parallel import (
    PartitionPlan,
    block_for,
    hash_files_processes,
    load_partition,
    load_partition_distributed,
    partition_bounds,
    plan_from_patterns,
    verify_shards,
)
from tensorfile.sharded import open_sharded, save_sharded

HERE = Path(__file__).resolve().parent
PLAN = {"*.q.weight": 0, "*.o.weight": 1, "*.embed": -1}


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "l0.q.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "l1.q.weight": rng.standard_normal((33, 7)).astype(np.float16),  # uneven split
        "l0.o.weight": rng.standard_normal((5, 40, 3)).astype(np.float32),
        "tok.embed": rng.integers(0, 1000, (12, 30), dtype=np.int64),
        "norm": np.linspace(0, 1, 17, dtype=np.float32),
    }


def _own_bytes(model: object, plan: PartitionPlan, rank: int, world: int) -> int:
    return sum(block_for(model[n].info, plan, rank, world).nbytes for n in model.keys())  # type: ignore[index, attr-defined]


def _gather(parts: list[dict], name: str, dim: int | None) -> np.ndarray:
    arrays = [np.asarray(p[name]) for p in parts]
    return arrays[0] if dim is None else np.concatenate(arrays, axis=dim)


# --------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------


@given(st.integers(0, 1000), st.integers(1, 64))
def test_partition_bounds_tile_the_dimension(size: int, world: int) -> None:
    bounds = [partition_bounds(size, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize(("rank", "world"), [(-1, 2), (2, 2), (0, 0)])
def test_partition_bounds_rejects_bad_ranks(rank: int, world: int) -> None:
    with pytest.raises(PartitionError):
        partition_bounds(10, rank, world)


def test_plan_first_match_wins_and_default() -> None:
    plan = plan_from_patterns([("*.special.weight", None), ("*.weight", 0)], default=1)
    assert plan.dim_for("a.special.weight") is None
    assert plan.dim_for("a.b.weight") == 0
    assert plan.dim_for("a.bias") == 1
    assert PartitionPlan().dim_for("anything") is None
    with pytest.raises(PartitionError):
        plan_from_patterns({"x": "0"})  # type: ignore[dict-item]
    with pytest.raises(PartitionError):
        plan_from_patterns({}, default=1.5)  # type: ignore[arg-type]


def test_plan_that_cannot_apply(tmp_path: Path) -> None:
    tensorfile.save_file({"v": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    with pytest.raises(PartitionError, match="no dimension 1"):
        load_partition(tmp_path / "m.safetensors", plan_from_patterns({"v": 1}), 0, 2)
    with pytest.raises(PartitionError, match="not in a world"):
        load_partition(tmp_path / "m.safetensors", plan_from_patterns({"v": 0}), 3, 2)


# --------------------------------------------------------------------------
# loading slices in one process
# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["mmap", "pread"])
@pytest.mark.parametrize("framework", ["np", "pt"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_partitions_gather_to_the_full_tensors(tmp_path: Path, backend: str, framework: str, world: int) -> None:
    if framework == "pt":
        pytest.importorskip("torch")
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=8000)
    plan = plan_from_patterns(PLAN)
    parts = []
    for rank in range(world):
        with open_sharded(tmp_path, framework, backend=backend) as model:
            parts.append(load_partition(model, plan, rank, world))
            if backend == "pread":  # exactly this rank's bytes, nothing else
                assert model.bytes_read == _own_bytes(model, plan, rank, world)
    for name, full in tensors.items():
        dim = plan.dim_for(name)
        got = _gather(parts, name, None if dim is None else dim % full.ndim)
        assert got.dtype == full.dtype and got.shape == full.shape, name
        np.testing.assert_array_equal(got, full)


def test_names_subset_and_a_path_source(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=8000)
    part = load_partition(tmp_path, plan_from_patterns(PLAN), 1, 2, framework="np", names=["l0.q.weight"])
    assert list(part) == ["l0.q.weight"]
    np.testing.assert_array_equal(part["l0.q.weight"], tensors["l0.q.weight"][32:])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    data=st.data(),
)
def test_any_shape_any_dim_pread_reads_exactly_its_bytes(
    tmp_path_factory: pytest.TempPathFactory, shape: list[int], data: st.DataObject
) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    world = data.draw(st.integers(1, 5))
    arr = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    path = tmp_path_factory.mktemp("p") / "m.safetensors"
    tensorfile.save_file({"t": arr}, path)
    plan = plan_from_patterns({"t": dim})
    parts = []
    for rank in range(world):
        with open_sharded(path, "np", backend="pread") as model:
            parts.append(load_partition(model, plan, rank, world))
            assert model.bytes_read == block_for(model["t"].info, plan, rank, world).nbytes
    got = _gather(parts, "t", None if world == 1 else dim % arr.ndim)
    np.testing.assert_array_equal(got, arr)


# --------------------------------------------------------------------------
# verify-on-load with slices
# --------------------------------------------------------------------------


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_signed_partition_reads_whole_tensors_and_refuses_tampering(tmp_path: Path) -> None:
    """A signature covers whole tensors: a verifying rank reads each tensor it needs
    a part of whole, checks it, and keeps its block; a tampered byte anywhere in
    the tensor is refused by every rank (chunk digests, which nothing signed,
    used to let a rank check only its own part)."""
    from tensorfile.integrity import generate_key, sign

    rng = np.random.default_rng(1)
    big = rng.standard_normal((256, 64)).astype(np.float32)  # 64 KiB
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.safetensors"
    tensorfile.save_file({"w.q.weight": big}, path)
    keys = generate_key(tmp_path / "key.pem")
    sign(model_dir, keys.private_key)
    plan = plan_from_patterns(PLAN)
    for rank in range(2):
        with open_sharded(path, "np", backend="pread") as model:
            part = load_partition(model, plan, rank, 2, verify=keys.public_key)
            assert _own_bytes(model, plan, rank, 2) < model.bytes_read == big.nbytes
        np.testing.assert_array_equal(part["w.q.weight"], big[rank * 128 : (rank + 1) * 128])
    # Tamper one byte in rank 1's half: both ranks refuse (the digest covers the tensor).
    with tensorfile.safe_open(path) as f:
        start, end = f.byte_range("w.q.weight")
    _flip_byte(path, start + (end - start) * 3 // 4)
    for rank in range(2):
        with pytest.raises(DigestMismatchError, match="differs from the signed bytes"):
            load_partition(path, plan, rank, 2, framework="np", verify=keys.public_key)
    # Without verification the tampered byte would have been handed out.
    part1 = load_partition(path, plan, 1, 2, framework="np")
    assert not np.array_equal(part1["w.q.weight"], big[128:])


def test_signed_partition_checks_the_header(tmp_path: Path) -> None:
    from tensorfile.integrity import generate_key, sign

    tensors = _model()
    model_dir = tmp_path / "model"
    save_sharded(tensors, model_dir, max_shard_size=8000)
    keys = generate_key(tmp_path / "key.pem")
    sign(model_dir, keys.private_key)
    shard = open_sharded(model_dir).index.shard_files[0]
    with tensorfile.safe_open(model_dir / shard) as f:
        meta_free = {k: f.get_tensor(k).copy() for k in f.keys()}
    tensorfile.save_file(meta_free, model_dir / shard, metadata={"changed": "yes"})
    with pytest.raises(DigestMismatchError, match="header"):
        load_partition(model_dir, plan_from_patterns(PLAN), 0, 2, framework="np", verify=keys.public_key)


def test_unsigned_file_is_not_signed(tmp_path: Path) -> None:
    from tensorfile.integrity import generate_key, sign

    tensors = _model()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    tensorfile.save_file(tensors, model_dir / "a.safetensors")
    keys = generate_key(tmp_path / "key.pem")
    sign(model_dir, keys.private_key)
    tensorfile.save_file(tensors, model_dir / "b.safetensors")
    with pytest.raises(NotSignedError):
        load_partition(model_dir / "b.safetensors", PartitionPlan(), 0, 1, framework="np",
                       verify=keys.public_key)


def test_composes_with_integrity_signatures(tmp_path: Path) -> None:
    from tensorfile.integrity import generate_key, sign

    tensors = _model()
    model_dir = tmp_path / "model"
    save_sharded(tensors, model_dir, max_shard_size=8000)
    keys = generate_key(tmp_path / "key.pem")
    sign(model_dir, keys.private_key)
    plan = plan_from_patterns(PLAN)
    parts = [load_partition(model_dir, plan, r, 2, framework="np", verify=keys.public_key) for r in range(2)]
    for name, full in tensors.items():
        dim = plan.dim_for(name)
        np.testing.assert_array_equal(_gather(parts, name, None if dim is None else dim % full.ndim), full)
    shard = open_sharded(model_dir)["l0.q.weight"].shard
    with tensorfile.safe_open(model_dir / shard) as f:
        start, _ = f.byte_range("l0.q.weight")
    _flip_byte(model_dir / shard, start + 1)
    with pytest.raises(DigestMismatchError):
        load_partition(model_dir, plan, 1, 2, framework="np", verify=keys.public_key)


# --------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(staging=st.integers(1, 300), world=st.integers(1, 3), rank_seed=st.integers(0, 2))
def test_staged_copy_chunks_reassemble(tmp_path_factory: pytest.TempPathFactory, staging: int, world: int, rank_seed: int) -> None:
    """The pinned-buffer pipeline's chunking, run on the cpu with tiny buffers."""
    torch = pytest.importorskip("torch")
    from tensorfile.sharded._blocks import BlockSource, Staging, to_device

    tensors = _model()
    path = tmp_path_factory.mktemp("s") / "m.safetensors"
    tensorfile.save_file(tensors, path)
    plan = plan_from_patterns(PLAN)
    rank = rank_seed % world
    stage = Staging(torch.device("cpu"), staging)
    with open_sharded(path, "pt", backend="pread") as model:
        expected = load_partition(model, plan, rank, world)
        for name in model.keys():
            block = block_for(model[name].info, plan, rank, world)
            got = to_device(stage, BlockSource(model.shard(model[name].shard), None), block)
            assert torch.equal(got, expected[name]), name


def test_cuda_loading_through_pinned_buffers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=8000)
    plan = plan_from_patterns(PLAN)
    for backend in ("mmap", "pread"):
        on_cpu = load_partition(tmp_path, plan, 1, 2, backend=backend)
        on_gpu = load_partition(tmp_path, plan, 1, 2, backend=backend, device="cuda", staging_bytes=1000)
        for name, t in on_cpu.items():
            assert on_gpu[name].device.type == "cuda"
            assert torch.equal(on_gpu[name].cpu(), t), name


def test_device_needs_torch_framework(tmp_path: Path) -> None:
    tensorfile.save_file(_model(), tmp_path / "m.safetensors")
    with pytest.raises(PartitionError, match="framework='pt'"):
        load_partition(tmp_path / "m.safetensors", PartitionPlan(), 0, 1, framework="np", device="cuda")


# --------------------------------------------------------------------------
# torch.distributed
# --------------------------------------------------------------------------


def test_distributed_helper_needs_a_process_group(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    tensorfile.save_file(_model(), tmp_path / "m.safetensors")
    with pytest.raises(PartitionError, match="not initialised"):
        load_partition_distributed(tmp_path / "m.safetensors", PartitionPlan())


FOLIO = 2 << 20  # the largest page-cache folio on x86-64: what one fault may map


def _touch_bound(model: object, plan: PartitionPlan, rank: int, world: int, shard: str) -> int:
    """Most bytes of a shard's mapping a rank can have resident: its runs, widened to folios."""
    spans: list[tuple[int, int]] = []
    for name in model.keys():  # type: ignore[attr-defined]
        handle = model[name]  # type: ignore[index]
        if handle.shard != shard:
            continue
        b = block_for(handle.info, plan, rank, world)
        with tensorfile.safe_open(model.path_of(shard)) as f:  # type: ignore[attr-defined]
            base = f.byte_range(name)[0]
        for i in range(b.outer):
            a = base + b.first + i * b.stride
            if b.run:
                spans.append((a // FOLIO * FOLIO, -(-(a + b.run) // FOLIO) * FOLIO))
    spans.sort()
    total, reach = 0, 0
    for a, e in spans:
        a = max(a, reach)
        if e > a:
            total += e - a
            reach = e
    return total


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_torch_distributed_gloo_ranks_read_only_their_bytes(tmp_path: Path, world: int) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(world)
    tensors = {f"l{i}.q.weight": rng.standard_normal((2048, 1024)).astype(np.float32) for i in range(2)}
    tensors["l0.o.weight"] = rng.standard_normal((64, 4096)).astype(np.float32)  # column split
    tensors["l1.o.weight"] = rng.standard_normal((30, 33)).astype(np.float16)  # uneven
    tensors["tok.embed"] = rng.standard_normal((100, 16)).astype(np.float32)
    tensors["norm"] = np.ones(1024, np.float32)
    folder = tmp_path / "model"
    save_sharded(tensors, folder, max_shard_size=9 << 20)
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, str(HERE / "dist_worker.py"), str(folder), str(world), str(port), str(out), json.dumps(PLAN)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = plan_from_patterns(PLAN)
    with open_sharded(folder) as model:
        total = sum(model[n].nbytes for n in model.keys())
        for rank in range(world):
            report = json.loads((out / f"rank{rank}.json").read_text())
            own = _own_bytes(model, plan, rank, world)
            # pread: the handle counted exactly this rank's bytes
            assert report["pread"]["bytes_read"] == own
            for backend in ("mmap", "pread"):
                if rank == 0:
                    assert report[backend]["equal"] == {n: True for n in tensors}
                dims = {n: plan.dim_for(n) for n in tensors}
                for n, shape in report[backend]["shapes"].items():
                    full = list(tensors[n].shape)
                    if dims[n] is not None:
                        d = dims[n] % len(full)
                        lo, hi = partition_bounds(full[d], rank, world)
                        full[d] = hi - lo
                    assert shape == full
            # mmap: resident pages of each shard map stay within this rank's runs
            # widened to whole folios, which is well under the whole model.
            resident = report["mmap"]["rss"]
            for shard, rss in resident.items():
                assert rss <= _touch_bound(model, plan, rank, world, shard), (rank, shard)
            assert sum(resident.values()) < total * (0.75 if world == 4 else 0.85)


# --------------------------------------------------------------------------
# hashing shards across processes
# --------------------------------------------------------------------------


def test_hash_files_processes_matches_threads(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=3000)
    files = [ModelFile(p.name, p, p.stat().st_size) for p in sorted(tmp_path.iterdir())]
    assert hash_files_processes(files, HashOptions(workers=2)) == hash_files(files, HashOptions(workers=1))
    assert hash_files_processes(files, HashOptions(workers=1)) == hash_files(files, HashOptions(workers=1))


def test_verify_shards(tmp_path: Path) -> None:
    tensors = _model()
    index = save_sharded(tensors, tmp_path, max_shard_size=3000)
    files = [ModelFile(s, tmp_path / s, (tmp_path / s).stat().st_size) for s in index.shard_files]
    expected = {d.name: d.digest for d in hash_files(files, HashOptions(tensors=False))}
    assert [d.name for d in verify_shards(tmp_path, expected, HashOptions(workers=2))] == index.shard_files
    with pytest.raises(NotSignedError):
        verify_shards(tmp_path, dict(list(expected.items())[1:]), HashOptions(workers=2))
    with tensorfile.safe_open(tmp_path / index.shard_files[-1]) as f:
        start, _ = f.byte_range(f.keys()[0])
    _flip_byte(tmp_path / index.shard_files[-1], start)
    with pytest.raises(DigestMismatchError, match=index.shard_files[-1]):
        verify_shards(tmp_path, expected, HashOptions(workers=2))
