"""Hashing and manifests: digests equal hashlib's, folder rules, ordering, progress."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path, PurePosixPath
from typing import Any

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfile._format.header import parse
from tensorfile.errors import FormatError, ModelPathError
from tensorfile.integrity import Manifest, hash_model
from tensorfile.integrity.hashing import (
    HashOptions,
    ModelFile,
    hash_file,
    hash_files,
    list_model_files,
)
from tensorfile.numpy import save_file


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def part(algorithm: str, b: bytes) -> str:
    """A header or tensor digest, computed here in one call (no chunks, no threads)."""
    return sha(b) if algorithm == "sha256" else blake3.blake3(b).hexdigest()


ALGORITHMS = pytest.mark.parametrize("algorithm", ["blake3", "sha256"])


@ALGORITHMS
def test_file_digests_in_either_algorithm(model: Path, algorithm: str) -> None:
    """file_algorithm picks the file digests (the OMS hash_type); the root
    digest is SHA-256 over them either way."""
    m = hash_model(model, HashOptions(file_algorithm=algorithm))
    assert m.serialization.hash_type == algorithm
    for f in m.files:
        assert f.algorithm == algorithm and f.digest == part(algorithm, (model / f.name).read_bytes())
    root = hashlib.sha256(b"".join(bytes.fromhex(f.digest) for f in m.files)).hexdigest()
    assert m.root_digest == root
    st = m.to_statement()
    assert {r["algorithm"] for r in st["predicate"]["resources"]} == {algorithm}
    assert st["predicate"]["serialization"]["hash_type"] == algorithm
    assert m.to_dict()["files"][0] == {"name": "config.json", algorithm: m.files[0].digest,
                                       "size": m.files[0].size}
    back = Manifest.from_statement(st)
    assert [(f.name, f.digest, f.algorithm) for f in back.files] == [
        (f.name, f.digest, f.algorithm) for f in m.files
    ]


def test_one_big_file_blake3_digest_spread_over_threads(
    single: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorfile.integrity import hashing

    monkeypatch.setattr(hashing, "PARALLEL_DIGEST_BYTES", 64)
    (mf,) = list_model_files(single)
    got = hash_file(mf, HashOptions(chunk_size=100, file_algorithm="blake3", tensors=False))
    assert got.digest == part("blake3", single.read_bytes())


@ALGORITHMS
def test_digests_match_hashlib(model: Path, algorithm: str) -> None:
    m = hash_model(model, HashOptions(tensor_algorithm=algorithm))
    assert [f.name for f in m.files] == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer/vocab.txt",
    ]
    for f in m.files:
        data = (model / f.name).read_bytes()
        assert f.digest == sha(data) and f.size == len(data)
        if not f.name.endswith(".safetensors"):
            assert f.safetensors is None
            continue
        assert f.safetensors is not None and f.safetensors.algorithm == algorithm
        hdr = parse(data)
        assert f.safetensors.header == part(algorithm, data[: hdr.data_offset])
        assert list(f.safetensors.tensors) == list(hdr.tensors)
        for name, t in hdr.tensors.items():
            span = data[hdr.data_offset + t.start : hdr.data_offset + t.end]
            assert f.safetensors.tensors[name] == part(algorithm, span)
    assert m.tensor_algorithm == algorithm
    assert m.to_statement()["predicate"]["tensorfile"]["algorithm"] == algorithm
    root = hashlib.sha256(b"".join(bytes.fromhex(f.digest) for f in m.files)).hexdigest()
    assert m.root_digest == root
    assert m.tensor_count == 9
    assert m.to_dict()["files"][1]["tensors"]["embed"] == m.files[1].safetensors.tensors["embed"]  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=0, max_size=6),
    chunk=st.integers(1, 97),
    algorithm=st.sampled_from(["blake3", "sha256"]),
)
def test_chunking_never_changes_digests(
    tmp_path_factory: Any, sizes: list[int], chunk: int, algorithm: str
) -> None:
    """Tensor boundaries anywhere relative to chunk boundaries: same digests."""
    d = tmp_path_factory.mktemp("chunks")
    rng = np.random.default_rng(len(sizes) * 1000 + chunk)
    tensors = {f"t{i}": rng.integers(0, 255, size=(n,), dtype=np.uint8) for i, n in enumerate(sizes)}
    p = d / "x.safetensors"
    save_file(tensors, p)
    mf = ModelFile(".", p, p.stat().st_size)
    small = hash_file(mf, HashOptions(chunk_size=chunk, tensor_algorithm=algorithm))
    big = hash_file(mf, HashOptions(tensor_algorithm=algorithm))
    assert small == big
    assert big.digest == sha(p.read_bytes())
    assert big.safetensors is not None
    for name, arr in tensors.items():
        assert big.safetensors.tensors[name] == part(algorithm, arr.tobytes())


def test_big_blake3_digest_spread_over_threads_is_the_same_digest(
    single: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BLAKE3 digest of a span past PARALLEL_DIGEST_BYTES is computed by a
    multithreaded hasher in chunks: the same digest as one plain call."""
    from tensorfile.integrity import hashing

    threads: list[int] = []
    real_blake3 = blake3.blake3

    def spy(*args: Any, **kw: Any) -> Any:
        threads.append(kw.get("max_threads", 1))
        return real_blake3(*args, **kw)

    monkeypatch.setattr(hashing, "PARALLEL_DIGEST_BYTES", 64)
    monkeypatch.setattr(blake3, "blake3", spy)
    spy.AUTO = real_blake3.AUTO  # type: ignore[attr-defined]
    (mf,) = list_model_files(single)
    got = hash_file(mf, HashOptions(chunk_size=100, tensor_algorithm="blake3")).safetensors
    assert got is not None
    assert real_blake3.AUTO in threads and 1 in threads  # big spans threaded, small ones not
    data = single.read_bytes()
    hdr = parse(data)
    assert got.header == part("blake3", data[: hdr.data_offset])
    for name, t in hdr.tensors.items():
        assert got.tensors[name] == part("blake3", data[hdr.data_offset + t.start : hdr.data_offset + t.end])


