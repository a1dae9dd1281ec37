"""Hash manifests, OMS v1.0 signatures and verification (spec/SIGNING.md).

Layers, bottom up: :mod:`.hashing` (files and tensors to digests),
:mod:`.manifest` (digests to an in-toto statement), :mod:`.bundle` (the
statement in a DSSE envelope inside a Sigstore bundle), :mod:`.keys` and
:mod:`.certs` (who may sign), :mod:`.sign` and :mod:`.verify`, :mod:`.pins`
(verification against trusted digests, without a key), and :mod:`.onload`
for ``safe_open(path, verify=...)``.

Signatures are interoperable with OpenSSF model-signing 1.1.1 for ECDSA
P-256/P-384/P-521 keys and certificates; tensorfile adds header and
per-tensor digests (BLAKE3 by default, or SHA-256) in a predicate field that
model-signing ignores.
"""

from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME, Bundle, read_bundle
from tensorfile.integrity.certs import CertificateIdentity, CertificateTrust
from tensorfile.integrity.hashing import (
    ALGORITHMS,
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_TENSOR_ALGORITHM,
    FileDigest,
    ProgressCallback,
    SafetensorsDigests,
)
from tensorfile.integrity.keyless import SigstoreTrust
from tensorfile.integrity.keys import (
    KEY_TYPES,
    KeyPair,
    generate_key,
    key_hint,
    load_private_key,
    load_public_key,
)
from tensorfile.integrity.manifest import Manifest, Serialization, hash_model
from tensorfile.integrity.onload import LoadVerifier, load_verifier
from tensorfile.integrity.pins import Pins, parse_pins, verify_pins
from tensorfile.integrity.sign import default_signature_path, sign, sign_manifest
from tensorfile.integrity.verify import (
    SignerIdentity,
    TrustPolicy,
    VerificationReport,
    verify,
    verify_bundle,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_FILE_ALGORITHM",
    "DEFAULT_SIGNATURE_NAME",
    "DEFAULT_TENSOR_ALGORITHM",
    "KEY_TYPES",
    "Bundle",
    "CertificateIdentity",
    "CertificateTrust",
    "FileDigest",
    "KeyPair",
    "LoadVerifier",
    "Manifest",
    "Pins",
    "ProgressCallback",
    "SafetensorsDigests",
    "Serialization",
    "SignerIdentity",
    "SigstoreTrust",
    "TrustPolicy",
    "VerificationReport",
    "default_signature_path",
    "generate_key",
    "hash_model",
    "key_hint",
    "load_private_key",
    "load_public_key",
    "load_verifier",
    "parse_pins",
    "read_bundle",
    "sign",
    "sign_manifest",
    "verify",
    "verify_bundle",
    "verify_pins",
]
