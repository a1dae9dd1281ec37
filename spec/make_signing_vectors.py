"""Regenerate the signature conformance vectors in ``spec/signing-vectors/``.

    python spec/make_signing_vectors.py [OUTDIR]   # default: spec/signing-vectors beside this script

It needs ``blake3``, ``cryptography`` (43 or later, for deterministic ECDSA)
and model-signing 1.1.1 with pyOpenSSL (the test extra), which it runs on
every vector.

The output is one small model folder, ``model/`` (``config.json`` and
``model.safetensors``), the public key that signs every vector,
``key.pub.pem`` (a P-256 key derived from a constant: it protects nothing),
and one signature bundle per vector in ``bundles/``, ``NNN-short-name.sig``.
``expected.json`` records, for each bundle, what ``tensorfile verify model
--key key.pub.pem --signature bundles/NNN-...sig`` must do (spec/SIGNING.md
section 4 is the prose version of the same rules):

* ``"outcome": "verified"``, or the name of the
  :class:`~tensorfile.errors.IntegrityError` subclass it must raise;
* ``"model_signing": "accept" | "reject"``: what model-signing 1.1.1's
  ``verifying.Config().use_elliptic_key_verifier(...).verify`` does with the
  same model, key and bundle, found by running it. Where it differs from the
  outcome, the two verifiers disagree; ``"why"`` says why.

The bundles are written here from the OMS v1.0 format, not by tensorfile:
the vectors are an oracle for the implementation, so nothing in this script
imports it. Signatures use deterministic ECDSA (RFC 6979), so regenerating
reproduces the committed files byte for byte (a test checks).

A vector's number is its position in the list below: add new vectors at the
end, so that the numbers bug reports cite stay stable.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: The signing key of every vector, and a second key for "signed by someone else".
KEY = ec.derive_private_key(0x5157_1A7E_0000_0001, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x5157_1A7E_0000_0002, ec.SECP256R1())
PAYLOAD_TYPE = "application/vnd.in-toto+json"
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
IGNORED = [".git", ".gitattributes", ".github", ".gitignore", "model.sig"]


def safetensors_file() -> bytes:
    """Two tensors, written by hand: "a" F32 [2] and "b" U8 [3]."""
    header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' \
             '"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}'
    header += " " * (-len(header) % 8)
    data = struct.pack("<2f", 1.5, -2.0) + bytes([7, 8, 9])
    return struct.pack("<Q", len(header)) + header.encode() + data


FILES: dict[str, bytes] = {
    "config.json": b'{"hidden_size": 2}\n',
    "model.safetensors": safetensors_file(),
}


def digest(algorithm: str, data: bytes) -> str:
    if algorithm == "sha256":
        return hashlib.sha256(data).hexdigest()
    return blake3.blake3(data).hexdigest()


def parts(algorithm: str) -> dict[str, Any]:
    """The tensorfile extension entry of model.safetensors: header and tensor digests."""
    data = FILES["model.safetensors"]
    start = 8 + struct.unpack("<Q", data[:8])[0]
    return {
        "header": digest(algorithm, data[:start]),
        "tensors": {"a": digest(algorithm, data[start : start + 8]),
                    "b": digest(algorithm, data[start + 8 : start + 11])},
    }


def statement(file_algorithm: str = "sha256", tensor_algorithm: str | None = "blake3") -> dict[str, Any]:
    """A true statement about model/: its files' digests, the root digest over
    them and, unless ``tensor_algorithm`` is None, tensorfile's extension."""
    resources = [{"name": n, "algorithm": file_algorithm, "digest": digest(file_algorithm, b)}
                 for n, b in sorted(FILES.items())]
    predicate: dict[str, Any] = {
        "serialization": {"method": "files", "hash_type": file_algorithm,
                          "allow_symlinks": False, "ignore_paths": IGNORED},
        "resources": resources,
    }
    if tensor_algorithm is not None:
        predicate["tensorfile"] = {"version": 1, "algorithm": tensor_algorithm,
                                   "files": {"model.safetensors": parts(tensor_algorithm)}}
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": "model", "digest": {"sha256": root(resources)}}],
            "predicateType": PREDICATE_TYPE, "predicate": predicate}


