"""The trust edges, on real signed material (../shared/corpus/sigstore-real).

Keyless bundles made by model_signing 0.3.1-1.1.0 against Sigstore's
production service, certificate bundles from model_signing 0.2.0-1.1.0 with
their test CA, key bundles, and Sigstore's production trusted root and a
production trust config. tensorfile must agree with model_signing on all of
it, except where it is stricter on purpose (a serverAuth-only leaf; a leaf
that is a CA allowed to issue certificates, without ``allow_ca_signer``).
Skips where the corpus is absent.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tensorfile.errors import (
    BundleError,
    CertificateError,
    KeyLoadError,
    SignatureError,
    UnsupportedAlgorithmError,
)
from tensorfile.integrity import CertificateTrust, SigstoreTrust, sign, verify
from tensorfile.integrity.bundle import Bundle, pae_v02, read_bundle, write_bundle

REPO = Path(__file__).resolve().parents[2]
#: ../shared beside the checkout (CI, the main checkout), or beside the folder
#: of worktrees (a worktree one level deeper).
CORPUS = next((p for p in (REPO / ".." / "shared", REPO / ".." / ".." / "shared")
               if (p / "corpus" / "sigstore-real").is_dir()),
              REPO / ".." / "shared") / "corpus" / "sigstore-real"
MT = CORPUS / "model-transparency"
KEYS = MT / "keys"
ROOT_JSON = CORPUS / "sigstore-wheel" / "production" / "trusted_root.json"
TRUST_CONFIG = CORPUS / "sigstore-python" / "config.v1.json"
IDENTITY, ISSUER = "stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2"
KEYLESS = ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"]
CERTIFICATE = ["v0.2.0", "v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"]

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not MT.is_dir(), reason="../shared/corpus/sigstore-real is not present"),
]


def copy(name: str, tmp_path: Path) -> Path:
    """A writable copy of one corpus folder, less ``ignore-me`` (which some
    releases did not record as ignored)."""
    dst = tmp_path / name
    shutil.copytree(MT / name, dst)
    (dst / "ignore-me").unlink(missing_ok=True)
    return dst


def keyless_trust(root: Path = ROOT_JSON, identity: str = IDENTITY) -> SigstoreTrust:
    return SigstoreTrust(root, identity, ISSUER)


def leaf_of(sig: Path) -> x509.Certificate:
    vm = json.loads(sig.read_text())["verificationMaterial"]
    raw = vm["certificate"]["rawBytes"] if "certificate" in vm else (
        vm["x509CertificateChain"]["certificates"][0]["rawBytes"])
    return x509.load_der_x509_certificate(base64.b64decode(raw))


def fulcio_cas() -> list[x509.Certificate]:
    doc = json.loads(ROOT_JSON.read_text())
    return [x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
            for ca in doc["certificateAuthorities"] for c in ca["certChain"]["certificates"]]


# ---------------------------------------------------------------- 1. keyless only by keyless


@pytest.mark.parametrize("release", KEYLESS)
def test_fulcio_certificate_refused_by_the_certificate_path(release: str, tmp_path: Path) -> None:
    """Fulcio's CA chain as trusted roots, at a time the ten-minute leaf was
    valid: the chain verifies, but nobody's identity would have been checked.
    The certificate path refuses it and says to use keyless trust."""
    pytest.importorskip("sigstore")
    model = copy(f"{release}-sigstore", tmp_path)
    sig = model / "model.sig"
    during = leaf_of(sig).not_valid_before_utc + datetime.timedelta(minutes=1)
    with pytest.raises(CertificateError, match=r"keyless \(Fulcio\).*--identity"):
        verify(model, cert_root=fulcio_cas(), at_time=during)
    # The same certificate moved into an x509CertificateChain (with Fulcio's
    # intermediate), without its log entry: refused all the same.
    doc = json.loads(sig.read_text())
    cert = doc["verificationMaterial"].pop("certificate")
    doc["verificationMaterial"] = {"x509CertificateChain": {"certificates": [cert]}}
    sig.write_text(json.dumps(doc))
    with pytest.raises(CertificateError, match="keyless"):
        verify(model, cert_root=fulcio_cas(), at_time=during)


@pytest.mark.parametrize("release", KEYLESS)
def test_keyless_path_checks_log_entry_identity_and_issuer(release: str, tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    model = copy(f"{release}-sigstore", tmp_path)
    r = verify(model, sigstore=keyless_trust())
    assert r.signer.kind == "sigstore" and r.signer.sigstore is not None
    assert r.signer.sigstore["identity"] == IDENTITY and r.signer.sigstore["log_index"] > 2 * 10**8
    with pytest.raises(CertificateError, match="another identity"):
        verify(model, sigstore=keyless_trust(identity="someone@example.com"))
    with pytest.raises(CertificateError, match="another identity"):
        verify(model, sigstore=SigstoreTrust(ROOT_JSON, IDENTITY, "https://accounts.google.com"))


def test_cli_certificate_path_says_use_keyless(tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    model = copy("v1.1.0-sigstore", tmp_path)
    roots = tmp_path / "fulcio.pem"
    roots.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in fulcio_cas()))
    r = CliRunner().invoke(app, ["verify", str(model), "--cert-chain", str(roots), "--json"])
    assert r.exit_code == 1
    assert "keyless" in r.stdout and "--trusted-root" in r.stdout
    ok = CliRunner().invoke(app, ["verify", str(model), "--trusted-root", str(ROOT_JSON),
                                  "--identity", IDENTITY, "--identity-provider", ISSUER])
    assert ok.exit_code == 0, ok.stdout


# ---------------------------------------------------------------- 2. model_signing's certificates


def ms_verify_certificate(model: Path, roots: list[Path]) -> None:
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.verifying.Config().use_certificate_verifier(certificate_chain=roots).set_hashing_config(
        ms.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).verify(model, model / "model.sig")


@pytest.mark.parametrize("release", CERTIFICATE)
def test_model_signing_certificate_bundles_verify(release: str, tmp_path: Path) -> None:
    """Every release's certificate bundle verifies, as model_signing verifies
    it. Their leaf is ``cA=true`` with key usage digitalSignature only (no
    keyCertSign): it cannot issue certificates, so it is accepted. 0.2.0's
    bundle is in 0.2's own DSSE encoding and predicate."""
    model = copy(f"{release}-certificate", tmp_path)
    leaf = leaf_of(model / "model.sig")
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    r = verify(model, cert_root=KEYS / "ca-cert.pem")
    assert r.signer.kind == "certificate" and r.files == ("signme-1", "signme-2")
    assert r.signer.certificate is not None and r.signer.certificate.chain_length == 3
    # The intermediate as the trust anchor works too.
    verify(model, cert_root=KEYS / "int-ca-cert.pem")
    ms_verify_certificate(model, [KEYS / "ca-cert.pem"])
    # One changed byte fails both.
    (model / "signme-2").write_bytes(b"tampered")
    with pytest.raises(Exception, match="signme-2"):
        verify(model, cert_root=KEYS / "ca-cert.pem")


