"""Fuzz signature verification: bundle parsing, statements, and tampered files.

A fixed model folder (``model.safetensors`` and ``config.json``) is signed
once per process with a fixed test key (derived from a constant: it protects
nothing). The first input byte picks what the rest of the input replaces:

* ``0`` the signature file (``model.sig``) — bundle parsing and checking;
* ``1`` ``model.safetensors`` — also opened with verify-on-load and read whole;
* ``2`` ``config.json``;
* ``3`` the signed statement: the harness signs the input with the trusted
  key, so the statement parser and the manifest checks see hostile JSON
  that carries a valid signature.

Contract: only :class:`~tensorfile.errors.TensorfileError` escapes, and a
verification succeeds only when nothing that matters changed — checked
independently of tensorfile (``hashlib`` digests, the ``cryptography``
package's ECDSA check over the DSSE pre-authentication encoding):

* a replaced file verifies only if its bytes are the signed bytes, and
  verify-on-load hands out tensors only if the file is the signed file;
* a replaced bundle verifies only if it carries a signature by the trusted
  key over its statement, and that statement names exactly the folder's files
  with their true digests (the trusted key signed several true statements:
  BLAKE3 and SHA-256 tensor digests, BLAKE3 file digests);
* a signed statement verifies only if it names exactly the folder's files
  with their true digests (SHA-256 or BLAKE3, as each resource says).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import blake3
import fuzzlib
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile import safe_open, save
    from tensorfile.errors import TensorfileError
    from tensorfile.integrity import TrustPolicy, sign, verify
    from tensorfile.integrity.bundle import Bundle

#: Fixed test keys: seeds hold bundles they signed, so they must not change.
TRUSTED = ec.derive_private_key(0x7E57_F11E_5EED_0001, ec.SECP256R1())
OTHER = ec.derive_private_key(0x7E57_F11E_5EED_0002, ec.SECP256R1())
PUBLIC = TRUSTED.public_key()
PAYLOAD_TYPE = "application/vnd.in-toto+json"

MODEL = save(
    {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int16)},
    {"format": "np"},
)
CONFIG = b'{"hidden_size": 3}\n'
FILES = {"model.safetensors": MODEL, "config.json": CONFIG}
MODES = ("bundle", "model", "config", "statement")


def pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding, written here from the DSSE spec."""
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


class Fixture:
    """The signed model folder, restored before every input."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tensorfile-fuzz-verify-")) / "model"
        self.root.mkdir()
        self.sig = self.root / "model.sig"
        self.restore()
        sign(self.root, TRUSTED, self.sig)
        self.bundle = self.sig.read_bytes()
        self.payload = Bundle.from_json(self.bundle).payload

    def restore(self) -> None:
        for p in self.root.iterdir():
            if p.name not in FILES and p != self.sig:
                p.unlink()
        for name, blob in FILES.items():
            (self.root / name).write_bytes(blob)
        if hasattr(self, "bundle"):
            self.sig.write_bytes(self.bundle)


_fixture: Fixture | None = None


def fixture() -> Fixture:
    global _fixture
    if _fixture is None:
        _fixture = Fixture()
    return _fixture


def _signed_by_trusted_key(bundle: Bundle) -> bool:
    try:
        PUBLIC.verify(bundle.signature, pae(bundle.payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


#: File digests a statement may use, computed here independently of tensorfile.
_DIGESTS = {
    "sha256": lambda blob: hashlib.sha256(blob).hexdigest(),
    "blake3": lambda blob: blake3.blake3(blob).hexdigest(),
}


def _names_true_digests(statement: bytes) -> bool:
    doc: Any = json.loads(statement)
    named = {r["name"]: (r["algorithm"], r["digest"]) for r in doc["predicate"]["resources"]}
    if set(named) != set(FILES):
        return False
    return all(alg in _DIGESTS and _DIGESTS[alg](FILES[name]) == digest
               for name, (alg, digest) in named.items())


def _read_verified(fx: Fixture) -> None:
    """Open the model with verify-on-load and read every tensor."""
    policy = TrustPolicy(key=PUBLIC, signature=fx.sig)
    with safe_open(fx.root / "model.safetensors", verify=policy) as f:
        for name in f.keys():
            f.get_tensor(name)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, body = MODES[data[0] % len(MODES)], data[1:]
    fx = fixture()
    fx.restore()
    if mode == "bundle":
        fx.sig.write_bytes(body)
    elif mode == "model":
        (fx.root / "model.safetensors").write_bytes(body)
    elif mode == "config":
        (fx.root / "config.json").write_bytes(body)
    else:
        sig = TRUSTED.sign(pae(body), ec.ECDSA(hashes.SHA256()))
        fx.sig.write_bytes(Bundle(payload=body, signature=sig).to_json())
    try:
        verify(fx.root, key=PUBLIC, deep=True)
        verified = True
    except TensorfileError:
        verified = False
    if verified:
        if mode == "bundle":
            got = Bundle.from_json(body)
            assert _signed_by_trusted_key(got), "a bundle not signed by the trusted key verified"
            assert _names_true_digests(got.payload), "a bundle with wrong digests verified"
        elif mode == "model":
            assert body == MODEL, "a tampered model.safetensors verified"
        elif mode == "config":
            assert body == CONFIG, "a tampered config.json verified"
        else:
            assert _names_true_digests(body), "a statement with wrong digests verified"
    if mode == "model":
        try:
            _read_verified(fx)
        except TensorfileError:
            return
        assert body == MODEL, "verify-on-load handed out tensors of a tampered file"


if __name__ == "__main__":
    fuzzlib.main(TestOneInput, "verify")
