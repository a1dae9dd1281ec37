"""Signing and verifying models: what a user calls (spec/SIGNING.md).

Keys: :func:`generate_key`, :func:`load_private_key`, :func:`load_public_key`.
Signing: :func:`sign` writes ``model.sig``, with a private key or any
:class:`Signer` (PKCS#11, AWS KMS, your own: :mod:`.signers`); :func:`resign`
signs again hashing only the files changed since (``sign --update``). Verifying: :func:`verify` checks a
model folder or file against a public key, root certificates
(:class:`CertificateTrust`, :class:`CertificateIdentity`), Sigstore
(:class:`SigstoreTrust`) or a :class:`TrustPolicy`, and returns a
:class:`VerificationReport` naming the :class:`SignerIdentity`. Pins
(:class:`Pins`, :func:`parse_pins`, :func:`verify_pins`) are trusted digests
without a signature. :func:`hash_model` computes, as :class:`HashOptions` say, the :class:`Manifest` a
signature covers. Every loading function's ``verify=`` takes the same trust
(``safe_open(path, verify=...)``).

Signatures are interoperable with OpenSSF model-signing 1.1.1 for ECDSA
P-256/P-384/P-521 keys and certificates; tensorfile adds header and
per-tensor digests (BLAKE3 by default, or SHA-256) in a predicate field that
model-signing ignores.

The layers underneath, bottom up, for those who build on them:
:mod:`.hashing` (files and tensors to digests), :mod:`.manifest` (digests to
an in-toto statement), :mod:`.bundle` (the statement in a DSSE envelope inside
a Sigstore bundle), :mod:`.keys`, :mod:`.certs` and :mod:`.keyless` (who may
sign), :mod:`.sign`, :mod:`.verify`, :mod:`.pins`, and :mod:`.onload`
(verify-on-load).
"""

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorfile.integrity.certs import CertificateIdentity, CertificateTrust
    from tensorfile.integrity.hashing import ALGORITHMS, HashOptions
    from tensorfile.integrity.keyless import SigstoreTrust
    from tensorfile.integrity.keys import KeyPair, generate_key, load_private_key, load_public_key
    from tensorfile.integrity.manifest import Manifest, hash_model
    from tensorfile.integrity.pins import Pins, parse_pins, verify_pins
    from tensorfile.integrity.resign import ResignReport, resign
    from tensorfile.integrity.sign import sign
    from tensorfile.integrity.signers import Signer
    from tensorfile.integrity.verify import (
        SignerIdentity,
        TrustPolicy,
        VerificationReport,
        verify,
    )

#: Where each public name lives. They are imported on first use (PEP 562):
#: ``tensorfile keygen`` needs the key module, not the hashing, certificate
#: (cryptography's X.509, slow to import) or verification machinery, and
#: every command's start-up is timed (bench/bench_startup.py).
_HOME = {
    "CertificateIdentity": "certs", "CertificateTrust": "certs",
    "ALGORITHMS": "hashing", "HashOptions": "hashing",
    "SigstoreTrust": "keyless",
    "KeyPair": "keys", "generate_key": "keys", "load_private_key": "keys",
    "load_public_key": "keys",
    "Manifest": "manifest", "hash_model": "manifest",
    "Pins": "pins", "parse_pins": "pins", "verify_pins": "pins",
    "ResignReport": "resign", "resign": "resign",
    "sign": "sign", "Signer": "signers",
    "SignerIdentity": "verify", "TrustPolicy": "verify", "VerificationReport": "verify",
    "verify": "verify",
}

__all__ = [
    "ALGORITHMS",
    "CertificateIdentity",
    "CertificateTrust",
    "HashOptions",
    "KeyPair",
    "Manifest",
    "Pins",
    "ResignReport",
    "Signer",
    "SignerIdentity",
    "SigstoreTrust",
    "TrustPolicy",
    "VerificationReport",
    "generate_key",
    "hash_model",
    "load_private_key",
    "load_public_key",
    "parse_pins",
    "resign",
    "sign",
    "verify",
    "verify_pins",
]


class _Package(types.ModuleType):
    """This package's module: ``sign`` and ``verify`` name the functions.

    The submodules of the same names set their module as the package's
    attribute when first imported; this keeps the function there, as the
    eager ``from .sign import sign`` of earlier versions did.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("sign", "verify") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


#: Names that left this package's surface but that the docs named here: they
#: still resolve, with a DeprecationWarning pointing at their module.
_MOVED = {"LoadVerifier": "tensorfile.integrity.onload"}


def __getattr__(name: str) -> Any:
    import importlib

    home = _HOME.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"tensorfile.integrity.{name} is deprecated; import it from {module}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
