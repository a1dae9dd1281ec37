"""The bundle codec: round trips, and hostile signature files never crash or pass."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorfile.errors import IntegrityError
from tensorfile.integrity import sign, verify
from tensorfile.integrity.bundle import Bundle, pae, read_bundle


def test_pae_matches_dsse_spec() -> None:
    assert pae(b"hello", "t") == b"DSSEv1 1 t 5 hello"
    assert pae(b"{}") == b"DSSEv1 28 application/vnd.in-toto+json 2 {}"


@given(
    payload=st.binary(max_size=200),
    sig=st.binary(min_size=1, max_size=80),
    certs=st.lists(st.binary(min_size=1, max_size=40), max_size=3),
    hint=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
)
def test_bundle_json_round_trip(
    payload: bytes, sig: bytes, certs: list[bytes], hint: str | None
) -> None:
    b = Bundle(payload, sig, None if certs else hint, tuple(certs))
    assert Bundle.from_json(b.to_json()) == b


def test_written_bundle_shape(model: Path, p256: Any) -> None:
    """Exactly the layout model-signing 1.1.1 writes for key-based signing."""
    doc = json.loads(sign(model, p256.private).read_text())
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert set(doc["verificationMaterial"]) == {"publicKey", "tlogEntries"}
    assert doc["verificationMaterial"]["tlogEntries"] == []
    env = doc["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert [set(s) for s in env["signatures"]] == [{"sig", "keyid"}]
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"][0]["name"] == "model"
    assert statement["predicate"]["serialization"]["method"] == "files"
    assert statement["predicate"]["tensorfile"]["version"] == 1


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> tuple[Path, Path, bytes]:
    import numpy as np

    from tensorfile.numpy import save_file

    m = tmp_path_factory.mktemp("fuzz") / "m"
    m.mkdir()
    save_file({"w": np.arange(6, dtype=np.float32)}, m / "w.safetensors")
    k = keys("ecdsa-p256")
    sig = sign(m, k.private)
    return m, k.public, sig.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bundles_fail_closed(data: st.DataObject, signed_model: tuple[Path, Path, bytes]) -> None:
    """Any bit flip, truncation or insertion: an IntegrityError, or (if the change
    only touched something unsigned and ignored, like the name of the optional key
    hint or of tlogEntries) a bundle with exactly the original payload and signature."""
    model, pub, original = signed_model
    raw = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del raw[pos:]
    else:
        raw.insert(pos, data.draw(st.integers(0, 255)))
    sig = model / "model.sig"
    sig.write_bytes(bytes(raw))
    try:
        try:
            verify(model, pub)
        except IntegrityError:
            return
        got, want = read_bundle(sig), Bundle.from_json(original)
        assert (got.payload, got.signature, got.certificates) == (
            want.payload, want.signature, want.certificates)
        assert got.key_hint in (None, want.key_hint)  # the unsigned hint is only a pre-check
    finally:
        sig.write_bytes(original)