def test_a_file_that_shrinks_while_read_is_an_error(single: Path) -> None:
    """pread reading past the new end of a truncated file: a typed error, not
    digests of fewer bytes."""
    from tensorfile.integrity import hashing

    (mf,) = list_model_files(single)
    with open(single, "rb") as f:
        chunks = hashing._read_chunks(f.fileno(), mf, 0, mf.size, 64)
        assert next(chunks)[0] == 0
        os.truncate(single, 100)
        with pytest.raises(ModelPathError, match="changed size while it was hashed"):
            list(chunks)


def test_unknown_tensor_algorithm_is_refused_before_hashing(model: Path) -> None:
    from tensorfile.errors import UnsupportedAlgorithmError

    with pytest.raises(UnsupportedAlgorithmError, match=r"'md5'.*blake3, sha256"):
        hash_model(model, HashOptions(tensor_algorithm="md5"))


def test_a_manifest_mixing_tensor_algorithms_is_refused(model: Path) -> None:
    from dataclasses import replace

    from tensorfile.errors import ManifestError

    m = hash_model(model, HashOptions(tensor_algorithm="blake3"))
    st = m.files[1].safetensors
    assert st is not None
    mixed = replace(m, files=(m.files[0], replace(m.files[1], safetensors=replace(st, algorithm="sha256")),
                              *m.files[2:]))
    with pytest.raises(ManifestError, match="mix algorithms: blake3, sha256"):
        mixed.to_statement()


def test_parallel_equals_serial_and_progress(model: Path) -> None:
    files = list_model_files(model)
    calls: list[tuple[int, int]] = []
    parallel = hash_files(files, HashOptions(workers=4, chunk_size=64), lambda d, t: calls.append((d, t)))
    serial = hash_files(files, HashOptions(workers=1))
    assert parallel == serial
    total = sum(f.size for f in files)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > len(files)


def test_tensors_off_skips_tensor_digests(model: Path) -> None:
    assert all(f.safetensors is None for f in hash_model(model, HashOptions(tensors=False)).files)


def test_order_is_path_component_order(tmp_path: Path) -> None:
    m = tmp_path / "m"
    names = ["a-b", "a/b", "a.b", "a/a/z", "B", "a0", "a b", "ü"]
    for n in names:
        (m / n).parent.mkdir(parents=True, exist_ok=True)
        (m / n).write_text(n)
    got = [f.name for f in hash_model(m).files]
    assert got == sorted(names, key=PurePosixPath)


def test_ignored_paths(model: Path) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "config").write_text("x")
    (model / ".github").mkdir()
    (model / ".github" / "ci.yml").write_text("x")
    (model / ".gitignore").write_text("x")
    (model / "model.sig").write_text("old signature")
    (model / "tokenizer" / ".git").mkdir()  # only top-level VCS folders are ignored
    (model / "tokenizer" / ".git" / "x").write_text("x")
    (model / "README.md").write_text("x")
    m = hash_model(model, HashOptions(ignore_paths=["README.md"]), signature=model / "model.sig")
    names = [f.name for f in m.files]
    assert "tokenizer/.git/x" in names
    assert not any(n.startswith((".git", "model.sig", "README")) for n in names)
    assert set(m.serialization.ignore_paths) >= {".git", ".github", ".gitignore",
                                                 ".gitattributes", "model.sig", "README.md"}


