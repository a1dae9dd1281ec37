"""Fixtures for the integrity tests: small models, keys, certificate chains."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tensorfile.integrity import generate_key
from tensorfile.numpy import save_file

NOW = datetime.datetime.now(datetime.timezone.utc)


def _tensors(seed: int, n: int = 3) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {
        f"layer.{i}.weight": rng.standard_normal((8, 16)).astype(np.float32) for i in range(n)
    }
    out["embed"] = rng.integers(0, 100, size=(32,), dtype=np.int64)
    out["empty"] = np.zeros((0, 4), dtype=np.float16)
    return out


def build_model(folder: Path, seed: int = 0) -> Path:
    """A small model folder: two safetensors shards, config, tokenizer, a sub-folder."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(seed), folder / "model-00001-of-00002.safetensors",
              metadata={"format": "np", "seed": str(seed)})
    save_file(_tensors(seed + 100, 2), folder / "model-00002-of-00002.safetensors")
    (folder / "config.json").write_text('{"hidden_size": 16, "layers": 5}\n')
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    return folder


@pytest.fixture
def make_model() -> Callable[[Path, int], Path]:
    return build_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "model")


@pytest.fixture
def single(tmp_path: Path) -> Path:
    """A single-file model alone in its folder."""
    d = tmp_path / "single"
    d.mkdir()
    save_file(_tensors(7), d / "weights.safetensors", metadata={"k": "v"})
    return d / "weights.safetensors"


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def keys(keydir: Path) -> Callable[[str], Keys]:
    """``keys("ecdsa-p256")`` etc.: one key pair per type per session (plus ``"other-..."``)."""
    made: dict[str, Keys] = {}

    def get(name: str) -> Keys:
        if name not in made:
            kind = name.removeprefix("other-")
            kp = generate_key(keydir / f"{name}.pem", key_type=kind)
            made[name] = Keys(kp.private_key, kp.public_key)
        return made[name]

    return get


@pytest.fixture
def p256(keys: Callable[[str], Keys]) -> Keys:
    return keys("ecdsa-p256")


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Chain:
    root: Path  # PEM of the trusted root
    leaf: Path  # PEM of the signing certificate
    intermediates: Path  # PEM of the intermediates (leaf not included)
    chain: Path  # leaf then intermediates, one PEM file
    key: Path  # leaf private key PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool,
    not_before: datetime.datetime, not_after: datetime.datetime,
    key_usage: bool | None = True, code_signing: bool = False, email: str | None = None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage is not None:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=key_usage and not ca, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if code_signing:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                            critical=False)
    if email:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="session")
def make_chain(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Chain]:
    """Root CA -> intermediate CA -> leaf (EC keys), written as PEM files."""
    counter = iter(range(10_000))

    def make(
        *, leaf_curve: ec.EllipticCurve | None = None,
        leaf_not_before: datetime.datetime | None = None,
        leaf_not_after: datetime.datetime | None = None,
        leaf_key_usage: bool | None = True, leaf_ca: bool = False,
        intermediate_ca: bool = True,
    ) -> Chain:
        d = tmp_path_factory.mktemp(f"chain{next(counter)}")
        root_key = ec.generate_private_key(ec.SECP384R1())
        inter_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key = ec.generate_private_key(leaf_curve or ec.SECP256R1())
        day = datetime.timedelta(days=1)
        root = _cert("Test Root", root_key, "Test Root", root_key, ca=True,
                     not_before=NOW - 10 * day, not_after=NOW + 3650 * day)
        inter = _cert("Test Intermediate", inter_key, "Test Root", root_key, ca=intermediate_ca,
                      not_before=NOW - 10 * day, not_after=NOW + 365 * day)
        leaf = _cert("model-signer", leaf_key, "Test Intermediate", inter_key, ca=leaf_ca,
                     not_before=leaf_not_before or NOW - day,
                     not_after=leaf_not_after or NOW + 30 * day,
                     key_usage=leaf_key_usage, code_signing=True, email="signer@example.com")
        paths = Chain(d / "root.pem", d / "leaf.pem", d / "inter.pem", d / "chain.pem",
                      d / "leaf.key")
        paths.root.write_bytes(_pem(root))
        paths.leaf.write_bytes(_pem(leaf))
        paths.intermediates.write_bytes(_pem(inter))
        paths.chain.write_bytes(_pem(leaf, inter))
        paths.key.write_bytes(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return paths

    return make


@pytest.fixture(scope="session")
def chain(make_chain: Callable[..., Chain]) -> Chain:
    return make_chain()
