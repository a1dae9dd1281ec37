"""Verify-on-load: LoadVerifier directly, and through safe_open / load_file."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorfile
import tensorfile.integrity.onload as onload
from tensorfile._format.header import parse
from tensorfile.errors import (
    DigestMismatchError,
    KeyLoadError,
    NotSignedError,
    SignatureError,
    VerificationError,
)
from tensorfile.integrity import TrustPolicy, sign
from tensorfile.integrity.keys import load_public_key
from tensorfile.integrity.onload import load_verifier

SHARD = "model-00001-of-00002.safetensors"


def raw_header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: 8 + int.from_bytes(data[:8], "little")]


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    hdr = parse(path.read_bytes())
    t = hdr.tensors[name]
    return hdr.data_offset + t.start, hdr.data_offset + t.end


def flip_tensor(path: Path, name: str) -> None:
    start, _ = tensor_span(path, name)
    data = bytearray(path.read_bytes())
    data[start] ^= 0x80
    path.write_bytes(bytes(data))


@pytest.fixture(params=["blake3", "sha256"])
def signed(model: Path, p256: Any, request: pytest.FixtureRequest) -> Path:
    """The model signed with header and tensor digests of each algorithm."""
    sign(model, p256.private, tensor_algorithm=request.param)
    return model


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every buffer the on-load verifier hashes."""
    sizes: list[int] = []
    real = onload.digest_hex

    def counting(algorithm: str, data: bytes | memoryview) -> str:
        sizes.append(len(data))
        return real(algorithm, data)

    monkeypatch.setattr(onload, "digest_hex", counting)
    finish = onload.TensorCheck.finish

    def counting_finish(self: onload.TensorCheck) -> None:
        if self._hasher is not None:  # a tensor's bytes, hashed as they were read
            sizes.append(self._fed)
        finish(self)

    monkeypatch.setattr(onload.TensorCheck, "finish", counting_finish)
    return sizes


# ------------------------------------------------------------------ LoadVerifier directly


def test_load_verifier_checks_header_and_tensors(signed: Path, p256: Any) -> None:
    path = signed / SHARD
    v = load_verifier(str(p256.public), path)
    assert not v.eager
    v.check_header(raw_header(path))
    assert v.resource == SHARD and v.signer is not None
    start, end = tensor_span(path, "layer.0.weight")
    data = path.read_bytes()
    v.check_tensor("layer.0.weight", memoryview(data[start:end]))
    assert v.bytes_hashed == len(raw_header(path)) + (end - start)
    with pytest.raises(DigestMismatchError, match=r"layer\.0\.weight"):
        v.check_tensor("layer.0.weight", memoryview(b"\0" + data[start + 1 : end]))
    with pytest.raises(NotSignedError, match="not in the signed manifest"):
        v.check_tensor("layer.9.weight", memoryview(data[start:end]))


def test_header_mismatch_raises(signed: Path, p256: Any) -> None:
    path = signed / SHARD
    v = load_verifier(p256.public, path)
    raw = bytearray(raw_header(path))
    raw[20] ^= 1
    with pytest.raises(DigestMismatchError, match="header differs"):
        v.check_header(bytes(raw))


def test_check_tensor_before_header_fails_closed(signed: Path, p256: Any) -> None:
    v = load_verifier(p256.public, signed / SHARD)
    with pytest.raises(VerificationError, match="check_header"):
        v.check_tensor("embed", memoryview(b""))


def test_verify_argument_forms(signed: Path, p256: Any, chain: Any) -> None:
    path = signed / SHARD
    for form in (p256.public, str(p256.public), p256.public.read_bytes(),
                 load_public_key(p256.public), TrustPolicy(key=p256.public)):
        load_verifier(form, path).check_header(raw_header(path))
    with pytest.raises(KeyLoadError):
        load_verifier(42, path)


def test_wrong_key_fails_at_open(signed: Path, keys: Callable[[str], Any]) -> None:
    path = signed / SHARD
    with pytest.raises(SignatureError):
        load_verifier(keys("other-ecdsa-p256").public, path).check_header(raw_header(path))


def test_unsigned_file_fails(model: Path, p256: Any) -> None:
    with pytest.raises(NotSignedError):
        load_verifier(p256.public, model / SHARD)


def test_file_not_in_manifest_fails(signed: Path, p256: Any) -> None:
    import shutil

    extra = signed / "extra.safetensors"
    shutil.copy(signed / SHARD, extra)
    with pytest.raises(NotSignedError, match="not a file the signature covers"):
        load_verifier(p256.public, extra).check_header(raw_header(extra))


# ------------------------------------------------------------------ through safe_open / load_file


