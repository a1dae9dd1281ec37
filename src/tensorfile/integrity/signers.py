"""Signers: who makes the signature, behind one protocol.

A :class:`Signer` signs the bytes it is given and says what verifies them:
its public key, and for certificate-based signing the certificate chain.
:func:`~tensorfile.integrity.sign` and ``tensorfile sign`` take any of them:

* :class:`KeySigner`: a private key in memory (a PEM file, what ``--key`` loads);
* :class:`CertificateSigner`: any signer plus the certificate chain of its key
  (what ``--certificate`` adds);
* :class:`~tensorfile.integrity.pkcs11_signer.Pkcs11Signer`: a key in a PKCS#11
  token or HSM (``--signer pkcs11:...``);
* :class:`~tensorfile.integrity.aws_kms.AwsKmsSigner`: a key in AWS KMS
  (``--signer awskms://...``).

**Plugging in another KMS or HSM.** Subclass :class:`DigestSigner` and
implement two methods: :meth:`~DigestSigner.public_key` (the key, as a
``cryptography`` public key) and :meth:`~DigestSigner.sign_digest` (sign a
digest already computed with :func:`~tensorfile.integrity.keys.signature_hash`
and return the DER ECDSA signature). Or implement :class:`Signer` directly for
a service that hashes itself. Pass an instance as ``sign(model, signer)``.
Whatever the signer returns is verified with its public key before the
bundle is written, so a signer that signs with another key, or returns a
malformed signature, fails at signing time rather than at every verifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tensorfile.errors import KeyLoadError
from tensorfile.integrity.certs import as_list, load_certificates
from tensorfile.integrity.keys import (
    PathOrPem,
    PrivateKey,
    PublicKey,
    load_private_key,
    public_pem,
    sign_bytes,
    signature_hash,
)


@runtime_checkable
class Signer(Protocol):
    """Signs bytes and says what verifies the signature."""

    def public_key(self) -> PublicKey:
        """The public key that verifies :meth:`sign`'s signatures."""
        ...

    def certificate_chain(self) -> Sequence[x509.Certificate]:
        """The certificates for :meth:`public_key`, leaf first; empty for a bare key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (the DSSE pre-authentication encoding): a DER ECDSA
        signature over its hash (:func:`~tensorfile.integrity.keys.signature_hash`),
        or an Ed25519 signature."""
        ...


class KeySigner:
    """A private key held in memory."""

    def __init__(self, key: PathOrPem | PrivateKey, password: str | bytes | None = None) -> None:
        self._key = load_private_key(key, password)

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def certificate_chain(self) -> Sequence[x509.Certificate]:
        return ()

    def sign(self, data: bytes) -> bytes:
        return sign_bytes(self._key, data)


class DigestSigner(ABC):
    """Base for keys held elsewhere (HSM, KMS) that sign a digest: the data is
    hashed here, so a large payload never travels to the device or service."""

    @abstractmethod
    def public_key(self) -> PublicKey:
        """The public key of the remote private key."""

    @abstractmethod
    def sign_digest(self, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """Sign ``digest`` (made with ``algorithm``); return a DER ECDSA signature."""

    def certificate_chain(self) -> Sequence[x509.Certificate]:
        return ()

    def sign(self, data: bytes) -> bytes:
        algorithm = signature_hash(self.public_key())
        h = hashes.Hash(algorithm)
        h.update(data)
        return self.sign_digest(h.finalize(), algorithm)


class CertificateSigner:
    """Any signer, with the certificate chain of its key (leaf first)."""

    def __init__(self, signer: Signer, chain: Any) -> None:
        certs = load_certificates(as_list(chain))
        if not certs:
            raise KeyLoadError("certificate chain is empty")
        if public_pem(signer.public_key()) != certs[0].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise KeyLoadError(
                "the first certificate of the chain does not hold the signing key's public key"
            )
        self._signer = signer
        self._chain = tuple(certs)

    def public_key(self) -> PublicKey:
        return self._signer.public_key()

    def certificate_chain(self) -> Sequence[x509.Certificate]:
        return self._chain

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)


def as_signer(
    key: PathOrPem | PrivateKey | Signer,
    password: str | bytes | None = None,
    certificate_chain: Any = None,
) -> Signer:
    """``key`` as a :class:`Signer`: a signer as it is, a private key (PEM
    path, PEM bytes or key object) as a :class:`KeySigner`; with
    ``certificate_chain``, wrapped in a :class:`CertificateSigner`."""
    signer: Signer = key if isinstance(key, Signer) else KeySigner(key, password)
    if certificate_chain is not None:
        signer = CertificateSigner(signer, certificate_chain)
    return signer
