"""The signature file: a Sigstore bundle v0.3 holding a DSSE envelope.

Parsing is strict because the file is untrusted until its signature checks:
a size limit, strict JSON (no duplicate keys, no NaN), every field's type
checked, base64 decoded strictly. Anything off raises :class:`BundleError`
(or :class:`UnsupportedAlgorithmError` for a well-formed bundle of a kind
tensorfile does not verify) with a message that says which field.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tensorfile._io.atomic import atomic_write
from tensorfile._io.files import read_small
from tensorfile.errors import (
    BundleError,
    NotSignedError,
    SignatureError,
    UnsupportedAlgorithmError,
)
from tensorfile.integrity._json import json_list, json_obj, json_str, loads_strict
from tensorfile.integrity.keys import PublicKey, verify_bytes

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: Older media types sigstore-python and model-signing wrote; same JSON shape.
_ACCEPTED_MEDIA_TYPES = frozenset(
    {
        BUNDLE_MEDIA_TYPE,
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
PAYLOAD_TYPE = "application/vnd.in-toto+json"
DEFAULT_SIGNATURE_NAME = "model.sig"
#: Largest signature file read (per-tensor digests of a huge model fit well within).
MAX_BUNDLE_SIZE = 256 << 20


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes that are actually signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def pae_v02(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The pre-authentication encoding model-signing 0.2.0 signed by mistake:
    ``DSSEV1`` (capital V) and the payload as Python's ``repr`` of bytes
    (``b'...'`` with escapes). Its verifiers still accept it (``pae_compat``);
    it is never written. ``repr`` is injective, and the capital ``V`` keeps it
    apart from every real PAE."""
    t = payload_type
    return f"DSSEV1 {len(t)} {t} {len(payload)} {payload!r}".encode()


def load_bundle_document(data: bytes, what: str = "signature bundle") -> dict[str, Any]:
    """The one reading of a signature file's bytes, for every kind of bundle
    (key, certificate, keyless): size limit, strict JSON (duplicate keys, NaN
    and invalid UTF-8 refused), a JSON object. Keyless bundles then go to
    sigstore's parser, which would keep the last of two duplicate keys, so
    refusing them here is what makes both readings the same."""
    if len(data) > MAX_BUNDLE_SIZE:
        raise BundleError(f"signature file is {len(data)} bytes, over {MAX_BUNDLE_SIZE}")
    return json_obj(loads_strict(data, what), "bundle")


