"""``tensorfile check``'s ``[trust]`` table end to end, for the signers the key and
pins tests (tests/cli/test_check.py) do not cover: certificate roots and keyless
(Sigstore) identities. Each list is tried in turn; any one that verifies will do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tensorfile.check import check, load_policy
from tensorfile.integrity import sign

EMAIL, ISSUER = "signer@example.com", "https://oidc.local"


def _policy(tmp_path: Path, trust: str) -> Any:
    """A policy beside the model (paths in it are relative to it), not in the signed folder."""
    path = tmp_path / "tensorfile.toml"
    path.write_text("[trust]\n" + trust)
    return load_policy(path)


def test_cert_roots_any_one_that_verifies(model: Path, tmp_path: Path,
                                          make_chain: Callable[..., Any]) -> None:
    mine, other = make_chain(), make_chain()
    sign(model, mine.key, certificate_chain=mine.chain)
    policy = _policy(tmp_path, f'cert-roots = ["{other.root}", "{mine.root}"]\n')
    report = check(model, policy)
    assert report.exit_code == 0, [f.message for f in report.findings]
    v = report.verification
    assert v.status == "verified" and v.report is not None
    assert v.report["signer"]["kind"] == "certificate"
    # Only the other root: the chain does not lead there, and the check fails on it.
    report = check(model, _policy(tmp_path, f'cert-roots = ["{other.root}"]\n'))
    assert report.exit_code == 1 and report.verification.status == "failed"
    (failed,) = [f for f in report.findings if f.fails]
    assert failed.rule == "TF101" and str(other.root) in failed.message


def test_keyless_identity_and_issuer(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from local_sigstore import write_keyless
    finally:
        sys.path.remove(str(Path(__file__).parent))
    write_keyless(model, tmp_path / "sig", EMAIL, ISSUER)
    files = 'trusted-root = "sig/trusted_root.json"\nsignature = "sig/model.sig"\n'
    policy = _policy(tmp_path, files + "keyless = [\n"
                     f'  {{identity = "someone@example.com", issuer = "{ISSUER}"}},\n'
                     f'  {{identity = "{EMAIL}", issuer = "{ISSUER}"}},\n]\n')
    report = check(model, policy)
    assert report.exit_code == 0, report.verification.errors
    assert report.verification.report is not None
    signer = report.verification.report["signer"]
    assert signer["kind"] == "sigstore" and signer["sigstore"]["identity"] == EMAIL
    # The right identity from another issuer is not the signer the policy trusts.
    policy = _policy(tmp_path, files + f'keyless = [{{identity = "{EMAIL}", '
                     'issuer = "https://accounts.example.com"}]\n')
    report = check(model, policy)
    assert report.exit_code == 1 and report.verification.status == "failed"
    assert [f.rule for f in report.findings if f.fails] == ["TF101"]
    assert "CertificateError" in report.verification.errors[0]