def test_tampered_tensor_raises_only_on_access(
    signed: Path, p256: Any, hashed: list[int]
) -> None:
    path = signed / SHARD
    flip_tensor(path, "layer.1.weight")
    with tensorfile.safe_open(path, "np", verify=p256.public) as f:
        good = f.get_tensor("layer.0.weight")
        assert good.shape == (8, 16)
        with pytest.raises(DigestMismatchError, match=r"layer\.1\.weight"):
            f.get_tensor("layer.1.weight")
        assert f.get_tensor("embed").dtype == np.int64
    ref = tensorfile.numpy.load_file(path)
    assert np.array_equal(good, ref["layer.0.weight"])


def test_only_accessed_tensor_is_hashed(signed: Path, p256: Any, hashed: list[int]) -> None:
    path = signed / SHARD
    with tensorfile.safe_open(path, "np", verify=p256.public) as f:
        assert hashed == [len(raw_header(path))]
        f.get_tensor("layer.2.weight")
        f.get_tensor("layer.2.weight")  # second read: not hashed again
    start, end = tensor_span(path, "layer.2.weight")
    assert hashed == [len(raw_header(path)), end - start]
    assert sum(hashed) < path.stat().st_size - (end - start)


def test_tampered_header_fails_at_open(signed: Path, p256: Any) -> None:
    path = signed / SHARD
    data = path.read_bytes().replace(b'"seed":"0"', b'"seed":"9"')
    path.write_bytes(data)
    with pytest.raises(DigestMismatchError, match="header differs"):
        tensorfile.safe_open(path, "np", verify=p256.public)


def test_eager_checks_every_tensor_at_open(signed: Path, p256: Any) -> None:
    path = signed / SHARD
    flip_tensor(path, "embed")
    policy = TrustPolicy(key=p256.public, eager=True)
    with pytest.raises(DigestMismatchError, match="embed"):
        tensorfile.safe_open(path, "np", verify=policy)
    with pytest.raises(DigestMismatchError, match="embed"):
        tensorfile.load_file(path, verify=p256.public)


def test_load_file_with_verify(signed: Path, p256: Any) -> None:
    path = signed / "model-00002-of-00002.safetensors"
    out = tensorfile.load_file(path, verify=p256.public)
    ref = tensorfile.load_file(path)
    assert out.keys() == ref.keys()
    assert all(np.array_equal(out[k], ref[k]) for k in out)


def test_single_file_model(single: Path, p256: Any) -> None:
    sign(single, p256.private)
    assert tensorfile.load_file(single, verify=p256.public).keys() == {
        "layer.0.weight", "layer.1.weight", "layer.2.weight", "embed", "empty"}
    flip_tensor(single, "layer.0.weight")
    with tensorfile.safe_open(single, "np", verify=p256.public) as f:
        f.get_tensor("embed")
        with pytest.raises(DigestMismatchError):
            f.get_tensor("layer.0.weight")


def test_file_in_subfolder_finds_parent_signature(tmp_path: Path, p256: Any) -> None:
    from tensorfile.numpy import save_file

    m = tmp_path / "m"
    (m / "sub").mkdir(parents=True)
    save_file({"x": np.arange(4, dtype=np.int32)}, m / "sub" / "w.safetensors")
    (m / "config.json").write_text("{}")
    sign(m, p256.private)
    with tensorfile.safe_open(m / "sub" / "w.safetensors", "np", verify=p256.public) as f:
        assert f.get_tensor("x").tolist() == [0, 1, 2, 3]


def test_explicit_signature_and_root(model: Path, p256: Any, tmp_path: Path) -> None:
    sig = sign(model, p256.private, tmp_path / "detached.sig")
    policy = TrustPolicy(key=p256.public, signature=sig, model_root=model)
    assert tensorfile.load_file(model / SHARD, verify=policy)


def test_certificate_trust_on_load(model: Path, chain: Any) -> None:
    sign(model, chain.key, certificate_chain=chain.chain)
    assert tensorfile.load_file(model / SHARD, verify=str(chain.root))
    assert tensorfile.load_file(model / SHARD, verify=TrustPolicy(cert_roots=chain.root))


def test_model_signing_signature_is_checked_whole_at_open(
    model: Path, p256: Any, tmp_path: Path
) -> None:
    """No per-tensor digests (model-signing wrote it): the whole file is hashed at open,
    tensor digests are derived in the same pass, and reads are still checked."""
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.signing.Config().use_elliptic_key_signer(private_key=p256.private).sign(
        model, tmp_path / "ms.sig")
    policy = TrustPolicy(key=p256.public, signature=tmp_path / "ms.sig", model_root=model)
    path = model / SHARD
    v = load_verifier(policy, path)
    v.check_header(raw_header(path))
    assert v.bytes_hashed >= path.stat().st_size
    start, end = tensor_span(path, "embed")
    v.check_tensor("embed", memoryview(path.read_bytes()[start:end]))
    with pytest.raises(DigestMismatchError, match="embed"):
        v.check_tensor("embed", memoryview(bytes(end - start)))
    assert tensorfile.load_file(path, verify=policy)
    flip_tensor(path, "embed")
    with pytest.raises(DigestMismatchError, match="file differs"):
        tensorfile.safe_open(path, "np", verify=policy)


