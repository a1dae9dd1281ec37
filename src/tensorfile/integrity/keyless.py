"""Sigstore keyless bundles (what ``model_signing sign`` writes by default), verified offline.

A keyless bundle carries a short-lived certificate from Fulcio (the signer's
identity, as their OpenID Connect provider vouched for it) and an entry in
the Rekor transparency log (which proves the signature existed while that
certificate was valid). Verification uses the ``sigstore`` package (the
reference Python client, also what model-signing uses) against a trusted
root the caller gives as a file, in Sigstore's ``trusted_root.json`` format;
nothing is fetched:

* the certificate chains to a Fulcio CA of the trusted root, at the time the
  log integrated the entry, and carries a valid SCT from one of its CT logs;
* the certificate's SAN is the expected identity and its OIDC issuer
  extension the expected issuer;
* the Rekor entry's inclusion proof leads to a checkpoint signed by one of
  the root's log keys, its signed entry timestamp verifies with that key, and
  the entry records this envelope's payload hash and signature;
* the DSSE signature verifies with the certificate's key.

Only then is the payload parsed as an OMS statement.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorfile._io.files import read_bounded
from tensorfile.errors import (
    BundleError,
    CertificateError,
    KeyLoadError,
    SignatureError,
    TrustedRootError,
    UnsupportedAlgorithmError,
)
from tensorfile.integrity._json import json_obj, loads_strict
from tensorfile.integrity.bundle import PAYLOAD_TYPE, load_bundle_document
from tensorfile.integrity.certs import CertificateIdentity, identity_of
from tensorfile.integrity.keys import check_supported
from tensorfile.integrity.manifest import Manifest

#: A trusted root is a few kilobytes; Sigstore's public one is about 10 KB.
MAX_TRUSTED_ROOT_BYTES = 4 << 20
TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
CLIENT_TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"


@dataclass(frozen=True)
class SigstoreTrust:
    """What a keyless (Sigstore) signature is checked against.

    ``trusted_root``: path to a ``trusted_root.json`` (Fulcio CAs, Rekor log
    keys, CT log keys), or to a model-signing ``--trust_config`` file holding
    one. ``identity``: the signer's identity as the certificate's SAN must
    name it (an e-mail address, or a URI such as a CI workflow).
    ``issuer``: the OpenID Connect issuer that must have vouched for it
    (``https://accounts.google.com``, ``https://token.actions.githubusercontent.com``).
    """

    trusted_root: str | os.PathLike[str]
    identity: str
    issuer: str

    def __post_init__(self) -> None:
        if not self.identity or not self.issuer:
            raise KeyLoadError("a Sigstore identity and OIDC issuer are both required")


@dataclass(frozen=True)
class KeylessResult:
    """A verified keyless signature: the statement's manifest and who signed."""

    manifest: Manifest
    certificate: CertificateIdentity
    #: What the transparency log and policy established (for the report).
    details: dict[str, Any]


def proto_field(doc: dict[str, Any], camel: str, snake: str, where: object) -> Any:
    """A field of a protobuf JSON message under either of its names: its
    ``lowerCamelCase`` JSON name or its original ``snake_case`` name (protobuf's
    JSON parsers accept both, and so do sigstore's and model-signing's). Both
    at once is ambiguous and refused, as protobuf refuses it."""
    if camel in doc and snake in doc:
        raise TrustedRootError(f"{where}: both {camel!r} and {snake!r} are given (one field, two names)")
    return doc.get(camel, doc.get(snake))


def _trusted_root_json(path: str | os.PathLike[str]) -> bytes:
    """The ``trusted_root.json`` bytes at ``path`` (unwrapped from a client trust config)."""
    data = read_bounded(path, MAX_TRUSTED_ROOT_BYTES, TrustedRootError, "trusted root")
    try:
        doc = json_obj(loads_strict(data, str(path)), "trusted root")
    except BundleError as e:
        raise TrustedRootError(f"{path}: {e}") from None
    kind = proto_field(doc, "mediaType", "media_type", path)
    if kind == CLIENT_TRUST_CONFIG_TYPE:
        inner = proto_field(doc, "trustedRoot", "trusted_root", path)
        if type(inner) is not dict:
            raise TrustedRootError(f"{path}: a Sigstore trust config without a trustedRoot object")
        kind = proto_field(inner, "mediaType", "media_type", f"{path}: trustedRoot")
        if kind != TRUSTED_ROOT_TYPE:
            raise TrustedRootError(
                f"{path}: its trustedRoot is not a Sigstore trusted root "
                f"(mediaType {kind!r:.80}, expected {TRUSTED_ROOT_TYPE!r})"
            )
        return json.dumps(inner).encode()
    if kind != TRUSTED_ROOT_TYPE:
        raise TrustedRootError(
            f"{path}: not a Sigstore trusted root or trust config (mediaType {kind!r:.80}, "
            f"expected {TRUSTED_ROOT_TYPE!r} or {CLIENT_TRUST_CONFIG_TYPE!r})"
        )
    return data


def verify_keyless(data: bytes, where: str | os.PathLike[str], trust: SigstoreTrust) -> KeylessResult:
    """Verify the Sigstore bundle ``data`` (read from ``where``) against ``trust``, offline.

    Raises :class:`CertificateError` (chain, SCT or identity), :class:`SignatureError`
    (log entry or DSSE signature), :class:`BundleError` (malformed bundle),
    :class:`TrustedRootError` (not a trusted root, checked before the optional
    sigstore package is needed) or :class:`UnsupportedAlgorithmError`; never
    returns unless everything verified.
    """
    # The same strict reading as every other bundle (duplicate keys refused),
    # before sigstore's own parser, which would keep the last of two; and the
    # trusted root read before sigstore is imported: a wrong file given as the
    # root (a key, a certificate) is reported as such whether or not the
    # optional package is installed (installing it would not help).
    try:
        load_bundle_document(data)
    except BundleError as e:
        raise type(e)(f"{where}: {e}") from None
    raw_root = _trusted_root_json(trust.trusted_root)
    try:
        # Imported here: an optional dependency, and heavy (pydantic models).
        from sigstore.errors import CertValidationError
        from sigstore.errors import Error as SigstoreError
        from sigstore.errors import VerificationError as SigstoreVerificationError
        from sigstore.models import Bundle, InvalidBundle, TrustedRoot
        from sigstore.verify import Verifier, policy
        from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootMessage
    except ImportError:
        raise UnsupportedAlgorithmError(
            f"{where}: verifying Sigstore keyless bundles needs the sigstore package "
            "(pip install 'tensorfile[sigstore]')"
        ) from None
    from cryptography import x509  # here: only keyless bundles need X.509 (start-up time)

    try:
        root = TrustedRoot(TrustedRootMessage.from_json(raw_root))
        verifier = Verifier(trusted_root=root)
    except (ValueError, SigstoreError) as e:
        raise TrustedRootError(f"{trust.trusted_root}: not a usable trusted root: {e}") from None
    try:
        bundle = Bundle.from_json(data)
    except (InvalidBundle, ValueError, TypeError, KeyError) as e:
        raise BundleError(f"{where}: not a Sigstore bundle with a log entry: {e}") from None
    try:
        # The identity is checked first on its own, so that a wrong identity is
        # reported as such; verify_dsse then checks it again with everything else.
        policy.Identity(identity=trust.identity, issuer=trust.issuer).verify(
            bundle.signing_certificate
        )
    except (SigstoreVerificationError, ValueError, x509.ExtensionNotFound) as e:
        raise CertificateError(
            f"{where}: signed by another identity than {trust.identity} from {trust.issuer}: {e}"
        ) from None
    identity = policy.Identity(identity=trust.identity, issuer=trust.issuer)
    try:
        payload_type, payload = verifier.verify_dsse(bundle, identity)
    except CertValidationError as e:
        raise CertificateError(
            f"{where}: the signing certificate does not chain to {trust.trusted_root}: {e}"
        ) from None
    except SigstoreError as e:
        raise SignatureError(f"{where}: Sigstore verification failed: {e}") from None
    except Exception as e:
        # Hostile bundle bytes reach a third-party parser: anything it raises is
        # a failed verification (never a pass, never a traceback for the user).
        raise SignatureError(
            f"{where}: Sigstore verification failed: {type(e).__name__}: {e}"
        ) from None
    if payload_type != PAYLOAD_TYPE:
        raise UnsupportedAlgorithmError(f"{where}: DSSE payload type {payload_type!r}")
    manifest = Manifest.from_statement(loads_strict(payload, "signed statement"))
    leaf = bundle.signing_certificate
    try:
        key = check_supported(leaf.public_key())
    except KeyLoadError as e:
        raise CertificateError(f"{where}: signing certificate: {e}") from None
    entry = bundle.log_entry._inner
    integrated = entry.integrated_time
    details = {
        "identity": trust.identity,
        "issuer": trust.issuer,
        "trusted_root": str(Path(trust.trusted_root)),
        "log_index": int(entry.log_index),
        "log_id": entry.log_id.key_id.hex(),
        "integrated_time": (
            datetime.datetime.fromtimestamp(int(integrated), datetime.timezone.utc).isoformat()
            if integrated else None
        ),
    }
    return KeylessResult(manifest, identity_of(leaf, key, _chain_length(leaf, root.get_fulcio_certs())),
                         details)


def _chain_length(leaf: Any, cas: list[Any]) -> int:
    """Certificates from ``leaf`` up to a self-issued Fulcio CA, by names (for the
    report only: sigstore verified the chain itself)."""
    by_subject = {c.subject: c for c in cas}
    n, cert = 1, leaf
    while cert.issuer in by_subject and cert.issuer != cert.subject and n < 10:
        cert = by_subject[cert.issuer]
        n += 1
    return n
