"""Certificate-based signing: chains verified offline against a given root."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tensorfile.errors import CertificateError, DigestMismatchError, KeyLoadError, SignatureError
from tensorfile.integrity import CertificateTrust, sign, verify

DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(datetime.timezone.utc)


def test_certificate_round_trip(model: Path, chain: Any) -> None:
    sign(model, chain.key, certificate_chain=chain.chain)
    doc = json.loads((model / "model.sig").read_text())
    certs = doc["verificationMaterial"]["x509CertificateChain"]["certificates"]
    assert len(certs) == 2 and "publicKey" not in doc["verificationMaterial"]
    r = verify(model, cert_root=chain.root)
    assert r.signer.kind == "certificate"
    assert r.signer.certificate is not None
    assert r.signer.certificate.subject == "CN=model-signer"
    assert r.signer.certificate.san == ("signer@example.com",)
    assert r.signer.certificate.chain_length == 3
    assert r.to_dict()["signer"]["certificate"]["issuer"] == "CN=Test Intermediate"
    (model / "config.json").write_text("{}")
    with pytest.raises(DigestMismatchError):
        verify(model, cert_root=chain.root)


def test_chain_given_as_separate_files(model: Path, chain: Any) -> None:
    sign(model, chain.key, certificate_chain=[chain.leaf, chain.intermediates])
    assert verify(model, cert_root=[chain.root]).files_checked == 4


def test_intermediate_passed_as_trust_anchor(model: Path, chain: Any) -> None:
    sign(model, chain.key, certificate_chain=chain.chain)
    r = verify(model, cert_root=chain.intermediates)
    assert r.signer.certificate is not None and r.signer.certificate.chain_length == 2


def test_untrusted_root_fails(model: Path, chain: Any, make_chain: Callable[..., Any]) -> None:
    sign(model, chain.key, certificate_chain=chain.chain)
    with pytest.raises(CertificateError, match="does not lead to a trusted root"):
        verify(model, cert_root=make_chain().root)


def test_leaf_only_chain_needs_the_intermediate(model: Path, chain: Any) -> None:
    sign(model, chain.key, certificate_chain=chain.leaf)
    with pytest.raises(CertificateError, match="does not lead to a trusted root"):
        verify(model, cert_root=chain.root)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"leaf_not_after": NOW - DAY, "leaf_not_before": NOW - 30 * DAY}, "expired"),
        ({"leaf_not_before": NOW + DAY, "leaf_not_after": NOW + 30 * DAY}, "not valid before"),
        ({"leaf_key_usage": False}, "key usage"),
        ({"leaf_ca": True}, "is a CA"),
        ({"intermediate_ca": False}, "not a CA"),
    ],
)
def test_bad_certificates_fail(
    model: Path, make_chain: Callable[..., Any], options: dict[str, Any], message: str
) -> None:
    c = make_chain(**options)
    sign(model, c.key, certificate_chain=c.chain)
    with pytest.raises(CertificateError, match=message):
        verify(model, cert_root=c.root)


def test_expired_certificate_checked_at_a_given_time(
    model: Path, make_chain: Callable[..., Any]
) -> None:
    """Validity is checked at verification time (default now), or at ``at_time``."""
    c = make_chain(leaf_not_before=NOW - 30 * DAY, leaf_not_after=NOW - DAY)
    sign(model, c.key, certificate_chain=c.chain)
    assert verify(model, cert_root=c.root, at_time=NOW - 2 * DAY).verified
    with pytest.raises(CertificateError, match="expired"):
        verify(model, cert_root=CertificateTrust.from_pem(c.root))


def test_no_key_usage_but_code_signing_eku_is_accepted(
    model: Path, make_chain: Callable[..., Any]
) -> None:
    c = make_chain(leaf_key_usage=None)
    sign(model, c.key, certificate_chain=c.chain)
    assert verify(model, cert_root=c.root).signer.kind == "certificate"


def test_key_bundle_with_certificate_trust_fails(model: Path, p256: Any, chain: Any) -> None:
    sign(model, p256.private)
    with pytest.raises(SignatureError, match="bare key"):
        verify(model, cert_root=chain.root)


def test_certificate_bundle_verifies_with_the_leaf_key(model: Path, chain: Any) -> None:
    from cryptography import x509

    sign(model, chain.key, certificate_chain=chain.chain)
    leaf_key = x509.load_pem_x509_certificate(chain.leaf.read_bytes()).public_key()
    assert verify(model, leaf_key).signer.kind == "key"


def test_certificate_for_another_key_is_refused_at_signing(
    model: Path, chain: Any, p256: Any
) -> None:
    with pytest.raises(KeyLoadError, match="does not hold the signing key"):
        sign(model, p256.private, certificate_chain=chain.chain)


def test_swapped_leaf_certificate_fails(
    model: Path, chain: Any, make_chain: Callable[..., Any]
) -> None:
    """A bundle whose chain is replaced by another valid chain from the same root fails."""
    sign(model, chain.key, certificate_chain=chain.chain)
    other = make_chain(leaf_curve=ec.SECP384R1())
    sig = model / "model.sig"
    doc = json.loads(sig.read_text())
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
           for c in x509.load_pem_x509_certificates(other.chain.read_bytes())]
    doc["verificationMaterial"]["x509CertificateChain"]["certificates"] = [
        {"rawBytes": d} for d in der
    ]
    sig.write_text(json.dumps(doc))
    with pytest.raises(SignatureError):
        verify(model, cert_root=other.root)
    with pytest.raises(CertificateError):
        verify(model, cert_root=chain.root)


def test_trust_needs_exactly_one_of_key_and_root(model: Path, p256: Any, chain: Any) -> None:
    with pytest.raises(KeyLoadError, match="exactly one"):
        verify(model)
    with pytest.raises(KeyLoadError, match="exactly one"):
        verify(model, p256.public, chain.root)
