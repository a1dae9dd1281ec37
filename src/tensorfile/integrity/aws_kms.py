"""Signing with an asymmetric key in AWS KMS (the key never leaves KMS).

The key must be a ``SIGN_VERIFY`` key of spec ``ECC_NIST_P256`` (signed
with ``ECDSA_SHA_256``; what model-signing's ECDSA P-256 keys verify),
``ECC_NIST_P384`` (``ECDSA_SHA_384``) or ``ECC_NIST_P521``
(``ECDSA_SHA_512``). The payload is hashed here and KMS signs the digest
(``MessageType=DIGEST``), so payloads over KMS's 4 KiB message limit sign
too; KMS returns a DER signature, as DSSE wants. KMS's ``GetPublicKey`` gives
the public key, which verifiers need: ``tensorfile verify --key`` with it
written as PEM (:func:`~tensorfile.integrity.keys.public_pem`).

Credentials, region and endpoint come from boto3's usual sources (the
environment, ``~/.aws``, an instance role); ``AWS_ENDPOINT_URL_KMS`` or
``AWS_ENDPOINT_URL`` points it at another endpoint (a VPC endpoint, a local
KMS). A key ARN names its own region. Needs ``boto3``
(``pip install 'tensorfile[kms]'``), imported only here.

Other clouds' KMS plug in the same way: a subclass of
:class:`~tensorfile.integrity.signers.DigestSigner` with ``public_key`` and
``sign_digest`` (see :mod:`tensorfile.integrity.signers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from tensorfile.errors import KeyLoadError
from tensorfile.integrity.keys import PublicKey, check_supported, key_algorithm
from tensorfile.integrity.signers import DigestSigner

#: KMS key spec -> the one signing algorithm tensorfile uses with it.
KEY_SPECS = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
}


def _region_of(key_id: str) -> str | None:
    """``arn:aws:kms:REGION:ACCOUNT:key/ID`` names its region."""
    parts = key_id.split(":")
    return parts[3] if key_id.startswith("arn:") and len(parts) > 5 and parts[3] else None


class AwsKmsSigner(DigestSigner):
    """The KMS key ``key_id`` (key ID, key ARN, alias name ``alias/...`` or alias ARN).

    ``client``: a boto3 KMS client to use as it is; otherwise one is made
    with ``region`` (default: the ARN's, else boto3's) and ``endpoint_url``.
    """

    def __init__(
        self, key_id: str, *, client: Any = None, region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if not key_id:
            raise KeyLoadError("AWS KMS: no key id")
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise KeyLoadError(
                "AWS KMS signing needs the boto3 package (pip install 'tensorfile[kms]')"
            ) from None
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        try:
            self._client = client or boto3.client(
                "kms", region_name=region or _region_of(key_id), endpoint_url=endpoint_url
            )
            info = self._client.get_public_key(KeyId=key_id)
        except self._errors as e:
            raise KeyLoadError(f"AWS KMS key {key_id}: {e}") from None
        # KeySpec; older responses (and moto) name it CustomerMasterKeySpec.
        spec = info.get("KeySpec") or info.get("CustomerMasterKeySpec")
        if info.get("KeyUsage") != "SIGN_VERIFY" or spec not in KEY_SPECS:
            raise KeyLoadError(
                f"AWS KMS key {key_id} is a {info.get('KeyUsage')} key of spec {spec}: signing "
                f"needs a SIGN_VERIFY key of spec {', '.join(KEY_SPECS)}"
            )
        self._algorithm = KEY_SPECS[spec]
        if self._algorithm not in info.get("SigningAlgorithms", [self._algorithm]):
            raise KeyLoadError(f"AWS KMS key {key_id} does not offer {self._algorithm}")
        try:
            self._public = check_supported(serialization.load_der_public_key(info["PublicKey"]))
        except (ValueError, KeyError, TypeError) as e:
            raise KeyLoadError(f"AWS KMS key {key_id}: unreadable public key: {e}") from None
        #: The key's ARN, as KMS resolved ``key_id`` (an alias names another key later).
        self.key_arn: str = str(info.get("KeyId") or key_id)

    @classmethod
    def from_uri(cls, uri: str) -> AwsKmsSigner:
        """``awskms:///KEY`` (boto3's endpoint) or ``awskms://HOST[:PORT]/KEY``
        (``https://HOST[:PORT]``), the form cosign and sigstore take; KEY is a key
        id, key ARN or alias."""
        prefix = "awskms://"
        if not uri.startswith(prefix) or "/" not in uri[len(prefix):]:
            raise KeyLoadError("an AWS KMS key is awskms:///KEY-ID, -ARN or alias/NAME")
        host, _, key = uri[len(prefix):].partition("/")
        return cls(key, endpoint_url=f"https://{host}" if host else None)

    def public_key(self) -> PublicKey:
        return self._public

    def certificate_chain(self) -> Sequence[Any]:
        return ()

    def sign_digest(self, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        try:
            got = self._client.sign(
                KeyId=self.key_arn, Message=digest, MessageType="DIGEST",
                SigningAlgorithm=self._algorithm,
            )
        except self._errors as e:
            raise KeyLoadError(f"AWS KMS key {self.key_arn}: signing failed: {e}") from None
        signature = got.get("Signature")
        if not isinstance(signature, bytes):
            raise KeyLoadError(f"AWS KMS key {self.key_arn}: no signature in the response")
        return signature

    def __repr__(self) -> str:
        return f"AwsKmsSigner({self.key_arn!r}, {key_algorithm(self._public)})"
