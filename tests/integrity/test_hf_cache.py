"""Hugging Face cache snapshots: every file a symlink into the repository's blobs/.

A fake cache is built the way huggingface_hub lays it out:
``<cache>/models--org--name/{blobs/<digest>, refs/main, snapshots/<rev>/<file> ->
../../blobs/<digest>}``, nested files linking ``../../../blobs/<digest>``.
Interop both ways with model-signing 1.1.1's ``allow_symlinks``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import DigestMismatchError, ModelPathError, ShardIndexError
from tensorfile.integrity import TrustPolicy, hash_model, sign, verify
from tensorfile.integrity.hashing import HashOptions, hf_cache_blobs, list_model_files

REV = "0123456789abcdef0123456789abcdef01234567"


def make_snapshot(cache: Path, model: Path, repo: str = "models--org--tiny") -> Path:
    """Move ``model``'s files into a fake cache's blobs and link them from a snapshot."""
    base = cache / repo
    blobs, snap = base / "blobs", base / "snapshots" / REV
    blobs.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(REV)
    for src in sorted(p for p in model.rglob("*") if p.is_file()):
        rel = src.relative_to(model)
        data = src.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))  # relative, as the hub writes them
    return snap


@pytest.fixture
def snapshot(model: Path, tmp_path: Path) -> Path:
    return make_snapshot(tmp_path / "hub", model)


def sharded_model(folder: Path) -> Path:
    """Two shards with an index, as ``save_pretrained`` writes them."""
    from tensorfile.numpy import save_file

    folder.mkdir()
    rng = np.random.default_rng(1)
    weight_map = {}
    for i in (1, 2):
        shard = f"model-0000{i}-of-00002.safetensors"
        tensors = {f"layer.{i}.{k}": rng.standard_normal((4, 8)).astype(np.float32)
                   for k in ("q", "k", "v")}
        save_file(tensors, folder / shard)
        weight_map.update(dict.fromkeys(tensors, shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    return folder


def _payload(sig: Path) -> dict[str, Any]:
    doc = json.loads(sig.read_text())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def test_snapshot_files_are_links_named_by_link_path(snapshot: Path, model: Path) -> None:
    assert (snapshot / "tokenizer" / "vocab.txt").is_symlink()
    assert hf_cache_blobs(snapshot) == os.path.realpath(snapshot.parents[1] / "blobs")
    assert hf_cache_blobs(model) is None
    with pytest.raises(ModelPathError, match="symlink"):
        list_model_files(snapshot)
    files = list_model_files(snapshot, allow_symlinks=True)
    assert [f.name for f in files] == [
        "config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "tokenizer/vocab.txt",
    ]
    assert all(f.path.parent.name == "blobs" for f in files)
    # The same manifest as the real folder: names are link paths, digests the targets'.
    assert hash_model(snapshot, HashOptions(allow_symlinks=True)).to_dict()["files"] == hash_model(
        model).to_dict()["files"]


def test_model_signing_verifies_tensorfile_snapshot_signature(
    snapshot: Path, p256: Any, tmp_path: Path
) -> None:
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    sig = sign(snapshot, p256.private, tmp_path / "tf.sig", allow_symlinks=True)
    assert _payload(sig)["predicate"]["serialization"]["allow_symlinks"] is True
    # model-signing's verifier does not take allow_symlinks from the signature
    # (its hashing config resets it): it must be told, as on its command line.
    ms.verifying.Config().use_elliptic_key_verifier(public_key=p256.public).set_hashing_config(
        ms.hashing.Config().set_allow_symlinks(True)
    ).verify(snapshot, sig)
    # and model-signing computes the same resources and root digest
    ms_sig = tmp_path / "ms.sig"
    ms.signing.Config().use_elliptic_key_signer(private_key=p256.private).set_hashing_config(
        ms.hashing.Config().set_allow_symlinks(True)
    ).sign(snapshot, ms_sig)
    assert _payload(sig)["subject"] == _payload(ms_sig)["subject"]
    assert _payload(sig)["predicate"]["resources"] == _payload(ms_sig)["predicate"]["resources"]


def test_tensorfile_verifies_model_signing_snapshot_signature(
    snapshot: Path, p256: Any, tmp_path: Path
) -> None:
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    sig = tmp_path / "ms.sig"
    ms.signing.Config().use_elliptic_key_signer(private_key=p256.private).set_hashing_config(
        ms.hashing.Config().set_allow_symlinks(True)
    ).sign(snapshot, sig)
    with pytest.raises(ModelPathError, match="symlink"):
        verify(snapshot, p256.public, signature=sig)  # the verifier must allow them too
    r = verify(snapshot, p256.public, signature=sig, allow_symlinks=True)
    assert r.files_checked == 4 and r.serialization["allow_symlinks"] is True
    # A changed blob is a changed model.
    blob = (snapshot / "config.json").resolve()
    blob.chmod(0o644)
    blob.write_text('{"hidden_size": 17, "layers": 5}\n')
    with pytest.raises(DigestMismatchError, match=r"config\.json"):
        verify(snapshot, p256.public, signature=sig, allow_symlinks=True)


def test_cli_model_signing_both_ways(snapshot: Path, p256: Any, tmp_path: Path) -> None:
    """`model_signing sign/verify key --allow_symlinks` against tensorfile's CLI."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "model_signing"
    if not exe.exists():
        pytest.skip("model_signing CLI not installed next to this Python")
    pytest.importorskip("OpenSSL")
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    runner = CliRunner()
    tf_sig, ms_sig = tmp_path / "tf.sig", tmp_path / "ms.sig"
    res = runner.invoke(app, ["sign", str(snapshot), "-k", str(p256.private), "-s", str(tf_sig),
                              "--allow-symlinks"])
    assert res.exit_code == 0, res.output
    out = subprocess.run([str(exe), "verify", "key", str(snapshot), "--signature", str(tf_sig),
                          "--public_key", str(p256.public), "--allow_symlinks"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([str(exe), "sign", "key", str(snapshot), "--signature", str(ms_sig),
                          "--private_key", str(p256.private), "--allow_symlinks"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    res = runner.invoke(app, ["verify", str(snapshot), "-k", str(p256.public), "-s", str(ms_sig),
                              "--allow-symlinks"])
    assert res.exit_code == 0, res.output


def test_verify_on_load_in_snapshot(p256: Any, tmp_path: Path) -> None:
    model = sharded_model(tmp_path / "sharded")
    snapshot = make_snapshot(tmp_path / "hub", model)
    sign(snapshot, p256.private, allow_symlinks=True)  # model.sig inside the snapshot
    assert not (snapshot / "model.sig").is_symlink()
    shard = snapshot / "model-00001-of-00002.safetensors"
    got = tensorfile.load_file(shard, verify=p256.public)
    want = tensorfile.load_file(model / "model-00001-of-00002.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # the whole folder: index and shards are links into blobs/
    whole = tensorfile.load_file(snapshot, verify=p256.public)
    assert sorted(whole) == sorted(tensorfile.load_file(model))
    # a shard linked out of the cache repository is still refused
    shard2 = snapshot / "model-00002-of-00002.safetensors"
    shard2.unlink()
    shard2.symlink_to(model / "model-00002-of-00002.safetensors")
    with pytest.raises(ShardIndexError, match="symlink out of the model folder"):
        tensorfile.load_file(snapshot)
    # a tampered blob fails the load
    blob = shard.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(shard, verify=TrustPolicy(key=p256.public, eager=True))


def test_links_that_leave_the_cache_repo_are_refused(
    snapshot: Path, tmp_path: Path, p256: Any
) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    link = snapshot / "extra.txt"
    link.symlink_to(outside)
    with pytest.raises(ModelPathError, match=r"symlink points outside the model folder or .*blobs"):
        hash_model(snapshot, HashOptions(allow_symlinks=True))
    link.unlink()
    # a blob of another repository of the same cache is not this model's
    other = make_snapshot(tmp_path / "hub", snapshot / "tokenizer", repo="models--org--other")
    link.symlink_to(os.path.relpath((other / "vocab.txt").resolve(), snapshot))
    with pytest.raises(ModelPathError, match="outside"):
        hash_model(snapshot, HashOptions(allow_symlinks=True))
    link.unlink()
    # a folder below blobs/ (not a blob) is refused, as are links to folders
    sub = snapshot.parents[1] / "blobs" / "sub"
    sub.mkdir()
    (sub / "f").write_text("y")
    link.symlink_to(sub / "f")
    with pytest.raises(ModelPathError, match="outside"):
        hash_model(snapshot, HashOptions(allow_symlinks=True))
    link.unlink()
    link.symlink_to(sub)
    with pytest.raises(ModelPathError, match="not a regular file"):
        hash_model(snapshot, HashOptions(allow_symlinks=True))
    link.unlink()
    assert verify(snapshot, p256.public, signature=sign(
        snapshot, p256.private, tmp_path / "s.sig", allow_symlinks=True), allow_symlinks=True)


def test_blobs_only_count_inside_a_snapshot(model: Path, tmp_path: Path) -> None:
    """A folder that is not ``<repo>/snapshots/<rev>`` gets no blobs/ exception."""
    fake = tmp_path / "models--org--x" / "blobs"
    fake.mkdir(parents=True)
    (fake / "b").write_text("z")
    (model / "z.txt").symlink_to(fake / "b")
    with pytest.raises(ModelPathError, match="outside"):
        hash_model(model, HashOptions(allow_symlinks=True))
    # a snapshot whose blobs/ is itself a symlink is not trusted as a cache
    snap = make_snapshot(tmp_path / "hub2", model / "tokenizer")
    blobs = snap.parents[1] / "blobs"
    real = blobs.rename(tmp_path / "moved-blobs")
    blobs.symlink_to(real)
    assert hf_cache_blobs(snap) is None
    with pytest.raises(ModelPathError, match="outside"):
        hash_model(snap, HashOptions(allow_symlinks=True))


def test_single_file_link_in_snapshot(snapshot: Path, tmp_path: Path, p256: Any) -> None:
    shard = snapshot / "model-00002-of-00002.safetensors"
    sig = sign(shard, p256.private, tmp_path / "one.sig", allow_symlinks=True)
    assert verify(shard, p256.public, signature=sig, allow_symlinks=True).files == (".",)
    rogue = snapshot / "rogue.safetensors"
    shutil.copy(shard, tmp_path / "copy.safetensors")
    rogue.symlink_to(tmp_path / "copy.safetensors")
    with pytest.raises(ModelPathError, match="outside"):
        hash_model(rogue, HashOptions(allow_symlinks=True))
