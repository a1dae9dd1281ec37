"""Incremental re-signing (``resign``, ``tensorfile sign --update``): only
changed files are hashed again, and the new bundle verifies in full with
tensorfile and with model-signing."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile.errors import ManifestError, NotSignedError, SignatureError, VerificationError
from tensorfile.integrity import resign, sign, verify
from tensorfile.integrity.bundle import read_bundle, write_bundle
from tensorfile.integrity.hashing import SINGLE_FILE_NAME, HashOptions
from tensorfile.integrity.manifest import HINTS_KEY, FileHint, hash_model
from tensorfile.integrity.sign import sign_manifest
from tensorfile.numpy import save_file

HOUR_NS = 3600 * 10**9
#: Weights of the "large" model: large enough that hashing them shows, small
#: enough for CI (bench/bench_resign.py measures a 2 GiB model).
WEIGHTS_BYTES = 16 * 2**20


def ms_verify_key(model: Path, sig: Path, pub: Path) -> None:
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


def age(folder: Path) -> None:
    """Set every file's modification time an hour back: files written just
    now get no re-signing hint (a later write in the same tick could keep
    their times)."""
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))


@pytest.fixture(autouse=True)
def slow_machine_safe_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written during a test stay "just written" however loaded the
    machine is (CI's 2 cores can take more than 2 s between a write and the
    next sign); aged files (an hour old) keep their hints."""
    monkeypatch.setattr("tensorfile.integrity.manifest.RACY_NS", HOUR_NS // 2)


@pytest.fixture
def large(tmp_path: Path) -> Path:
    """A model folder: 16 MiB of weights in two shards, a config, a README."""
    folder = tmp_path / "large"
    folder.mkdir()
    rng = np.random.default_rng(3)
    half = WEIGHTS_BYTES // 2 // 4
    for i in (1, 2):
        save_file({f"w{i}": rng.standard_normal(half).astype(np.float32)},
                  folder / f"model-0000{i}-of-00002.safetensors")
    (folder / "config.json").write_text('{"hidden": 4}\n')
    (folder / "README.md").write_text("# A model\n")
    age(folder)
    return folder


class Counter:
    """The progress callback: counts the bytes the hash functions were fed."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, done: int, total: int) -> None:
        self.bytes = max(self.bytes, done)


def statement(sig: Path) -> dict[str, Any]:
    doc = json.loads(sig.read_text())
    out = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    assert isinstance(out, dict)
    return out


def resources(sig: Path) -> dict[str, str]:
    return {r["name"]: r["digest"] for r in statement(sig)["predicate"]["resources"]}


def test_a_readme_edit_rehashes_only_the_readme(large: Path, p256: Any) -> None:
    full = Counter()
    sig = sign(large, p256.private, progress=full)
    assert full.bytes > WEIGHTS_BYTES  # the first signature hashes everything
    before = resources(sig)
    (large / "README.md").write_text("# A model\n\nNow with a longer description.\n")
    counted = Counter()
    report = resign(large, p256.private, progress=counted)
    readme = (large / "README.md").stat().st_size
    assert report.rehashed == ("README.md",)
    assert counted.bytes == report.bytes_hashed == readme < 2**20
    assert report.previous_root_digest != report.root_digest
    after = resources(sig)
    assert {n for n in after if after[n] != before[n]} == {"README.md"}
    # A complete bundle: tensorfile and model-signing check every file.
    assert verify(large, p256.public).files == tuple(sorted(before))
    ms_verify_key(large, sig, p256.public)
    # The README is still racy (written just now): hashed again, nothing else.
    assert resign(large, p256.private).rehashed == ("README.md",)


def test_nothing_changed_hashes_nothing(large: Path, p256: Any) -> None:
    sig = sign(large, p256.private)
    old = sig.read_bytes()
    report = resign(large, p256.private)
    assert report.rehashed == () and report.bytes_hashed == 0
    assert report.root_digest == report.previous_root_digest
    assert sig.read_bytes() != old  # a new signature (ECDSA is randomised) ...
    assert verify(large, p256.public).root_digest == report.root_digest  # ... over the same digests


def test_content_changed_with_mtime_restored_is_rehashed(large: Path, p256: Any) -> None:
    """Same size, same modification time: the status-change time gives it away."""
    sig = sign(large, p256.private)
    cfg = large / "config.json"
    st = cfg.stat()
    cfg.write_text('{"hidden": 5}\n')
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cfg.stat().st_size == st.st_size and cfg.stat().st_mtime_ns == st.st_mtime_ns
    assert resign(large, p256.private).rehashed == ("config.json",)
    verify(large, p256.public)
    ms_verify_key(large, sig, p256.public)


def test_a_file_replaced_by_rename_is_rehashed(large: Path, p256: Any) -> None:
    """An atomic writer's rename gives the file a new inode."""
    sign(large, p256.private)
    cfg = large / "config.json"
    st = cfg.stat()
    tmp = large / "config.json.new"
    tmp.write_text('{"hidden": 6}\n')
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, cfg)
    assert resign(large, p256.private).rehashed == ("config.json",)
    verify(large, p256.public)


