"""Sigstore keyless bundles, verified offline against a local trusted root.

No real keyless bundle can be made here (Sigstore's Fulcio and Rekor are
online services needing an OIDC login), so local_sigstore.py builds one the
way they would: see its docstring. model-signing's own Sigstore verifier
accepts these bundles, which checks the fixture against the reference.
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sigstore")

import tensorfile
from tensorfile.errors import (
    BundleError,
    CertificateError,
    DigestMismatchError,
    KeyLoadError,
    SignatureError,
    UnsupportedAlgorithmError,
)
from tensorfile.integrity import SigstoreTrust, TrustPolicy, verify

sys.path.insert(0, str(Path(__file__).parent))
from local_sigstore import Authority, write_keyless

EMAIL, ISSUER = "signer@example.com", "https://oidc.local"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture
def keyless(model: Path, tmp_path: Path) -> tuple[Path, Path, Path, Authority]:
    sig, root, auth = write_keyless(model, tmp_path / "sig", EMAIL, ISSUER)
    return model, sig, root, auth


def trust(root: Path, identity: str = EMAIL, issuer: str = ISSUER) -> SigstoreTrust:
    return SigstoreTrust(root, identity, issuer)


def edit(sig: Path, change: Any) -> None:
    doc = json.loads(sig.read_text())
    change(doc)
    sig.write_text(json.dumps(doc))


def test_verifies_offline(keyless: tuple[Path, Path, Path, Authority]) -> None:
    model, sig, root, _ = keyless
    r = verify(model, sigstore=trust(root), signature=sig)
    assert r.files_checked == 4 and r.tensor_digests_checked
    s = r.signer
    assert s.kind == "sigstore" and s.certificate is not None
    assert s.certificate.san == (EMAIL,) and s.certificate.chain_length == 3
    assert s.sigstore is not None and s.sigstore["identity"] == EMAIL
    assert s.sigstore["issuer"] == ISSUER and s.sigstore["log_index"] == 3
    assert r.to_dict()["signer"]["sigstore"]["integrated_time"]


def test_model_signing_accepts_the_local_bundle(
    keyless: tuple[Path, Path, Path, Authority], tmp_path: Path
) -> None:
    """The reference verifier (model-signing over sigstore) agrees with the fixture."""
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    model, sig, root, _ = keyless
    config = tmp_path / "trust_config.json"
    config.write_text(json.dumps({
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": json.loads(root.read_text()),
        "signingConfig": {"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json"},
    }))
    ms.verifying.Config().use_sigstore_verifier(
        identity=EMAIL, oidc_issuer=ISSUER, trust_config=config).verify(model, sig)
    with pytest.raises(Exception, match="SANs do not match"):
        ms.verifying.Config().use_sigstore_verifier(
            identity="x@example.com", oidc_issuer=ISSUER, trust_config=config).verify(model, sig)
    # model-signing's --trust_config file works for tensorfile too
    assert verify(model, sigstore=trust(config), signature=sig).verified


def test_changed_model_byte_fails(keyless: tuple[Path, Path, Path, Authority]) -> None:
    model, sig, root, _ = keyless
    data = bytearray((model / SHARD).read_bytes())
    data[-1] ^= 1
    (model / SHARD).write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=SHARD):
        verify(model, sigstore=trust(root), signature=sig)


def _flip_payload(doc: dict[str, Any]) -> None:
    p = bytearray(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    p[p.index(b"sha256")] ^= 0x20  # "sha256" -> "Sha256": one changed byte
    doc["dsseEnvelope"]["payload"] = base64.b64encode(bytes(p)).decode()


def _flip_signature(doc: dict[str, Any]) -> None:
    s = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    s[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(s)).decode()


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    e: dict[str, Any] = doc["verificationMaterial"]["tlogEntries"][0]
    return e


def _flip_proof(doc: dict[str, Any]) -> None:
    proof = _entry(doc)["inclusionProof"]
    h = bytearray(base64.b64decode(proof["hashes"][0]))
    h[0] ^= 1
    proof["hashes"][0] = base64.b64encode(bytes(h)).decode()


def _flip_set(doc: dict[str, Any]) -> None:
    _entry(doc)["integratedTime"] = str(int(_entry(doc)["integratedTime"]) + 1)


def _flip_checkpoint(doc: dict[str, Any]) -> None:
    cp = _entry(doc)["inclusionProof"]["checkpoint"]
    cp["envelope"] = cp["envelope"].replace("\n6\n", "\n7\n", 1)


def _flip_certificate(doc: dict[str, Any]) -> None:
    c = bytearray(base64.b64decode(doc["verificationMaterial"]["certificate"]["rawBytes"]))
    c[-5] ^= 1  # inside the CA's signature
    doc["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(bytes(c)).decode()


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        (_flip_payload, SignatureError, "payload hash|signature"),
        (_flip_signature, SignatureError, "signature"),
        (_flip_proof, SignatureError, "inclusion proof"),
        (_flip_set, SignatureError, "inclusion promise|SET"),
        (_flip_checkpoint, SignatureError, "checkpoint"),
        (_flip_certificate, CertificateError, "does not chain"),
        (lambda d: _entry(d).update(logIndex="4"), SignatureError, "inclusion|SET"),
        (lambda d: d["verificationMaterial"].update(tlogEntries=[]), BundleError, "log entry"),
        (lambda d: d.update(mediaType="application/x"), BundleError, "Sigstore bundle"),
    ],
)
def test_changed_bundle_byte_fails(
    keyless: tuple[Path, Path, Path, Authority], change: Any, error: type[Exception], pattern: str
) -> None:
    model, sig, root, _ = keyless
    edit(sig, change)
    with pytest.raises(error, match=pattern):
        verify(model, sigstore=trust(root), signature=sig)


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [("other@example.com", ISSUER), (EMAIL, "https://accounts.google.com"),
     ("signer@example.co", ISSUER)],
)
def test_wrong_identity_fails(
    keyless: tuple[Path, Path, Path, Authority], identity: str, issuer: str
) -> None:
    model, sig, root, _ = keyless
    with pytest.raises(CertificateError, match="another identity"):
        verify(model, sigstore=trust(root, identity, issuer), signature=sig)


def test_wrong_root_fails(keyless: tuple[Path, Path, Path, Authority], tmp_path: Path) -> None:
    model, sig, _, auth = keyless
    now = datetime.datetime.now(datetime.timezone.utc)
    other = Authority.new(now)
    wrong = tmp_path / "other_root.json"
    wrong.write_text(json.dumps(other.trusted_root(now)))
    with pytest.raises(CertificateError, match="does not chain"):
        verify(model, sigstore=trust(wrong), signature=sig)
    # The right CA but another log's keys: the log entry does not verify.
    mixed = auth.trusted_root(now)
    mixed["tlogs"] = other.trusted_root(now)["tlogs"]
    wrong.write_text(json.dumps(mixed))
    with pytest.raises(SignatureError, match=r"log entry|checkpoint|Rekor"):
        verify(model, sigstore=trust(wrong), signature=sig)
    # The right CA and log but another CT log: the certificate's SCT fails.
    mixed = auth.trusted_root(now)
    mixed["ctlogs"] = other.trusted_root(now)["ctlogs"]
    wrong.write_text(json.dumps(mixed))
    with pytest.raises(SignatureError, match="SCT"):
        verify(model, sigstore=trust(wrong), signature=sig)


def test_expired_certificate_is_fine_when_logged_in_time(model: Path, tmp_path: Path) -> None:
    """Keyless certificates live ten minutes; the log's timestamp proves the
    signature was made while it was valid."""
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    sig, root, _ = write_keyless(model, tmp_path / "old", EMAIL, ISSUER, when=yesterday)
    r = verify(model, sigstore=trust(root), signature=sig)
    assert r.signer.certificate is not None
    assert r.signer.certificate.not_after < datetime.datetime.now(datetime.timezone.utc)


def test_bad_trusted_root_files(keyless: tuple[Path, Path, Path, Authority], tmp_path: Path) -> None:
    model, sig, _, _ = keyless
    bad = tmp_path / "bad.json"
    for text, pattern in [("{", "not valid JSON"), ('{"mediaType": "x"}', "not a Sigstore trusted root"),
                          ("[]", "JSON object")]:
        bad.write_text(text)
        with pytest.raises(KeyLoadError, match=pattern):
            verify(model, sigstore=trust(bad), signature=sig)
    with pytest.raises(KeyLoadError, match="cannot read"):
        verify(model, sigstore=trust(tmp_path / "missing.json"), signature=sig)
    with pytest.raises(KeyLoadError, match="identity and OIDC issuer"):
        SigstoreTrust(bad, "", ISSUER)


def test_without_the_sigstore_package(
    keyless: tuple[Path, Path, Path, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, sig, root, _ = keyless
    monkeypatch.setitem(sys.modules, "sigstore.models", None)
    with pytest.raises(UnsupportedAlgorithmError, match=r"tensorfile\[sigstore\]"):
        verify(model, sigstore=trust(root), signature=sig)


def test_verify_on_load(keyless: tuple[Path, Path, Path, Authority]) -> None:
    model, sig, root, _ = keyless
    policy = TrustPolicy(sigstore=trust(root), signature=sig, model_root=model)
    got = tensorfile.load_file(model / SHARD, verify=policy)
    want = tensorfile.load_file(model / SHARD)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(CertificateError):
        tensorfile.load_file(model / SHARD, verify=TrustPolicy(
            sigstore=trust(root, "x@example.com"), signature=sig, model_root=model))


def test_cli(keyless: tuple[Path, Path, Path, Authority]) -> None:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    model, sig, root, _ = keyless
    runner = CliRunner()
    args = ["verify", str(model), "-s", str(sig), "--trusted-root", str(root),
            "--identity", EMAIL, "--identity-provider", ISSUER]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    signer = json.loads(res.stdout)["result"]["signer"]
    assert signer["kind"] == "sigstore" and signer["sigstore"]["identity"] == EMAIL
    human = runner.invoke(app, args)
    assert f"identity {EMAIL} from {ISSUER}" in " ".join(human.stdout.split())
    bad = runner.invoke(app, [*args[:-1], "https://other", "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"]["type"] == "CertificateError"
    partial = runner.invoke(app, ["verify", str(model), "-s", str(sig), "--trusted-root", str(root)])
    assert partial.exit_code == 2