@dataclass(frozen=True)
class Bundle:
    """The parts of a bundle that verification uses."""

    #: The statement's exact JSON bytes (the DSSE payload).
    payload: bytes
    #: The DSSE signature over ``pae(payload)``.
    signature: bytes
    #: ``publicKey.hint``: hex SHA-256 of the signer's public key PEM, if given.
    key_hint: str | None = None
    #: DER certificates, leaf first; empty for key-based bundles.
    certificates: tuple[bytes, ...] = ()
    payload_type: str = PAYLOAD_TYPE

    def to_json(self) -> bytes:
        material: dict[str, Any]
        if self.certificates:
            material = {
                "x509CertificateChain": {
                    "certificates": [{"rawBytes": _b64(c)} for c in self.certificates]
                }
            }
        else:
            material = {"publicKey": {"hint": self.key_hint or ""}}
        material["tlogEntries"] = []
        doc = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": _b64(self.payload),
                "payloadType": self.payload_type,
                "signatures": [{"sig": _b64(self.signature), "keyid": ""}],
            },
        }
        return json.dumps(doc, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Bundle:
        doc = load_bundle_document(data)
        media = doc.get("mediaType")
        if media not in _ACCEPTED_MEDIA_TYPES:
            raise UnsupportedAlgorithmError(
                f"bundle mediaType {media!r:.80} is not supported (expected {BUNDLE_MEDIA_TYPE})"
            )
        if "dsseEnvelope" not in doc:
            raise BundleError("bundle has no dsseEnvelope (message signatures are not supported)")
        env = json_obj(doc["dsseEnvelope"], "dsseEnvelope")
        payload_type = json_str(env.get("payloadType"), "dsseEnvelope payloadType")
        if payload_type != PAYLOAD_TYPE:
            raise UnsupportedAlgorithmError(
                f"DSSE payloadType {payload_type!r:.80} is not {PAYLOAD_TYPE!r}"
            )
        payload = _unb64(env.get("payload"), "dsseEnvelope payload")
        sigs = json_list(env.get("signatures"), "dsseEnvelope signatures")
        if not sigs:
            raise BundleError("bundle is unsigned: dsseEnvelope has no signatures")
        if len(sigs) != 1:
            raise BundleError(f"dsseEnvelope must have exactly one signature, has {len(sigs)}")
        sig = _unb64(json_obj(sigs[0], "signatures[0]").get("sig"), "signatures[0] sig")
        if not sig:
            raise BundleError("bundle is unsigned: signatures[0] sig is empty")

        material = json_obj(doc.get("verificationMaterial"), "verificationMaterial")
        json_list(material.get("tlogEntries", []), "verificationMaterial tlogEntries")
        hint: str | None = None
        certs: tuple[bytes, ...] = ()
        if "x509CertificateChain" in material:
            chain = json_obj(material["x509CertificateChain"], "x509CertificateChain")
            items = json_list(chain.get("certificates"), "x509CertificateChain certificates")
            if not items:
                raise BundleError("x509CertificateChain has no certificates")
            certs = tuple(
                _unb64(json_obj(c, f"certificates[{i}]").get("rawBytes"), f"certificates[{i}] rawBytes")
                for i, c in enumerate(items)
            )
        elif "certificate" in material:
            cert = json_obj(material["certificate"], "certificate")
            certs = (_unb64(cert.get("rawBytes"), "certificate rawBytes"),)
        elif "publicKey" in material:
            pk = json_obj(material["publicKey"], "publicKey")
            h = pk.get("hint")
            if h is not None and type(h) is not str:
                raise BundleError("publicKey hint must be a string")
            hint = h or None
        else:
            raise BundleError("verificationMaterial has no publicKey or certificate chain")
        return cls(payload, sig, hint, certs, payload_type)

    def check_signature(self, key: PublicKey) -> bool:
        """Raise :class:`SignatureError` unless the DSSE signature is ``key``'s
        over this payload. Returns True when it verified only in model-signing
        0.2.0's encoding (:func:`pae_v02`, ECDSA with SHA-256 whatever the
        curve, as 0.2.0 signed): the payload must then be a 0.2 statement
        (:meth:`Manifest.from_statement`, ``v02=True``)."""
        try:
            verify_bytes(key, self.signature, pae(self.payload, self.payload_type))
            return False
        except SignatureError:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise
            try:
                key.verify(self.signature, pae_v02(self.payload, self.payload_type),
                           ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                pass
            else:
                return True
            raise

    def statement(self) -> object:
        """The payload parsed as JSON (not yet trusted: verify the signature first)."""
        return loads_strict(self.payload, "DSSE payload")


def read_bundle_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a signature file (at most one byte over the size limit,
    which parsing then refuses)."""
    p = Path(path)
    try:
        return read_small(p, MAX_BUNDLE_SIZE)
    except FileNotFoundError:
        raise NotSignedError(f"{p}: no signature file (the model is not signed)") from None
    except OSError as e:
        raise BundleError(f"{p}: cannot read signature: {e.strerror}") from None


def parse_bundle(data: bytes, path: str | os.PathLike[str]) -> Bundle:
    """Parse a signature file's bytes; errors name ``path``."""
    try:
        return Bundle.from_json(data)
    except BundleError as e:
        raise type(e)(f"{path}: {e}") from None


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and parse a signature file."""
    return parse_bundle(read_bundle_bytes(path), path)


def write_bundle(path: str | os.PathLike[str], bundle: Bundle) -> Path:
    """Write atomically (temporary file, then rename) so a crash leaves no half signature."""
    p = Path(path)
    with atomic_write(p) as f:
        f.write(bundle.to_json())
    return p


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(x: object, what: str) -> bytes:
    if type(x) is not str:
        raise BundleError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(x, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what} is not valid base64") from None
