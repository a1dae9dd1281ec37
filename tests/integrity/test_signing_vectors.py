"""Run every signature conformance vector in spec/signing-vectors/ through tensorfile.

``expected.json`` says, for each bundle, what verifying ``model/`` with
``key.pub.pem`` must do: ``"verified"`` or the exact IntegrityError subclass
(spec/SIGNING.md section 4 has the rules in prose). model-signing 1.1.1 must
still do what ``"model_signing"`` records, and every vector where it differs
from the outcome carries a ``"why"``. The bundles were written by
spec/make_signing_vectors.py without tensorfile; regenerating them must
reproduce the committed files byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import tensorfile.errors as errors
from tensorfile.integrity import verify

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "signing-vectors"
MODEL, KEY = VECTORS / "model", VECTORS / "key.pub.pem"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "expected.json").read_text("ascii"))


def outcome(bundle: Path, model: Path = MODEL) -> str:
    try:
        verify(model, KEY, signature=bundle)
    except errors.IntegrityError as e:
        return type(e).__name__
    return "verified"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector(name: str) -> None:
    assert outcome(VECTORS / "bundles" / name) == EXPECTED[name]["outcome"]


def test_the_set_covers_every_verdict() -> None:
    """Valid bundles of each digest combination, and every error class verify can raise
    for a bad bundle or statement (the file-level errors are in test_tamper.py)."""
    outcomes = {e["outcome"] for e in EXPECTED.values()}
    assert outcomes >= {
        "verified", "SignatureError", "DigestMismatchError", "ManifestError", "BundleError",
        "UnsupportedAlgorithmError", "MissingFileError", "UnexpectedFileError",
    }
    for e in EXPECTED.values():
        assert e["outcome"] == "verified" or issubclass(getattr(errors, e["outcome"]),
                                                          errors.IntegrityError)
        assert ("why" in e) == ((e["model_signing"] == "accept") != (e["outcome"] == "verified"))


def test_valid_vectors_fail_once_the_model_changes(tmp_path: Path) -> None:
    """The valid vectors are not valid by accident: one changed byte of the
    weights fails every one of them."""
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "model.safetensors").write_bytes(bytes(data))
    valid = [n for n, e in EXPECTED.items() if e["outcome"] == "verified"]
    assert len(valid) >= 5
    for name in valid:
        assert outcome(VECTORS / "bundles" / name, model) == "DigestMismatchError", name


@pytest.mark.skipif(
    importlib.util.find_spec("model_signing") is None or importlib.util.find_spec("OpenSSL") is None,
    reason="needs model-signing and pyOpenSSL (the test extra)",
)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_signing_still_agrees(name: str) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "spec"))
    try:
        from make_signing_vectors import model_signing_outcome
    finally:
        sys.path.remove(str(ROOT / "spec"))
    assert model_signing_outcome(MODEL, KEY, VECTORS / "bundles" / name) == EXPECTED[name]["model_signing"]


def test_regenerating_reproduces_the_committed_vectors(tmp_path: Path) -> None:
    if importlib.util.find_spec("model_signing") is None or importlib.util.find_spec("OpenSSL") is None:
        pytest.skip("needs model-signing and pyOpenSSL (the test extra)")
    import sys

    sys.path.insert(0, str(ROOT / "spec"))
    try:
        import make_signing_vectors
    finally:
        sys.path.remove(str(ROOT / "spec"))
    make_signing_vectors.generate(tmp_path)
    committed = sorted(p.relative_to(VECTORS) for p in VECTORS.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh == committed
    for rel in committed:
        assert (tmp_path / rel).read_bytes() == (VECTORS / rel).read_bytes(), rel