def test_symlinks(model: Path, tmp_path: Path) -> None:
    (model / "alias.json").symlink_to(model / "config.json")
    with pytest.raises(ModelPathError, match="symlink"):
        hash_model(model)
    m = hash_model(model, HashOptions(allow_symlinks=True))
    assert m.by_name["alias.json"].digest == m.by_name["config.json"].digest
    assert m.serialization.allow_symlinks
    (model / "alias.json").unlink()
    (model / "dirlink").symlink_to(model / "tokenizer")
    with pytest.raises(ModelPathError, match="not a regular file"):
        hash_model(model, HashOptions(allow_symlinks=True))
    (model / "dirlink").unlink()
    (model / "escape").symlink_to(tmp_path)
    with pytest.raises(ModelPathError, match="outside the model folder"):
        hash_model(model, HashOptions(allow_symlinks=True))
    (model / "escape").unlink()
    (model / "dangling").symlink_to(model / "nope")
    with pytest.raises(ModelPathError):
        hash_model(model, HashOptions(allow_symlinks=True))


def test_symlinked_model_file_needs_permission(single: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.safetensors"
    link.symlink_to(single)
    with pytest.raises(ModelPathError, match="symlink"):
        hash_model(link)
    assert hash_model(link, HashOptions(allow_symlinks=True)).files[0].digest == sha(single.read_bytes())


def test_special_files_are_refused(model: Path) -> None:
    os.mkfifo(model / "pipe")
    with pytest.raises(ModelPathError, match="not a regular file"):
        hash_model(model)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelPathError, match="cannot read model"):
        hash_model(tmp_path / "nope")


def test_non_utf8_name_is_refused(model: Path) -> None:
    name = os.fsdecode(b"bad\xff.txt")
    try:
        (model / name).write_text("x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    with pytest.raises(ModelPathError, match="UTF-8"):
        hash_model(model)


def test_corrupt_safetensors_refused_when_signing_tensors(model: Path) -> None:
    (model / "broken.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(FormatError, match=r"broken\.safetensors"):
        hash_model(model)
    assert hash_model(model, HashOptions(tensors=False)).by_name["broken.safetensors"].size == 16


def test_empty_file_and_empty_folder(tmp_path: Path) -> None:
    m = tmp_path / "m"
    (m / "empty_dir").mkdir(parents=True)
    (m / "empty.txt").write_bytes(b"")
    man = hash_model(m)
    assert [(f.name, f.digest) for f in man.files] == [("empty.txt", sha(b""))]


@ALGORITHMS
def test_statement_round_trip(model: Path, algorithm: str) -> None:
    m = hash_model(model, HashOptions(tensor_algorithm=algorithm))
    back = Manifest.from_statement(m.to_statement())
    assert back.root_digest == m.root_digest
    assert [(f.name, f.digest, f.safetensors) for f in back.files] == [
        (f.name, f.digest, f.safetensors) for f in m.files
    ]
    assert back.serialization == m.serialization
    assert back.model_name == "model"


def test_file_and_tensor_digests_split_across_threads(single: Path) -> None:
    """Fewer files than threads: the file digest and tensor digests run as two jobs."""
    files = list_model_files(single)
    calls: list[tuple[int, int]] = []
    split = hash_files(files, HashOptions(workers=2, chunk_size=128), lambda d, t: calls.append((d, t)))
    one_pass = hash_files(files, HashOptions(workers=1))
    assert split == one_pass
    assert split[0].digest == sha(single.read_bytes()) and split[0].safetensors is not None
    size = single.stat().st_size
    assert calls[-1] == (2 * size, 2 * size)  # both jobs report the bytes they hashed


def test_file_swapped_for_a_symlink_after_listing_is_refused(model: Path, tmp_path: Path) -> None:
    files = list_model_files(model)
    cfg = next(f for f in files if f.name == "config.json")
    (tmp_path / "secret").write_text("outside")
    cfg.path.unlink()
    cfg.path.symlink_to(tmp_path / "secret")
    with pytest.raises(ModelPathError, match="cannot open"):
        hash_file(cfg)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=0, max_size=12),
    job_bytes=st.integers(1, 5000),
    workers=st.integers(1, 3),
)
def test_tensor_digests_in_jobs_equal_one_pass(
    tmp_path_factory: Any, sizes: list[int], job_bytes: int, workers: int
) -> None:
    """Tensor digests alone are split into jobs of consecutive tensors (any job
    size, any thread count): the same digests as one pass over the file, and
    progress counts each byte once."""
    from tensorfile.integrity import hashing

    d = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(sum(sizes) + job_bytes)
    tensors = {f"t{i}": rng.integers(0, 255, size=(n,), dtype=np.uint8) for i, n in enumerate(sizes)}
    p = d / "x.safetensors"
    save_file(tensors, p)
    mf = ModelFile(".", p, p.stat().st_size)
    calls: list[tuple[int, int]] = []
    old = hashing.PART_JOB_BYTES
    hashing.PART_JOB_BYTES = job_bytes
    try:
        (got,) = hashing.hash_contents(
            [mf], whole=[False], tensors=[True], options=HashOptions(workers=workers, chunk_size=97),
            progress=lambda done, total: calls.append((done, total)),
        )
    finally:
        hashing.PART_JOB_BYTES = old
    assert got.digest is None and got.size == p.stat().st_size
    assert got.safetensors == hash_file(mf).safetensors
    if calls:
        assert calls[-1] == (got.size, got.size)


