"""The AWS KMS signer against moto's KMS in server mode on loopback.

The test starts moto's HTTP server on 127.0.0.1 (a free port), creates an
``ECC_NIST_P256`` signing key in it, and signs through boto3 over HTTP as
against AWS. model-signing then verifies the bundle with the key's public
key, as ``GetPublicKey`` returns it.

moto 5.2.5 does not implement ``MessageType=DIGEST`` (its ``verify``
docstring says so; its ``sign`` hashes the digest again, which is not what
KMS does). :func:`kms_digest_semantics` makes moto's server sign a digest as
AWS documents (ECDSA over the given digest, of the algorithm's size), so the
signer's real request is answered as KMS would answer it; everything else is
moto's own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, utils  # noqa: E402
from moto.kms.responses import KmsResponse  # noqa: E402

from tensorfile.errors import DigestMismatchError, KeyLoadError  # noqa: E402
from tensorfile.integrity import sign, verify  # noqa: E402
from tensorfile.integrity.aws_kms import AwsKmsSigner  # noqa: E402
from tensorfile.integrity.keys import public_pem  # noqa: E402
from tensorfile.integrity.signers import Signer  # noqa: E402

#: moto's own handler, before any test patches it.
MOTO_SIGN = KmsResponse.sign
_HASHES = {"ECDSA_SHA_256": hashes.SHA256(), "ECDSA_SHA_384": hashes.SHA384(),
           "ECDSA_SHA_512": hashes.SHA512()}


def kms_digest_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.kms.exceptions import ValidationException

    def sign(self: Any) -> str:
        if self._get_param("MessageType") != "DIGEST":
            return str(MOTO_SIGN(self))
        digest = self._get_param("Message")
        algorithm = self._get_param("SigningAlgorithm")
        key = self.kms_backend.describe_key(self._get_param("KeyId"))
        h = _HASHES[algorithm]
        if algorithm not in key.signing_algorithms or len(digest) != h.digest_size:
            raise ValidationException(f"digest of {len(digest)} bytes for {algorithm}")
        signature = key.private_key.private_key.sign(digest, ec.ECDSA(utils.Prehashed(h)))
        return json.dumps({"KeyId": key.arn, "SigningAlgorithm": algorithm,
                           "Signature": base64.b64encode(signature).decode()})

    monkeypatch.setattr(KmsResponse, "sign", sign)


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's KMS server on loopback; yields its endpoint URL. boto3 finds it
    (and dummy credentials) through the environment, as it would AWS."""
    kms_digest_semantics(monkeypatch)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield endpoint
    finally:
        server.stop()


def create_key(spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY") -> str:
    client = boto3.client("kms")
    key: str = client.create_key(KeyUsage=usage, KeySpec=spec)["KeyMetadata"]["Arn"]
    return key


def test_kms_signs_model_signing_verifies(kms: str, model: Path, tmp_path: Path) -> None:
    signer = AwsKmsSigner(create_key())
    assert isinstance(signer, Signer)
    pub = tmp_path / "kms.pub.pem"
    pub.write_bytes(public_pem(signer.public_key()))
    sig = sign(model, signer)
    r = verify(model, pub)
    assert r.signer.kind == "key" and r.signer.algorithm == "ecdsa-p256-sha256"
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)
    (model / "config.json").write_text("{}")
    with pytest.raises(DigestMismatchError):
        verify(model, pub)


def test_kms_alias_and_p384(kms: str, single: Path, tmp_path: Path) -> None:
    client = boto3.client("kms")
    arn = create_key("ECC_NIST_P384")
    client.create_alias(AliasName="alias/model-signing", TargetKeyId=arn)
    signer = AwsKmsSigner("alias/model-signing")
    pub = tmp_path / "p384.pem"
    pub.write_bytes(public_pem(signer.public_key()))
    sign(single, signer)
    assert verify(single, pub).signer.algorithm == "ecdsa-p384-sha384"


def test_kms_refuses_keys_that_cannot_sign_models(kms: str) -> None:
    with pytest.raises(KeyLoadError, match="SIGN_VERIFY key of spec"):
        AwsKmsSigner(create_key("RSA_2048"))
    with pytest.raises(KeyLoadError, match="ENCRYPT_DECRYPT"):
        AwsKmsSigner(create_key("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"))
    with pytest.raises(KeyLoadError, match="AWS KMS key alias/none"):
        AwsKmsSigner("alias/none")


def test_a_wrong_signature_from_the_service_is_caught_at_signing(
    kms: str, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a remote signer returns is verified before the bundle is written:
    here moto's unpatched DIGEST handling (it hashes the digest again)."""
    monkeypatch.setattr(KmsResponse, "sign", MOTO_SIGN)
    with pytest.raises(KeyLoadError, match="does not verify"):
        sign(model, AwsKmsSigner(create_key()))
    assert not (model / "model.sig").exists()


def test_cli_signs_with_awskms_uri(kms: str, model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    signer = AwsKmsSigner(create_key())
    pub = tmp_path / "kms.pub.pem"
    pub.write_bytes(public_pem(signer.public_key()))
    r = CliRunner().invoke(app, ["sign", str(model), "--signer", f"awskms:///{signer.key_arn}"])
    assert r.exit_code == 0, r.stdout
    assert verify(model, pub).signer.kind == "key"


def test_kms_uri_forms() -> None:
    with pytest.raises(KeyLoadError, match="awskms:///KEY"):
        AwsKmsSigner.from_uri("awskms://no-key")
