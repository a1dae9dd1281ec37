"""Interop both ways with OpenSSF model-signing 1.1.1 (its Python API and CLI)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ms = pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")  # model-signing imports pyOpenSSL without declaring it

from tensorfile.errors import DigestMismatchError, UnexpectedFileError  # noqa: E402
from tensorfile.integrity import hash_model, sign, verify  # noqa: E402


def ms_sign_key(model: Path, sig: Path, key: Path) -> None:
    ms.signing.Config().use_elliptic_key_signer(private_key=key).sign(model, sig)


def ms_verify_key(model: Path, sig: Path, pub: Path) -> None:
    ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


def payload(sig: Path) -> dict[str, Any]:
    doc = json.loads(sig.read_text())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"])
def test_model_signing_verifies_tensorfile(
    model: Path, keys: Callable[[str], Any], kind: str
) -> None:
    k = keys(kind)
    sig = sign(model, k.private)
    ms_verify_key(model, sig, k.public)  # raises on failure
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config\.json"):
        ms_verify_key(model, sig, k.public)


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384"])
def test_tensorfile_verifies_model_signing(
    model: Path, keys: Callable[[str], Any], kind: str, tmp_path: Path
) -> None:
    k = keys(kind)
    sig = tmp_path / "ms.sig"
    ms_sign_key(model, sig, k.private)
    r = verify(model, k.public, signature=sig)
    assert r.files_checked == 4 and r.tensors == 0  # no tensorfile extension
    assert r.by_file_digest == r.files and not r.tensor_digests_checked
    # deep has no tensor digests to add here: each byte is still hashed once.
    deep = verify(model, k.public, signature=sig, deep=True)
    assert deep.bytes_hashed == r.bytes_hashed == sum(
        (model / f).stat().st_size for f in r.files
    )
    assert not deep.tensor_digests_checked
    (model / "tokenizer" / "vocab.txt").write_text("z")
    with pytest.raises(DigestMismatchError, match=r"vocab\.txt"):
        verify(model, k.public, signature=sig)


def test_blake3_file_digests_both_ways(
    model: Path, single: Path, p256: Any, tmp_path: Path
) -> None:
    """model-signing's API can sign with BLAKE3 file digests (hash_type
    "blake3"); tensorfile verifies those bundles, and model-signing verifies
    tensorfile's made with file_algorithm="blake3": the same resources and
    root digest, for a folder and for a single file."""
    blake3_config = ms.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
    for target in (model, single):
        ms_sig = tmp_path / f"ms-{target.name}.sig"
        ms.signing.Config().use_elliptic_key_signer(private_key=p256.private).set_hashing_config(
            blake3_config
        ).sign(target, ms_sig)
        assert payload(ms_sig)["predicate"]["serialization"]["hash_type"] == "blake3"
        r = verify(target, p256.public, signature=ms_sig)
        assert r.serialization["hash_type"] == "blake3" and r.by_file_digest == r.files
        tf_sig = sign(target, p256.private, tmp_path / f"tf-{target.name}.sig", file_algorithm="blake3")
        ms_verify_key(target, tf_sig, p256.public)  # model-signing reads hash_type from the bundle
        assert payload(tf_sig)["predicate"]["resources"] == payload(ms_sig)["predicate"]["resources"]
        assert payload(tf_sig)["subject"][0]["digest"] == payload(ms_sig)["subject"][0]["digest"]
    (model / "config.json").write_text("{}")
    with pytest.raises(DigestMismatchError, match=r"'config\.json' \(blake3 differs\)"):
        verify(model, p256.public, signature=tmp_path / f"ms-{model.name}.sig")
    with pytest.raises(ValueError, match=r"config\.json"):
        ms_verify_key(model, tmp_path / f"tf-{model.name}.sig", p256.public)


def test_single_file_both_ways(single: Path, p256: Any, tmp_path: Path) -> None:
    sig = sign(single, p256.private, tmp_path / "tf.sig")
    ms_verify_key(single, sig, p256.public)
    ms_sig = tmp_path / "ms.sig"
    ms_sign_key(single, ms_sig, p256.private)
    assert verify(single, p256.public, signature=ms_sig).files == (".",)
    assert payload(ms_sig)["predicate"]["resources"] == payload(sig)["predicate"]["resources"]


def test_same_resources_and_root_digest(tmp_path: Path, p256: Any) -> None:
    """Tricky names sort the same way (path components, like PurePosixPath)."""
    m = tmp_path / "names"
    for rel in ["a-b", "a/b/c", "a/b-c/d", "a/b.c", "a.b", "A", "é.txt", "z", "a b", "a0"]:
        p = m / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    ms_sig = tmp_path / "ms.sig"
    ms_sign_key(m, ms_sig, p256.private)
    theirs = payload(ms_sig)
    ours = hash_model(m).to_statement()
    assert ours["predicate"]["resources"] == [
        {"name": r["name"], "algorithm": r["algorithm"], "digest": r["digest"]}
        for r in theirs["predicate"]["resources"]
    ]
    assert ours["subject"] == theirs["subject"]


def test_old_bundle_with_raw_public_key_is_accepted(
    model: Path, p256: Any, tmp_path: Path
) -> None:
    """Bundles from model-signing 1.0.x carried publicKey.rawBytes + keyDetails."""
    sig = tmp_path / "ms.sig"
    ms_sign_key(model, sig, p256.private)
    doc = json.loads(sig.read_text())
    doc["verificationMaterial"]["publicKey"] = {
        "rawBytes": base64.b64encode(p256.public.read_bytes()).decode(),
        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
    }
    sig.write_text(json.dumps(doc))
    assert verify(model, p256.public, signature=sig).verified


def test_certificates_both_ways(model: Path, chain: Any, tmp_path: Path) -> None:
    # tensorfile signs, model-signing verifies
    sig = sign(model, chain.key, tmp_path / "tf.sig", certificate_chain=chain.chain)
    ms.verifying.Config().use_certificate_verifier(certificate_chain=[chain.root]).verify(
        model, sig
    )
    # model-signing signs, tensorfile verifies
    ms_sig = tmp_path / "ms.sig"
    ms.signing.Config().use_certificate_signer(
        private_key=chain.key, signing_certificate=chain.leaf,
        certificate_chain=[chain.intermediates],
    ).sign(model, ms_sig)
    r = verify(model, cert_root=chain.root, signature=ms_sig)
    assert r.signer.certificate is not None
    assert r.signer.certificate.subject == "CN=model-signer"


def test_expired_certificate_model_signing_accepts_tensorfile_refuses(
    model: Path, make_chain: Callable[..., Any], tmp_path: Path
) -> None:
    import datetime

    from tensorfile.errors import CertificateError

    now = datetime.datetime.now(datetime.timezone.utc)
    c = make_chain(leaf_not_before=now - datetime.timedelta(days=5),
                   leaf_not_after=now - datetime.timedelta(days=1))
    ms_sig = tmp_path / "ms.sig"
    ms.signing.Config().use_certificate_signer(
        private_key=c.key, signing_certificate=c.leaf, certificate_chain=[c.intermediates],
    ).sign(model, ms_sig)
    ms.verifying.Config().use_certificate_verifier(certificate_chain=[c.root]).verify(
        model, ms_sig
    )
    with pytest.raises(CertificateError, match="expired"):
        verify(model, cert_root=c.root, signature=ms_sig)


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "model_signing"
    if not exe.exists():
        pytest.skip("model_signing CLI not installed next to this Python")
    return [str(exe)]


def test_cli_both_ways(model: Path, p256: Any) -> None:
    """`model_signing verify key` on a tensorfile signature (model.sig inside the folder),
    and tensorfile verifying what `model_signing sign key` wrote there."""
    cli = _cli()
    sign(model, p256.private)
    out = subprocess.run(
        [*cli, "verify", "key", str(model), "--signature", str(model / "model.sig"),
         "--public_key", str(p256.public)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    (model / "model.sig").unlink()
    out = subprocess.run(
        [*cli, "sign", "key", str(model), "--signature", str(model / "model.sig"),
         "--private_key", str(p256.private)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert verify(model, p256.public).files_checked == 4
    (model / "added.txt").write_text("x")
    with pytest.raises(UnexpectedFileError):
        verify(model, p256.public)