def root(resources: list[dict[str, Any]]) -> str:
    return hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sig(payload: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return key.sign(pae(payload), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def public_pem(key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bundle(payload: bytes, signature: bytes | None = None, *, hint: str | None = None) -> dict[str, Any]:
    """A Sigstore bundle v0.3 holding ``payload`` signed by KEY (unless given)."""
    return {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hint or hashlib.sha256(public_pem()).hexdigest()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature or sig(payload)).decode(),
                            "keyid": ""}],
        },
    }


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode() + b"\n"


def signed(edit: Callable[[dict[str, Any]], object] | None = None, **kw: Any) -> bytes:
    """A bundle over ``statement(**kw)`` after ``edit``, signed by KEY."""
    st = statement(**kw)
    if edit is not None:
        edit(st)
    return dump(bundle(encode(st)))


def edited_bundle(edit: Callable[[dict[str, Any]], object]) -> bytes:
    """The default signed bundle with ``edit`` applied to the bundle itself."""
    doc = bundle(encode(statement()))
    edit(doc)
    return dump(doc)


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    outcome: str
    content: bytes
    why: str | None = None  # when model-signing is expected to differ


def _res(st: dict[str, Any]) -> list[dict[str, Any]]:
    return list(st["predicate"]["resources"])


def _drop_config(st: dict[str, Any]) -> None:
    st["predicate"]["resources"] = [r for r in _res(st) if r["name"] != "config.json"]
    st["subject"][0]["digest"]["sha256"] = root(st["predicate"]["resources"])


def _add_missing(st: dict[str, Any]) -> None:
    extra = {"name": "tokenizer.json", "algorithm": "sha256", "digest": "00" * 32}
    st["predicate"]["resources"] = sorted([*_res(st), extra], key=lambda r: r["name"])
    st["subject"][0]["digest"]["sha256"] = root(st["predicate"]["resources"])


def _wrong_config_digest(st: dict[str, Any]) -> None:
    st["predicate"]["resources"][0]["digest"] = digest("sha256", b"{}")
    st["subject"][0]["digest"]["sha256"] = root(st["predicate"]["resources"])


def _relabel_blake3(st: dict[str, Any]) -> None:
    st["predicate"]["serialization"]["hash_type"] = "blake3"
    for r in st["predicate"]["resources"]:
        r["algorithm"] = "blake3"


def _tampered_payload() -> bytes:
    good = encode(statement())
    st = statement()
    st["predicate"]["resources"][0]["digest"] = "ff" * 32
    bad = encode(st)
    return dump(bundle(bad, sig(good)))


def _duplicate_key_payload() -> bytes:
    raw = encode(statement())
    raw = raw.replace(b'{"_type":', b'{"_type":"x","_type":', 1)
    return dump(bundle(raw))


