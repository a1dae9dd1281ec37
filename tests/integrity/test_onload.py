"""Verify-on-load: LoadVerifier directly, and through safe_open / load_file."""

from __future__ import annotations

import base64
import json
import os
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
    TensorfileError,
    VerificationError,
)
from tensorfile.integrity import Pins, TrustPolicy, hash_model, sign
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


# ------------------------------------------------ every name, every trust, every change after open

NAMES = ("model.safetensors", "model.bin", "weights")
TRUSTS = ("key", "certificate", "keyless", "pins-sums", "pins-manifest", "model-signing")
CHANGES = ("in-place", "replaced", "truncated")
SIGNED_W = np.arange(4096, dtype=np.float32)
SIGNED_B = np.arange(100, dtype=np.int64)


def _trusted_file(tmp_path: Path, name: str, trust: str, p256: Any, chain: Any) -> tuple[Path, Any]:
    """A one-file model folder holding ``name``, and what ``verify=`` takes to trust it."""
    import hashlib
    import sys

    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / name
    tensorfile.save_file({"w": SIGNED_W, "b": SIGNED_B}, path)
    if trust == "key":
        sign(folder, p256.private)
        return path, p256.public
    if trust == "certificate":
        sign(folder, chain.key, certificate_chain=chain.chain)
        return path, str(chain.root)
    if trust == "keyless":
        # Verifying a keyless bundle needs the optional sigstore package (and
        # the local Sigstore below needs its rfc8785): not in the numpy-only core.
        pytest.importorskip("sigstore", reason="keyless verification needs tensorfile[sigstore]")
        sys.path.insert(0, str(Path(__file__).parent))
        from local_sigstore import write_keyless

        from tensorfile.integrity import SigstoreTrust

        sig, root, _ = write_keyless(folder, tmp_path / "sig", "s@example.com", "https://oidc.local")
        return path, TrustPolicy(sigstore=SigstoreTrust(root, "s@example.com", "https://oidc.local"),
                                 signature=sig, model_root=folder)
    if trust == "pins-sums":
        sums = tmp_path / "SUMS"
        sums.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
        return path, Pins.from_file(sums, model_root=folder)
    if trust == "pins-manifest":  # tensor digests too, where the name is .safetensors
        pins = tmp_path / "manifest.json"
        pins.write_text(json.dumps(hash_model(folder).to_dict()))
        return path, Pins.from_file(pins, model_root=folder)
    assert trust == "model-signing"
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.signing.Config().use_elliptic_key_signer(private_key=p256.private).sign(
        folder, tmp_path / "ms.sig")
    return path, TrustPolicy(key=p256.public, signature=tmp_path / "ms.sig", model_root=folder)


def _change(path: Path, how: str) -> None:
    """Change ``w``'s bytes after the reader opened the file: in place (same
    inode), by an atomic replace (a new inode), or by cutting the file short."""
    data = bytearray(path.read_bytes())
    start, end = tensor_span(path, "w")
    data[start:end] = np.full(len(SIGNED_W), 7.0, np.float32).tobytes()
    if how == "in-place":
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(data[start:end])
    elif how == "replaced":
        tmp = path.with_name(".swap")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)
    else:
        os.truncate(path, start + 8)


def _signed_or_refused(read: Callable[[], Any], want: np.ndarray[Any, Any]) -> None:
    """``read()`` returns the signed values or raises a TensorfileError; nothing else."""
    try:
        got = read()
    except TensorfileError:
        return
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("trust", TRUSTS)
@pytest.mark.parametrize("name", NAMES)
def test_bytes_handed_out_are_the_signed_ones_whatever_the_name(
    tmp_path: Path, p256: Any, chain: Any, name: str, trust: str, change: str
) -> None:
    """Opened with verify=, then changed: every read returns the signed bytes
    or raises a TensorfileError, never the changed bytes, for every file name
    (a file not named .safetensors was hashed through a second open and then
    read unchecked), every kind of trust and every kind of change."""
    path, verify = _trusted_file(tmp_path, name, trust, p256, chain)
    with tensorfile.safe_open(path, "np", verify=verify) as f:
        _change(path, change)
        _signed_or_refused(lambda: f.get_tensor("w"), SIGNED_W)
        _signed_or_refused(lambda: f.get_slice("w")[10:20], SIGNED_W[10:20])
        _signed_or_refused(lambda: f.get_tensor("b"), SIGNED_B)
    # Opened after the change: refused at open or on read, never the new bytes.
    _signed_or_refused(lambda: tensorfile.load_file(path, verify=verify)["w"], SIGNED_W)