def test_one_file_s_tensor_digests_spread_over_threads(single: Path, monkeypatch: Any) -> None:
    """A single file's tensors are hashed by several jobs on different threads,
    each job reading only its own tensors' bytes."""
    import threading

    from tensorfile.integrity import hashing

    monkeypatch.setattr(hashing, "PART_JOB_BYTES", 1)  # one job per span
    real = hashing._hash_spans
    seen: list[tuple[str, int, int]] = []
    both_busy = threading.Event()

    def spy(*args: Any, **kw: Any) -> Any:
        spans = kw["spans"]
        seen.append((threading.current_thread().name, spans[0][0], spans[-1][1]))
        if len({name for name, _, _ in seen}) >= 2:
            both_busy.set()
        # Each job holds its thread until a second thread has taken one, so
        # one thread cannot run every job however the scheduler plays.
        assert both_busy.wait(60), "only one thread ever took a job"
        return real(*args, **kw)

    monkeypatch.setattr(hashing, "_hash_spans", spy)
    (mf,) = list_model_files(single)
    (got,) = hashing.hash_contents([mf], whole=[False], tensors=[True], options=HashOptions(workers=2))
    assert got.safetensors is not None
    assert len(seen) == 1 + len(got.safetensors.tensors)  # the header and each tensor
    assert len({name for name, _, _ in seen}) == 2  # both threads took jobs
    ranges = sorted((a, b) for _, a, b in seen)
    assert ranges[0][0] == 0 and ranges[-1][1] == single.stat().st_size
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(ranges))


def test_a_file_that_changes_size_after_listing_is_an_error(model: Path) -> None:
    """The size a file was listed with is the size it must have when hashed:
    a file written to in between is reported, never hashed half old, half new."""
    files = list_model_files(model)
    with open(model / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ModelPathError, match=r"config\.json: file changed size"):
        hash_files(files)


_SHRINK_WHILE_MAPPED = r"""
import sys
from pathlib import Path
import numpy as np
from tensorfile.errors import ModelPathError
from tensorfile.integrity import hashing
from tensorfile.integrity.hashing import HashOptions, hash_file, list_model_files
from tensorfile.numpy import save_file

path = Path(sys.argv[1])
save_file({"w": np.ones(4 << 20, np.uint8)}, path)
hashing.PARALLEL_DIGEST_BYTES = 64  # the BLAKE3 path that hashes from a mapping
(mf,) = list_model_files(path)

def cut(_done):
    if path.stat().st_size > 100:
        path.write_bytes(b"x" * 100)  # truncates the same inode

try:
    hash_file(mf, HashOptions(chunk_size=1 << 20, tensor_algorithm="blake3"), progress=cut)
except ModelPathError as e:
    print("refused:", e)
"""


def test_a_file_cut_short_while_hashed_from_a_mapping_is_an_error(tmp_path: Path) -> None:
    """Hashing from a mapping (multithreaded BLAKE3) touched pages past the new
    end of a file cut short meanwhile: SIGBUS killed the process (issue 22).
    Now the next chunk is checked first: a typed error."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _SHRINK_WHILE_MAPPED, str(tmp_path / "m.safetensors")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert "refused:" in proc.stdout and "changed size while it was hashed" in proc.stdout


def test_an_error_in_the_progress_callback_reaches_the_caller_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling from a progress callback while hashing from a mapping raised
    ``BufferError: cannot close exported pointers exist`` (issue 22)."""
    from tensorfile.integrity import hashing

    class Cancelled(Exception):
        pass

    def cancel(_done: int) -> None:
        raise Cancelled

    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(4 << 20, np.uint8)}, path)
    monkeypatch.setattr(hashing, "PARALLEL_DIGEST_BYTES", 64)
    (mf,) = list_model_files(path)
    with pytest.raises(Cancelled):
        hash_file(mf, HashOptions(chunk_size=1 << 20, tensor_algorithm="blake3"), progress=cancel)