@pytest.mark.parametrize("release", ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"])
def test_model_signing_key_bundles_verify(release: str, tmp_path: Path) -> None:
    model = copy(f"{release}-elliptic-key", tmp_path)
    target = model if (model / "signme-2").exists() else model / "signme-1"
    r = verify(target, KEYS / "signing-key-pub.pem", signature=model / "model.sig")
    assert r.signer.kind == "key"


def test_v02_encoding_only_with_the_v02_statement(tmp_path: Path) -> None:
    """model_signing 0.2.0 signed ``DSSEV1 ... b'payload'``; that encoding is
    accepted only for its own predicate (and the real 0.2.0 bundle, above)."""
    model = copy("v0.2.0-certificate", tmp_path)
    good = read_bundle(model / "model.sig")
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    v02 = ec.ECDSA(hashes.SHA256())
    # The 0.2 statement in the 0.2 encoding, signed by our key: verifies.
    ok = Bundle(good.payload, key.sign(pae_v02(good.payload), v02))
    write_bundle(model / "model.sig", ok)
    assert verify(model, pub).files == ("signme-1", "signme-2")
    # A v1.0 statement signed in the 0.2 encoding: refused.
    v1 = read_bundle(MT / "v1.1.0-certificate" / "model.sig").payload
    write_bundle(model / "model.sig", Bundle(v1, key.sign(pae_v02(v1), v02)))
    with pytest.raises(BundleError, match="wrong DSSE encoding"):
        verify(model, pub)
    # The 0.2 statement in the proper encoding: refused too.
    from tensorfile.integrity.bundle import pae

    write_bundle(model / "model.sig", Bundle(good.payload, key.sign(pae(good.payload), v02)))
    with pytest.raises(UnsupportedAlgorithmError, match="own DSSE encoding"):
        verify(model, pub)
    # A payload edited after signing fails the signature in either encoding.
    edited = good.payload.replace(b"signme-2", b"signme-3")
    write_bundle(model / "model.sig", Bundle(edited, key.sign(pae_v02(good.payload), v02)))
    with pytest.raises(SignatureError):
        verify(model, pub)


# ---------------------------------------------------------------- CA leaf and EKU rules


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _chain(tmp_path: Path, *, ca_leaf: bool, key_cert_sign: bool,
           eku: list[x509.ObjectIdentifier] | None) -> tuple[Path, Path, Path]:
    """Root -> leaf; returns (root PEM, leaf+key PEM paths...)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())

    def build(subject: str, key: Any, ca: bool, ku_sign: bool, ku_cert: bool,
              eku_oids: list[x509.ObjectIdentifier] | None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name("root"))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - day).not_valid_after(now + day)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=ku_sign, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=ku_cert,
                 crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
        if eku_oids is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(eku_oids), critical=False)
        return b.sign(root_key, hashes.SHA256())

    root = build("root", root_key, True, False, True, None)
    leaf = build("leaf", leaf_key, ca_leaf, True, key_cert_sign, eku)
    paths = tmp_path / "root.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


def test_ca_leaf_that_may_issue_certificates_needs_the_option(model: Path, tmp_path: Path) -> None:
    root, leaf, key = _chain(tmp_path, ca_leaf=True, key_cert_sign=True,
                             eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    sign(model, key, certificate_chain=leaf)
    with pytest.raises(CertificateError, match=r"may issue certificates.*allow_ca_signer"):
        verify(model, cert_root=root)
    r = verify(model, cert_root=CertificateTrust.from_pem(root, allow_ca_signer=True))
    assert r.signer.kind == "certificate"
    # at_time on top keeps the option (resolve_trust rebuilds the trust).
    verify(model, cert_root=CertificateTrust.from_pem(root, allow_ca_signer=True),
           at_time=datetime.datetime.now(datetime.timezone.utc))
    ms_verify_certificate(model, [root])  # model_signing accepts it: tensorfile stricter
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    args = ["verify", str(model), "--cert-chain", str(root)]
    assert CliRunner().invoke(app, args).exit_code == 1
    assert CliRunner().invoke(app, [*args, "--allow-ca-signer"]).exit_code == 0


def test_eku_checked_when_present(model: Path, tmp_path: Path) -> None:
    """A leaf with key usage digitalSignature but extended key usage
    serverAuth only is a TLS server certificate, not a code signer: refused
    (model_signing accepts it: tensorfile is stricter on purpose)."""
    root, leaf, key = _chain(tmp_path, ca_leaf=False, key_cert_sign=False,
                             eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    sign(model, key, certificate_chain=leaf)
    with pytest.raises(CertificateError, match=r"not for code signing.*serverAuth"):
        verify(model, cert_root=root)
    ms_verify_certificate(model, [root])
    for ok in ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING],
               [x509.ObjectIdentifier("2.5.29.37.0")], None):
        d = tmp_path / f"ok{len(ok or [])}"
        d.mkdir()
        root, leaf, key = _chain(d, ca_leaf=False, key_cert_sign=False, eku=ok)
        sign(model, key, certificate_chain=leaf, overwrite=True)
        verify(model, cert_root=root)


def test_real_leaves_meet_the_eku_rule() -> None:
    """Both kinds of real leaf carry codeSigning, so the EKU rule costs them nothing."""
    for sig in [MT / "v1.1.0-certificate" / "model.sig", MT / "v1.1.0-sigstore" / "model.sig"]:
        eku = leaf_of(sig).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]


# ---------------------------------------------------------------- 3. trust config spellings


def _respell(tmp_path: Path, mapping: dict[str, str]) -> Path:
    doc = json.loads(TRUST_CONFIG.read_text())
    out = {mapping.get(k, k): v for k, v in doc.items()}
    tr = out.get("trusted_root", out.get("trustedRoot"))
    out_path = tmp_path / f"config-{len(mapping)}.json"
    if "mediaType" in mapping:
        tr = {mapping.get(k, k): v for k, v in tr.items()}
        out["trusted_root" if "trustedRoot" in mapping else "trustedRoot"] = tr
    out_path.write_text(json.dumps(out))
    return out_path


@pytest.mark.parametrize("mapping", [
    {},
    {"trustedRoot": "trusted_root"},
    {"trustedRoot": "trusted_root", "mediaType": "media_type", "signing_config": "signingConfig"},
])
def test_trust_config_both_spellings(mapping: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    model = copy("v1.1.0-sigstore", tmp_path)
    config = _respell(tmp_path, mapping)
    r = verify(model, sigstore=keyless_trust(config))
    assert r.signer.kind == "sigstore"
    # model_signing reads the same file (offline, with the config as given).
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    ms.verifying.Config().use_sigstore_verifier(
        identity=IDENTITY, oidc_issuer=ISSUER, trust_config=config
    ).set_hashing_config(
        ms.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).verify(model, model / "model.sig")


def test_trust_config_with_both_names_of_one_field_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    model = copy("v1.1.0-sigstore", tmp_path)
    doc = json.loads(TRUST_CONFIG.read_text())
    doc["trusted_root"] = doc["trustedRoot"]
    config = tmp_path / "both.json"
    config.write_text(json.dumps(doc))
    with pytest.raises(KeyLoadError, match="both 'trustedRoot' and 'trusted_root'"):
        verify(model, sigstore=keyless_trust(config))


# ---------------------------------------------------------------- 4. one strict JSON reading


@pytest.mark.parametrize("kind", ["sigstore", "certificate", "elliptic-key"])
def test_duplicate_keys_refused_for_every_bundle_kind(kind: str, tmp_path: Path) -> None:
    """A second ``mediaType`` before the real members: sigstore's parser
    would keep the last (the real one) and verify; the one strict reading
    refuses the file, for keyless bundles as for the others."""
    if kind == "sigstore":
        pytest.importorskip("sigstore")
    model = copy(f"v1.1.0-{kind}", tmp_path)
    sig = model / "model.sig"
    text = sig.read_text()
    assert text.lstrip().startswith("{")
    sig.write_text('{"mediaType": "duplicate", ' + text.lstrip()[1:])
    trust: dict[str, Any] = {
        "sigstore": {"sigstore": keyless_trust()},
        "certificate": {"cert_root": KEYS / "ca-cert.pem"},
        "elliptic-key": {"key": KEYS / "signing-key-pub.pem"},
    }[kind]
    with pytest.raises(BundleError, match="duplicate"):
        verify(model, **trust)