VECTORS: list[Vector] = [
    Vector("valid-blake3-tensor-digests", "what tensorfile sign writes: SHA-256 files, BLAKE3 "
           "header and tensor digests in the tensorfile extension", "verified", signed()),
    Vector("valid-sha256-tensor-digests", "the extension with SHA-256 digests "
           "(--tensor-algorithm sha256)", "verified", signed(tensor_algorithm="sha256")),
    Vector("valid-plain-oms", "no extension: what model-signing sign key writes", "verified",
           signed(tensor_algorithm=None)),
    Vector("valid-blake3-file-digests", "hash_type blake3 (model-signing's API with "
           "hashing_algorithm='blake3'; --file-algorithm blake3)", "verified",
           signed(file_algorithm="blake3", tensor_algorithm=None)),
    Vector("valid-blake3-everything", "BLAKE3 file digests and BLAKE3 tensor digests", "verified",
           signed(file_algorithm="blake3")),
    Vector("payload-edited-after-signing", "a resource digest changed, the old signature kept",
           "SignatureError", _tampered_payload()),
    Vector("signed-by-another-key", "a true statement signed by a key other than key.pub.pem, "
           "hint of the trusted key", "SignatureError",
           dump(bundle(encode(statement()), sig(encode(statement()), OTHER_KEY)))),
    Vector("hint-names-another-key", "signed by the trusted key but naming another key's hint",
           "SignatureError",
           dump(bundle(encode(statement()), hint=hashlib.sha256(public_pem(OTHER_KEY)).hexdigest()))),
    Vector("wrong-file-digest", "config.json's digest is wrong (root digest consistent)",
           "DigestMismatchError", signed(_wrong_config_digest)),
    Vector("wrong-root-digest", "the subject's root digest does not match the resources",
           "ManifestError",
           signed(lambda st: st["subject"][0]["digest"].update(sha256="00" * 32))),
    Vector("file-not-signed", "the statement leaves out config.json, which the folder holds",
           "UnexpectedFileError", signed(_drop_config)),
    Vector("signed-file-missing", "the statement names tokenizer.json, which the folder lacks",
           "MissingFileError", signed(_add_missing)),
    Vector("tensor-renamed-in-extension", "the extension names tensor 'c' instead of 'b'",
           "ManifestError",
           signed(lambda st: st["predicate"]["tensorfile"]["files"]["model.safetensors"]["tensors"]
                  .update(c=st["predicate"]["tensorfile"]["files"]["model.safetensors"]["tensors"]
                          .pop("b"))),
           why="model-signing ignores the tensorfile extension"),
    Vector("wrong-tensor-digest-in-extension", "tensor 'a' has a wrong digest in the extension",
           "ManifestError",
           signed(lambda st: st["predicate"]["tensorfile"]["files"]["model.safetensors"]["tensors"]
                  .update(a="ab" * 32)),
           why="model-signing ignores the tensorfile extension"),
    Vector("extension-algorithm-unknown", "the extension's algorithm is md5",
           "UnsupportedAlgorithmError",
           signed(lambda st: st["predicate"]["tensorfile"].update(algorithm="md5")),
           why="model-signing ignores the tensorfile extension"),
    Vector("extension-version-2", "an extension version tensorfile does not know",
           "UnsupportedAlgorithmError",
           signed(lambda st: st["predicate"]["tensorfile"].update(version=2)),
           why="model-signing ignores the tensorfile extension"),
    Vector("hash-type-blake2b", "file digests with hash_type blake2b", "UnsupportedAlgorithmError",
           signed(lambda st: (st["predicate"]["serialization"].update(hash_type="blake2b"),
                              [r.update(algorithm="blake2b") for r in st["predicate"]["resources"]]))),
    Vector("hash-type-disagrees-with-resources", "hash_type blake3 over sha256 resources",
           "BundleError",
           signed(lambda st: st["predicate"]["serialization"].update(hash_type="blake3"))),
    Vector("sha256-digests-relabelled-blake3", "hash_type and resources say blake3, the digests "
           "are SHA-256 ones", "DigestMismatchError", signed(_relabel_blake3)),
    Vector("predicate-v0.1", "model-signing 0.2's predicate type", "UnsupportedAlgorithmError",
           signed(lambda st: st.update(predicateType="https://model_signing/Digests/v0.1"))),
    Vector("serialization-shards", "the shards serialization", "UnsupportedAlgorithmError",
           signed(lambda st: st["predicate"]["serialization"].update(method="shards"))),
    Vector("resource-name-escapes", "a resource named ../config.json", "BundleError",
           signed(lambda st: st["predicate"]["resources"][0].update(name="../config.json"))),
    Vector("resource-listed-twice", "model.safetensors listed twice", "BundleError",
           signed(lambda st: st["predicate"]["resources"].append(
               copy.deepcopy(st["predicate"]["resources"][1])))),
    Vector("two-subjects", "a statement with two subjects", "BundleError",
           signed(lambda st: st["subject"].append(copy.deepcopy(st["subject"][0])))),
    Vector("duplicate-json-key", "the signed payload repeats the _type key", "BundleError",
           _duplicate_key_payload(),
           why="model-signing's JSON parser keeps the last of two equal keys; tensorfile refuses "
               "a payload that two parsers could read differently"),
    Vector("bundle-truncated", "the bundle cut in half", "BundleError",
           signed()[: len(signed()) // 2]),
    Vector("bundle-empty", "an empty signature file", "BundleError", b""),
    Vector("payload-type-unknown", "DSSE payloadType is not in-toto", "UnsupportedAlgorithmError",
           edited_bundle(lambda b: b["dsseEnvelope"].update(payloadType="text/plain"))),
    Vector("media-type-unknown", "a bundle media type tensorfile does not know",
           "UnsupportedAlgorithmError",
           edited_bundle(lambda b: b.update(mediaType="application/vnd.dev.sigstore.bundle.v9+json"))),
    Vector("payload-base64-not-strict", "the payload's base64 has a line break in it", "BundleError",
           edited_bundle(lambda b: b["dsseEnvelope"].update(
               payload=b["dsseEnvelope"]["payload"][:40] + "\n" + b["dsseEnvelope"]["payload"][40:])),
           why="model-signing's base64 decoder skips the line break; tensorfile decodes strictly"),
    Vector("two-signatures", "two DSSE signatures", "BundleError",
           edited_bundle(lambda b: b["dsseEnvelope"]["signatures"].append(
               copy.deepcopy(b["dsseEnvelope"]["signatures"][0]))),
           why="model-signing checks the first signature; tensorfile refuses an envelope with "
               "more than one"),
    Vector("signature-empty", "an empty DSSE signature", "BundleError",
           edited_bundle(lambda b: b["dsseEnvelope"]["signatures"][0].update(sig=""))),
]


def model_signing_outcome(model: Path, key: Path, bundle_path: Path) -> str:
    """What model-signing 1.1.1 does with one vector: accept or reject."""
    import model_signing as ms

    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(model, bundle_path)
    except Exception:  # any refusal is a rejection
        return "reject"
    return "accept"


def generate(outdir: Path) -> int:
    """Write the model, the key, every bundle and expected.json; returns the count."""
    model, bundles = outdir / "model", outdir / "bundles"
    model.mkdir(parents=True, exist_ok=True)
    bundles.mkdir(exist_ok=True)
    for old in bundles.glob("*.sig"):
        old.unlink()
    for name, content in FILES.items():
        (model / name).write_bytes(content)
    key = outdir / "key.pub.pem"
    key.write_bytes(public_pem())
    expected: dict[str, dict[str, Any]] = {}
    surprises = []
    for i, v in enumerate(VECTORS, 1):
        name = f"{i:03d}-{v.name}.sig"
        (bundles / name).write_bytes(v.content)
        entry: dict[str, Any] = {"description": v.description, "outcome": v.outcome}
        entry["model_signing"] = model_signing_outcome(model, key, bundles / name)
        agrees = (entry["model_signing"] == "accept") == (v.outcome == "verified")
        if agrees == (v.why is not None):
            surprises.append(f"{name}: model-signing says {entry['model_signing']}; "
                             f"{'no' if v.why is None else 'a'} disagreement was expected")
        if v.why is not None:
            entry["why"] = v.why
        expected[name] = entry
    if surprises:
        raise SystemExit("\n".join(surprises))
    (outdir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="ascii")
    return len(VECTORS)


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "signing-vectors"
    count = generate(outdir)
    print(f"wrote {count} signature vectors, the model, key.pub.pem and expected.json to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