def test_tensor_changed_after_open_is_caught(signed: Path, p256: Any) -> None:
    """The bytes handed out are the bytes checked: a change after open fails on first read."""
    path = signed / SHARD
    with tensorfile.safe_open(path, "np", verify=p256.public) as f:
        flip_tensor(path, "layer.0.weight")
        with pytest.raises(DigestMismatchError, match=r"layer\.0\.weight"):
            f.get_tensor("layer.0.weight")


def test_one_signature_is_verified_once_for_every_shard(
    signed: Path, p256: Any, chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the shards of one model checks the signature and parses the
    statement once (key trust); a re-signed or tampered signature file is
    verified afresh, and certificate trust (time-dependent) every time."""
    calls: list[Path] = []
    real = onload.verify_signature_file

    def counting(data: bytes, where: Any, trust: Any) -> Any:
        calls.append(signed)
        return real(data, where, trust)

    monkeypatch.setattr(onload, "verify_signature_file", counting)
    monkeypatch.setattr(onload, "_VERIFIED", type(onload._VERIFIED)())
    shards = sorted(signed.glob("*.safetensors"))
    for _ in range(3):
        for shard in shards:
            assert tensorfile.load_file(shard, verify=p256.public)
    assert len(calls) == 1
    sign(signed, p256.private, overwrite=True)  # new bytes (ECDSA signatures are randomized)
    assert tensorfile.load_file(shards[0], verify=p256.public)
    assert len(calls) == 2
    sig = signed / "model.sig"
    doc = json.loads(sig.read_bytes())
    good = doc["dsseEnvelope"]["signatures"][0]["sig"]
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        bytes(b ^ 1 for b in base64.b64decode(good))).decode()
    sig.write_text(json.dumps(doc))
    with pytest.raises(SignatureError):
        tensorfile.load_file(shards[0], verify=p256.public)
    assert len(calls) == 3
    sign(signed, chain.key, certificate_chain=chain.chain, overwrite=True)
    before = len(calls)
    for shard in shards:
        assert tensorfile.load_file(shard, verify=chain.root)
    assert len(calls) == before + len(shards)


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_whole_file_verified_load_hashes_each_byte_once(
    signed: Path, p256: Any, framework: str
) -> None:
    """All tensors read at once go into one allocation, each hashed as it is
    copied in: every byte hashed once, the values those of a plain load."""
    if framework == "pt":
        pytest.importorskip("torch")
    path = signed / SHARD
    plain = tensorfile.load_file(path)
    with tensorfile.safe_open(path, framework, verify=p256.public) as f:
        got = f.tensors()
        assert f._verifier.bytes_hashed == path.stat().st_size
        # a second read hands out the same verified bytes, hashing nothing more
        f.get_tensor("embed")
        assert f._verifier.bytes_hashed == path.stat().st_size
    assert list(got) == list(plain)
    for k, v in plain.items():
        np.testing.assert_array_equal(np.asarray(got[k]), v)
    flip_tensor(path, "layer.2.weight")
    with pytest.raises(DigestMismatchError, match=r"layer\.2\.weight"):
        tensorfile.load_file(path, framework, verify=p256.public)


def test_moved_names_warn_where_they_went() -> None:
    """Names the docs gave under tensorfile.integrity still resolve, with a warning."""
    import tensorfile.integrity as integrity
    from tensorfile.integrity import onload

    with pytest.warns(DeprecationWarning, match=r"tensorfile\.integrity\.onload"):
        assert integrity.LoadVerifier is onload.LoadVerifier
    with pytest.raises(AttributeError):
        integrity.no_such_name  # noqa: B018


def test_safe_open_class_takes_only_a_verifier(tmp_path: Path) -> None:
    """The reader below the public layer knows no keys: a key handed to the class
    itself is refused with a pointer to safe_open, never silently unverified."""
    from tensorfile import SafeOpen

    path = tmp_path / "m.safetensors"
    tensorfile.save_file({"a": np.zeros(3, np.float32)}, path)
    with pytest.raises(TypeError, match=r"tensorfile\.safe_open"):
        SafeOpen(path, verify=b"-----BEGIN PUBLIC KEY-----")  # type: ignore[arg-type]