@pytest.mark.parametrize("name", ["model.bin", "model.safetensors"])
def test_whole_file_check_derives_tensor_digests_through_the_given_descriptor(
    tmp_path: Path, p256: Any, name: str
) -> None:
    """check_header(raw, fd): a file signed only whole is hashed through the
    caller's descriptor, and reads are checked against digests derived from
    that pass, whatever the name (model.bin's reads went unchecked)."""
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    path, policy = _trusted_file(tmp_path, name, "model-signing", p256, None)
    v = load_verifier(policy, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.replace(path, path.with_name(".old"))  # the path now names nothing: fd is used
        v.check_header(raw_header(path.with_name(".old")), fd)
    finally:
        os.close(fd)
    assert ms is not None and v.bytes_hashed >= path.with_name(".old").stat().st_size
    start, end = tensor_span(path.with_name(".old"), "w")
    v.check_tensor("w", memoryview(SIGNED_W.tobytes()))
    with pytest.raises(DigestMismatchError, match="'w'"):
        v.check_tensor("w", memoryview(bytes(end - start)))


@pytest.mark.parametrize("trust", ["key", "pins-sums", "model-signing"])
@pytest.mark.parametrize("name", NAMES)
def test_file_swapped_between_open_and_check_is_refused(
    tmp_path: Path, p256: Any, name: str, trust: str
) -> None:
    """An atomic replacer puts the signed file back between the reader's open
    (of a changed file) and the signature check: the check must see the
    reader's bytes, not the file now at the path."""
    path, verify = _trusted_file(tmp_path, name, trust, p256, None)
    signed = path.read_bytes()
    _change(path, "replaced")
    inner = onload.as_verifier(verify)

    class PutBackFirst:
        def for_file(self, p: Path) -> Any:
            swap = p.with_name(".signed")
            swap.write_bytes(signed)
            os.replace(swap, p)
            return inner.for_file(p)

    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(path, verify=PutBackFirst())


@pytest.mark.parametrize("whole", [False, True], ids=["tensor-digests", "pinned-whole"])
def test_cold_verified_load_reads_around_the_cache(
    tmp_path: Path, p256: Any, evict: Callable[[Path], None], whole: bool
) -> None:
    """From a cold page cache, a verified load reads big tensors straight
    into private memory (they stay out of the cache: no second copy of the
    model there); every byte still hashed, the values those of a plain load,
    and a flipped byte in a cold tensor still caught. Both paths: per-tensor
    digests, and a file trusted only whole (a pinned sha256)."""
    import hashlib

    from tensorfile._io.direct import MIN_DIRECT, DirectReads

    rng = np.random.default_rng(3)
    path = tmp_path / "m.safetensors"
    tensors = {
        "a": rng.standard_normal(MIN_DIRECT // 2, dtype=np.float32),  # 2 MiB
        "odd": rng.integers(0, 255, 5, dtype=np.uint8),  # leaves "b" 1-byte aligned
        "b": rng.integers(0, 255, 3 * MIN_DIRECT, dtype=np.uint8),
        "c": rng.standard_normal(MIN_DIRECT, dtype=np.float64),  # 8 MiB
    }
    tensorfile.save_file(tensors, path)

    def trust() -> Any:
        if not whole:
            sign(path, p256.private)
            return p256.public
        sums = tmp_path / "SUMS"
        sums.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
        return Pins.from_file(sums, model_root=tmp_path)

    verify = trust()
    start, end = tensor_span(path, "c")
    fd = os.open(path, os.O_RDONLY)
    probe = DirectReads.open(fd, path.stat().st_size)
    try:
        if probe is None:
            pytest.skip("no O_DIRECT here")
        evict(path)
        got = tensorfile.load_file(path, verify=verify)
        for k, v in tensors.items():
            np.testing.assert_array_equal(got[k], v)
        assert not probe.mostly_cached(start, end - start)
    finally:
        if probe is not None:
            probe.close()
        os.close(fd)
    flip_tensor(path, "c")
    evict(path)
    with pytest.raises(VerificationError):
        tensorfile.load_file(path, verify=verify)