def test_new_and_removed_files(large: Path, p256: Any) -> None:
    sign(large, p256.private)
    (large / "config.json").unlink()
    (large / "tokenizer.json").write_text("{}")
    report = resign(large, p256.private)
    assert report.rehashed == ("tokenizer.json",)
    assert "config.json" not in report.files
    assert set(verify(large, p256.public).files) == set(report.files)


def test_files_written_just_before_signing_get_no_hint(large: Path, p256: Any) -> None:
    """A file modified in the 2 s before signing could be written again in the
    same timestamp tick with size and times unchanged: it is always rehashed."""
    (large / "config.json").write_text('{"hidden": 7}\n')
    sig = sign(large, p256.private)
    hints = statement(sig)["predicate"][HINTS_KEY]["files"]
    assert "config.json" not in hints and "README.md" in hints
    assert resign(large, p256.private).rehashed == ("config.json",)


def test_other_digest_kinds_are_rehashed(large: Path, p256: Any) -> None:
    sign(large, p256.private)
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    # Another tensor digest: only the safetensors files need hashing again.
    assert set(resign(large, p256.private, tensor_algorithm="sha256").rehashed) == set(shards)
    # Another file digest: every file.
    assert len(resign(large, p256.private, file_algorithm="blake3").rehashed) == 4
    verify(large, p256.public)


def test_model_signing_bundle_without_hints_rehashes_everything(
    large: Path, p256: Any, tmp_path: Path
) -> None:
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    sig = large / "model.sig"
    (ms.signing.Config().use_elliptic_key_signer(private_key=p256.private)
     .set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[sig]))
     .sign(large, sig))
    report = resign(large, p256.private)
    assert len(report.rehashed) == 4 and report.bytes_hashed > WEIGHTS_BYTES
    ms_verify_key(large, sig, p256.public)


def test_refuses_a_signature_by_another_key(
    large: Path, p256: Any, keys: Callable[[str], Any]
) -> None:
    sig = sign(large, keys("other-ecdsa-p256").private)
    old = sig.read_bytes()
    with pytest.raises(SignatureError):
        resign(large, p256.private)
    assert sig.read_bytes() == old  # nothing written


def test_refuses_a_bundle_edited_after_signing(large: Path, p256: Any) -> None:
    sig = sign(large, p256.private)
    doc = json.loads(sig.read_text())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["predicate"][HINTS_KEY]["files"]["README.md"]["size"] += 1
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(doc))
    with pytest.raises(VerificationError):
        resign(large, p256.private)


def test_without_a_signature(large: Path, p256: Any) -> None:
    with pytest.raises(NotSignedError):
        resign(large, p256.private)


def test_hints_naming_unsigned_files_are_refused(large: Path, p256: Any) -> None:
    """Hints are read as strictly as the rest of the statement."""
    manifest = hash_model(large, HashOptions(), signature=large / "model.sig")
    bad = type(manifest)(manifest.model_name, manifest.files, manifest.serialization,
                         {**manifest.hints, "ghost.bin": FileHint(1, 2, 3, 4)})
    write_bundle(large / "model.sig", sign_manifest(bad, p256.private))
    with pytest.raises(ManifestError, match=r"ghost\.bin"):
        verify(large, p256.public)
    with pytest.raises(ManifestError, match=r"ghost\.bin"):
        resign(large, p256.private)


def test_hints_are_signed_and_parsed_back(large: Path, p256: Any) -> None:
    sig = sign(large, p256.private)
    manifest = hash_model(large, HashOptions(), signature=sig)
    read = read_bundle(sig)
    parsed = type(manifest).from_statement(read.statement())
    assert parsed.hints == manifest.hints and len(parsed.hints) == 4
    st = (large / "README.md").stat()
    assert parsed.hints["README.md"] == FileHint(st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                 st.st_ino)
    assert time.time_ns() - st.st_mtime_ns > HOUR_NS // 2


def test_single_file_model(single: Path, p256: Any) -> None:
    age(single.parent)
    sign(single, p256.private)
    assert resign(single, p256.private).rehashed == ()
    with open(single, "r+b") as f:  # same size, new bytes: an in-place edit
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")
    assert resign(single, p256.private).rehashed == (SINGLE_FILE_NAME,)
    verify(single, p256.public)
