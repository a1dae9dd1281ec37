"""X.509 certificate chains, verified offline against roots the caller trusts.

The bundle carries the chain leaf first. Starting at the leaf, each
certificate must be signed by the next one (or by a trusted root), and the
walk must end at a root from :class:`CertificateTrust`. Checked on every
certificate of the path, root included:

* validity period, at verification time (``at_time``, default now): an
  expired leaf fails, unlike model-signing, which checks at the leaf's
  ``notBefore`` and so accepts expired certificates;
* issuers are CAs (basic constraints ``cA=true``), may sign certificates
  (key usage ``keyCertSign`` when present) and respect ``pathLenConstraint``;
* the leaf may sign: key usage ``digitalSignature`` when key usage is present,
  extended key usage ``codeSigning`` (or ``anyExtendedKeyUsage``) when extended
  key usage is present, and at least one of the two present;
* the leaf is not a CA that may issue certificates: a leaf with ``cA=true``
  is accepted only when its key usage is present and lacks ``keyCertSign``
  (such a key cannot sign certificates, so the flag grants nothing; this is
  the leaf model-signing's own test PKI issues, and OpenSSL, which
  model-signing verifies with, accepts it). ``allow_ca_signer`` accepts any
  CA certificate as the signer, as model-signing does;
* the leaf is not a Sigstore keyless (Fulcio) certificate: its identity is
  only meaningful with its transparency log entry and the OIDC identity and
  issuer checked, which only keyless trust does (:mod:`.keyless`);
* no critical extension tensorfile does not understand.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from tensorfile.errors import CertificateError, KeyLoadError
from tensorfile.integrity.keys import PublicKey, check_supported, key_algorithm, read_pem

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

#: Longest chain walked (leaf, intermediates, root).
MAX_CHAIN = 10
#: Critical extensions this verifier understands (filled by _load_x509).
_UNDERSTOOD: frozenset[Any] = frozenset()


def _load_x509() -> None:
    """Bind cryptography's X.509 module here on first use.

    Importing it costs 0.05-0.1 s, and every verify and sign imports this
    module (for its types), while only a certificate needs X.509: each
    public function that touches a certificate calls this first.
    """
    global _UNDERSTOOD
    if _UNDERSTOOD:
        return
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

    globals().update(x509=x509, ExtendedKeyUsageOID=ExtendedKeyUsageOID)
    _UNDERSTOOD = frozenset({
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    })


#: The arc of Fulcio's certificate extensions (OIDC issuer, workflow claims):
#: every certificate Fulcio issues carries at least its OIDC issuer (``.1.1``
#: or ``.1.8``), and no other CA uses Sigstore's private arc.
FULCIO_EXTENSION_ARC = "1.3.6.1.4.1.57264.1."
#: anyExtendedKeyUsage (RFC 5280 4.2.1.12), dotted: X.509 is imported lazily.
_ANY_EKU = "2.5.29.37.0"

def load_certificates(sources: Iterable[Any]) -> list[x509.Certificate]:
    """Certificates from PEM files or PEM bytes (several per file allowed) or objects."""
    _load_x509()
    out: list[x509.Certificate] = []
    for src in sources:
        if isinstance(src, x509.Certificate):
            out.append(src)
            continue
        data = read_pem(src, "certificate")
        try:
            out.extend(x509.load_pem_x509_certificates(data))
        except ValueError as e:
            where = "" if isinstance(src, bytes) else f"{src}: "
            raise KeyLoadError(f"{where}no PEM certificate could be read: {e}") from None
    return out


def as_list(x: Any) -> list[Any]:
    _load_x509()
    if isinstance(x, str | bytes | os.PathLike | x509.Certificate):
        return [x]
    return list(x)


@dataclass(frozen=True)
class CertificateTrust:
    """Trust signatures whose certificate chain leads to one of ``roots``."""

    roots: tuple[x509.Certificate, ...]
    #: When validity periods are checked; None means the moment of verification.
    at_time: datetime.datetime | None = None
    #: Accept a signing certificate that is a CA allowed to issue certificates
    #: (``cA=true`` with ``keyCertSign``, or without key usage), as model-signing
    #: does. Off by default: a key that issues certificates should not also sign
    #: models. A ``cA=true`` leaf whose key usage lacks ``keyCertSign`` (what
    #: model-signing's test PKI issues) is accepted either way.
    allow_ca_signer: bool = False

    @classmethod
    def from_pem(
        cls, roots: Any, at_time: datetime.datetime | None = None, *,
        allow_ca_signer: bool = False,
    ) -> CertificateTrust:
        """From a PEM path, PEM bytes, a certificate, or a list of these."""
        certs = load_certificates(as_list(roots))
        if not certs:
            raise KeyLoadError("no trusted root certificate given")
        return cls(tuple(certs), at_time, allow_ca_signer)


@dataclass(frozen=True)
class CertificateIdentity:
    """Who signed, as the verified leaf certificate says."""

    subject: str
    issuer: str
    san: tuple[str, ...]
    fingerprint: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    chain_length: int
    public_key: PublicKey

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "san": list(self.san),
            "sha256_fingerprint": self.fingerprint,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "chain_length": self.chain_length,
            "algorithm": key_algorithm(self.public_key),
        }


def _fingerprint(c: x509.Certificate) -> str:
    return hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(c: x509.Certificate) -> str:
    return c.subject.rfc4514_string() or f"<empty subject, sha256 {_fingerprint(c)[:16]}>"


def _check_time(c: x509.Certificate, now: datetime.datetime) -> None:
    if now < c.not_valid_before_utc:
        raise CertificateError(
            f"certificate {_name(c)} is not valid before {c.not_valid_before_utc.isoformat()}"
        )
    if now > c.not_valid_after_utc:
        raise CertificateError(
            f"certificate {_name(c)} expired at {c.not_valid_after_utc.isoformat()}"
        )


def _check_critical(c: x509.Certificate) -> None:
    for ext in c.extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise CertificateError(
                f"certificate {_name(c)} has an unsupported critical extension {ext.oid.dotted_string}"
            )


def _ext(c: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return c.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_issuer(ca: x509.Certificate, below: int) -> None:
    """``ca`` signs a path with ``below`` non-leaf CAs under it."""
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise CertificateError(f"certificate {_name(ca)} issues certificates but is not a CA")
    if bc.path_length is not None and below > bc.path_length:
        raise CertificateError(f"certificate {_name(ca)}: path length constraint exceeded")
    ku = _ext(ca, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise CertificateError(f"certificate {_name(ca)} may not sign certificates (key usage)")


def is_fulcio_certificate(c: x509.Certificate) -> bool:
    """Whether ``c`` carries Fulcio's extensions: a Sigstore keyless certificate."""
    return any(e.oid.dotted_string.startswith(FULCIO_EXTENSION_ARC) for e in c.extensions)


