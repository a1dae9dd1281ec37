"""Keys: generation, file modes, passwords, supported and refused key types."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tensorfile.errors import KeyLoadError, OutputExistsError, SignatureError
from tensorfile.integrity import (
    generate_key,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from tensorfile.integrity.keys import key_algorithm, key_hint, sign_bytes, verify_bytes


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("ecdsa-p256", "ecdsa-p256-sha256"), ("ecdsa-p384", "ecdsa-p384-sha384"),
     ("ecdsa-p521", "ecdsa-p521-sha512"), ("ed25519", "ed25519")],
)
def test_generate_sign_verify(tmp_path: Path, kind: str, algorithm: str) -> None:
    kp = generate_key(tmp_path / "k.pem", key_type=kind)
    assert kp.public_key == tmp_path / "k.pem.pub"
    assert stat.S_IMODE(kp.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(kp.public_key.stat().st_mode) == 0o644
    assert kp.algorithm == algorithm
    assert kp.hint == hashlib.sha256(kp.public_key.read_bytes()).hexdigest()  # sha256sum pub.pem
    priv, pub = load_private_key(kp.private_key), load_public_key(kp.public_key)
    assert key_algorithm(pub) == algorithm and key_hint(pub) == kp.hint
    sig = sign_bytes(priv, b"payload")
    verify_bytes(pub, sig, b"payload")
    with pytest.raises(SignatureError):
        verify_bytes(pub, sig, b"payloaD")


def test_existing_key_is_not_overwritten(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.pem")
    before = (tmp_path / "k.pem").read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):  # not a key problem
        generate_key(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_bytes() == before
    generate_key(tmp_path / "k.pem", overwrite=True)
    assert (tmp_path / "k.pem").read_bytes() != before


def test_password_protected_key(tmp_path: Path, model: Path) -> None:
    kp = generate_key(tmp_path / "k.pem", tmp_path / "pub.pem", password="s3cret")
    assert b"ENCRYPTED" in kp.private_key.read_bytes()
    with pytest.raises(KeyLoadError, match="password"):
        load_private_key(kp.private_key)
    with pytest.raises(KeyLoadError, match="password"):
        load_private_key(kp.private_key, "wrong")
    with pytest.raises(KeyLoadError, match="password"):
        sign(model, kp.private_key, password="wrong")
    assert not (model / "model.sig").exists()  # nothing written when the key fails
    sign(model, kp.private_key, password="s3cret")
    assert verify(model, kp.public_key).verified


def test_unsupported_keys_are_refused(tmp_path: Path) -> None:
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(KeyLoadError, match="curve"):
        load_private_key(k1)
    pem = k1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyLoadError, match="curve"):
        load_public_key(pem)
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rpem = r.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())
    with pytest.raises(KeyLoadError, match="not supported"):
        load_private_key(rpem)
    with pytest.raises(KeyLoadError, match="unknown key type"):
        generate_key(tmp_path / "x.pem", key_type="rsa")


def test_certificate_given_as_key_says_so(model: Path, chain: Any) -> None:
    with pytest.raises(KeyLoadError, match="certificate; pass it as the trusted root"):
        verify(model, chain.root)


def test_garbage_and_swapped_key_files(tmp_path: Path) -> None:
    kp = generate_key(tmp_path / "k.pem")
    with pytest.raises(KeyLoadError, match="private key; pass the public key"):
        load_public_key(kp.private_key)
    with pytest.raises(KeyLoadError, match="a public key: signing needs the private key"):
        load_private_key(kp.public_key)
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyLoadError):
        load_public_key(tmp_path / "junk.pem")
    with pytest.raises(KeyLoadError, match="cannot read"):
        load_public_key(tmp_path / "missing.pem")