def _check_leaf(leaf: x509.Certificate, allow_ca_signer: bool) -> None:
    if is_fulcio_certificate(leaf):
        # Anyone can get a Fulcio certificate for their own identity: its chain
        # alone proves nothing about who signed. Only the keyless path checks
        # the identity, the OIDC issuer and the transparency log entry.
        raise CertificateError(
            f"signing certificate {_name(leaf)} (SAN {', '.join(_san(leaf)) or 'none'}) is a "
            "Sigstore keyless (Fulcio) certificate: verify it with keyless trust, which checks "
            "its identity, issuer and transparency log entry (--trusted-root with --identity "
            "and --identity-provider; sigstore=SigstoreTrust(...)), not with --cert-chain"
        )
    bc = _ext(leaf, x509.BasicConstraints)
    ku = _ext(leaf, x509.KeyUsage)
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if bc is not None and bc.ca and not allow_ca_signer and (ku is None or ku.key_cert_sign):
        raise CertificateError(
            f"signing certificate {_name(leaf)} is a CA certificate that may issue certificates "
            "(cA=true with key usage keyCertSign, or without key usage); accept it with "
            "allow_ca_signer (--allow-ca-signer)"
        )
    if ku is None and eku is None:
        raise CertificateError(
            f"signing certificate {_name(leaf)} has neither key usage digitalSignature "
            "nor extended key usage codeSigning"
        )
    if ku is not None and not ku.digital_signature:
        raise CertificateError(
            f"signing certificate {_name(leaf)} may not make signatures (key usage)"
        )
    if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku and not any(
            u.dotted_string == _ANY_EKU for u in eku):
        uses = ", ".join(getattr(o, "_name", None) or o.dotted_string for o in eku)
        raise CertificateError(
            f"signing certificate {_name(leaf)} is not for code signing: its extended key "
            f"usage is {uses}, without codeSigning"
        )


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _san(c: x509.Certificate) -> tuple[str, ...]:
    ext = _ext(c, x509.SubjectAlternativeName)
    if ext is None:
        return ()
    return tuple(str(v) for gn in ext for v in [getattr(gn, "value", gn)])


def verify_chain(chain_der: Sequence[bytes], trust: CertificateTrust) -> CertificateIdentity:
    """Check the bundle's chain (DER, leaf first) against ``trust``; return the leaf's identity.

    Raises :class:`CertificateError` when the chain does not verify.
    """
    _load_x509()
    if not chain_der:
        raise CertificateError("bundle has no certificates")
    if len(chain_der) > MAX_CHAIN:
        raise CertificateError(f"certificate chain is longer than {MAX_CHAIN}")
    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as e:
        raise CertificateError(f"bundle holds a certificate that is not valid DER: {e}") from None
    now = trust.at_time or datetime.datetime.now(datetime.timezone.utc)
    leaf = chain[0]
    try:
        public_key = check_supported(leaf.public_key())
    except (KeyLoadError, UnsupportedAlgorithm) as e:
        raise CertificateError(f"signing certificate {_name(leaf)}: {e}") from None
    _check_leaf(leaf, trust.allow_ca_signer)
    roots = {r.public_bytes(serialization.Encoding.DER): r for r in trust.roots}

    current = leaf
    path = [leaf]
    rest = chain[1:]
    while True:
        _check_time(current, now)
        _check_critical(current)
        current_der = current.public_bytes(serialization.Encoding.DER)
        if current_der in roots and current is not leaf:
            break  # reached a trusted root that the bundle itself carries
        anchor = next((r for r in trust.roots if _signed_by(current, r)), None)
        if anchor is not None:
            _check_issuer(anchor, len(path) - 1)
            _check_time(anchor, now)
            _check_critical(anchor)
            path.append(anchor)
            break
        if not rest:
            raise CertificateError(
                f"certificate chain of {_name(leaf)} does not lead to a trusted root "
                f"(stopped at {_name(current)}, issued by {current.issuer.rfc4514_string()})"
            )
        issuer = rest.pop(0)
        if not _signed_by(current, issuer):
            raise CertificateError(
                f"certificate {_name(current)} is not signed by the next certificate in the "
                f"chain, {_name(issuer)}"
            )
        _check_issuer(issuer, len(path) - 1)
        path.append(issuer)
        current = issuer
    return identity_of(leaf, public_key, len(path))


def identity_of(leaf: x509.Certificate, public_key: PublicKey, chain_length: int) -> CertificateIdentity:
    """What a verified leaf certificate says about its holder."""
    _load_x509()
    return CertificateIdentity(
        subject=_name(leaf),
        issuer=leaf.issuer.rfc4514_string(),
        san=_san(leaf),
        fingerprint=_fingerprint(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        chain_length=chain_length,
        public_key=public_key,
    )
