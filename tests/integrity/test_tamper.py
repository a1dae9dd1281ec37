"""The tamper matrix: every change to a signed model fails with the right error."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tensorfile._format.header import parse
from tensorfile.errors import (
    BundleError,
    DigestMismatchError,
    IntegrityError,
    ManifestError,
    MissingFileError,
    ModelPathError,
    NotSignedError,
    SignatureError,
    UnexpectedFileError,
    UnsupportedAlgorithmError,
)
from tensorfile.integrity import hash_model, sign, verify
from tensorfile.integrity.bundle import Bundle, pae
from tensorfile.integrity.keys import key_hint, load_private_key, sign_bytes

SHARD = "model-00001-of-00002.safetensors"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def replace_same_length(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    data = path.read_bytes()
    assert data.count(old) == 1, (old, data[:200])
    path.write_bytes(data.replace(old, new))


def data_offset(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def tensor_offset(path: Path, name: str) -> int:
    """Absolute file offset of a tensor's first byte."""
    hdr = parse(path.read_bytes())
    return hdr.data_offset + hdr.tensors[name].start


@pytest.fixture(params=["blake3", "sha256"])
def signed(model: Path, p256: Any, request: pytest.FixtureRequest) -> Path:
    """The model signed with header and tensor digests of each algorithm."""
    sign(model, p256.private, tensor_algorithm=request.param)
    return model


def test_untampered_model_verifies(signed: Path, p256: Any) -> None:
    r = verify(signed, p256.public)
    assert r.verified
    assert r.files == (
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer/vocab.txt",
    )
    assert r.tensors == 5 + 4
    assert r.signer.kind == "key" and r.signer.algorithm == "ecdsa-p256-sha256"
    assert r.bytes_hashed == sum(
        (signed / f).stat().st_size for f in r.files
    )
    assert r.to_dict()["files_checked"] == 4
    # The safetensors files are checked by their header and tensor digests.
    assert r.by_file_digest == ("config.json", "tokenizer/vocab.txt")
    assert r.tensor_digests_checked
    deep = verify(signed, p256.public, deep=True)
    assert deep.tensor_digests_checked and deep.tensors == 9
    assert deep.by_file_digest == r.files
    assert deep.bytes_hashed == r.bytes_hashed + sum(
        (signed / f).stat().st_size for f in r.files if f.endswith(".safetensors")
    )


# ------------------------------------------------------------------ bytes changed


def _tamper_header(m: Path) -> None:
    flip(m / SHARD, 8 + 3)


def _tamper_tensor(m: Path) -> None:
    flip(m / SHARD, tensor_offset(m / SHARD, "layer.2.weight") + 40)


def _tamper_metadata(m: Path) -> None:
    replace_same_length(m / SHARD, b'"seed":"0"', b'"seed":"1"')


def _tamper_config(m: Path) -> None:
    replace_same_length(m / "config.json", b'"layers": 5', b'"layers": 6')


def _rename_tensor(m: Path) -> None:
    replace_same_length(m / SHARD, b"layer.1.weight", b"layer.1.weighT")


def _truncate(m: Path) -> None:
    p = m / SHARD
    p.write_bytes(p.read_bytes()[:-4])


def _append(m: Path) -> None:
    with open(m / SHARD, "ab") as f:
        f.write(b"\0\0\0\0")


def _tamper_vocab(m: Path) -> None:
    (m / "tokenizer" / "vocab.txt").write_text("a\nb\nd\n")


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_tamper_header, SHARD),
        (_tamper_tensor, "tensor data changed: 'layer.2.weight'"),
        (_tamper_metadata, "header does not hash to the signed"),
        (_tamper_config, "config.json"),
        (_rename_tensor, "renamed"),
        (_truncate, SHARD),
        (_append, SHARD),
        (_tamper_vocab, "tokenizer/vocab.txt"),
    ],
)
def test_changed_bytes_fail(
    signed: Path, p256: Any, tamper: Callable[[Path], None], says: str
) -> None:
    tamper(signed)
    with pytest.raises(DigestMismatchError, match="contents differ") as e:
        verify(signed, p256.public)
    assert says in str(e.value)


def test_tensor_flip_names_the_tensor(signed: Path, p256: Any) -> None:
    flip(signed / SHARD, tensor_offset(signed / SHARD, "embed") + 3)
    with pytest.raises(DigestMismatchError) as e:
        verify(signed, p256.public)
    assert "tensor data changed: 'embed'" in str(e.value)
    assert "header changed" not in str(e.value) and "layer" not in str(e.value)


# ------------------------------------------------------------------ files added, removed, renamed


def test_added_file_fails_unless_allowed(signed: Path, p256: Any) -> None:
    (signed / "extra.bin").write_bytes(b"x")
    with pytest.raises(UnexpectedFileError, match=r"extra\.bin"):
        verify(signed, p256.public)
    r = verify(signed, p256.public, allow_extra_files=True)
    assert r.extra_files == ("extra.bin",)
    assert "extra.bin" not in r.files


def test_added_file_in_subfolder_fails(signed: Path, p256: Any) -> None:
    (signed / "tokenizer" / "merges.txt").write_text("x")
    with pytest.raises(UnexpectedFileError, match=r"tokenizer/merges\.txt"):
        verify(signed, p256.public)


def test_vcs_folders_are_ignored(signed: Path, p256: Any) -> None:
    (signed / ".git").mkdir()
    (signed / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (signed / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    assert verify(signed, p256.public).files_checked == 4


def test_removed_file_fails(signed: Path, p256: Any) -> None:
    (signed / "config.json").unlink()
    with pytest.raises(MissingFileError, match=r"config\.json"):
        verify(signed, p256.public)


def test_renamed_file_fails(signed: Path, p256: Any) -> None:
    (signed / "config.json").rename(signed / "config2.json")
    with pytest.raises(MissingFileError, match=r"config\.json.*config2\.json.*renamed"):
        verify(signed, p256.public)


def test_swapped_signatures_fail(
    tmp_path: Path, p256: Any, make_model: Callable[[Path, int], Path]
) -> None:
    a = make_model(tmp_path / "a", 1)
    b = make_model(tmp_path / "b", 2)
    sign(a, p256.private)
    sign(b, p256.private)
    sig_a = (a / "model.sig").read_bytes()
    (a / "model.sig").write_bytes((b / "model.sig").read_bytes())
    (b / "model.sig").write_bytes(sig_a)
    for m in (a, b):
        with pytest.raises(DigestMismatchError):
            verify(m, p256.public)


def test_symlink_in_model_is_refused(signed: Path, p256: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (signed / "link.txt").symlink_to(outside)
    with pytest.raises(ModelPathError, match="symlink"):
        verify(signed, p256.public, allow_extra_files=True)
    with pytest.raises(ModelPathError, match="outside the model folder"):
        verify(signed, p256.public, allow_extra_files=True, allow_symlinks=True)


# ------------------------------------------------------------------ keys


@pytest.mark.parametrize("other", ["other-ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519"])
def test_wrong_key_or_curve_fails(
    signed: Path, keys: Callable[[str], Any], other: str
) -> None:
    with pytest.raises(SignatureError, match="different key"):
        verify(signed, keys(other).public)


def test_wrong_key_without_hint_fails_on_signature(
    signed: Path, keys: Callable[[str], Any]
) -> None:
    sig = signed / "model.sig"
    doc = json.loads(sig.read_text())
    doc["verificationMaterial"]["publicKey"] = {}
    sig.write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match="does not verify"):
        verify(signed, keys("other-ecdsa-p256").public)


@pytest.mark.parametrize("kind", ["ecdsa-p384", "ecdsa-p521", "ed25519"])
def test_other_key_types_round_trip(model: Path, keys: Callable[[str], Any], kind: str) -> None:
    sign(model, keys(kind).private)
    assert verify(model, keys(kind).public).signer.algorithm.startswith(kind.split("-")[0])
    flip(model / "config.json", 2)
    with pytest.raises(DigestMismatchError):
        verify(model, keys(kind).public)


# ------------------------------------------------------------------ payload and bundle


def _payload(sig: Path) -> dict[str, Any]:
    doc = json.loads(sig.read_text())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def _set_payload(sig: Path, statement: dict[str, Any]) -> None:
    doc = json.loads(sig.read_text())
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(doc))


def test_edited_payload_with_old_signature_fails(signed: Path, p256: Any) -> None:
    """An attacker changes a file and rewrites its digest (and the root) in the payload."""
    _tamper_config(signed)
    st = _payload(signed / "model.sig")
    manifest = hash_model(signed, signature=signed / "model.sig")
    st["predicate"]["resources"] = manifest.to_statement()["predicate"]["resources"]
    st["subject"][0]["digest"]["sha256"] = manifest.root_digest
    _set_payload(signed / "model.sig", st)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(signed, p256.public)


def _sign_statement(sig: Path, statement: dict[str, Any], key: Path) -> None:
    """Sign an arbitrary statement properly (the signer is trusted, the content is off)."""
    payload = json.dumps(statement).encode()
    priv = load_private_key(key)
    sig.write_bytes(Bundle(payload, sign_bytes(priv, pae(payload)), key_hint(priv.public_key()))
                    .to_json())


def test_signed_payload_with_wrong_root_fails(signed: Path, p256: Any) -> None:
    st = _payload(signed / "model.sig")
    st["subject"][0]["digest"]["sha256"] = "0" * 64
    _sign_statement(signed / "model.sig", st, p256.private)
    with pytest.raises(ManifestError, match="root digest"):
        verify(signed, p256.public)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda st: st["predicate"]["resources"][0].update(algorithm="blake2b"),
         UnsupportedAlgorithmError),
        (lambda st: st["predicate"]["serialization"].update(method="shards"),
         UnsupportedAlgorithmError),
        (lambda st: st["predicate"]["serialization"].update(hash_type="blake2b"),
         UnsupportedAlgorithmError),
        (lambda st: st["predicate"]["serialization"].update(hash_type="blake3"), BundleError),
        # SHA-256 file digests relabelled as BLAKE3 (root digest unchanged): the
        # bytes are hashed with BLAKE3 and do not match.
        (lambda st: (st["predicate"]["serialization"].update(hash_type="blake3"),
                     [r.update(algorithm="blake3") for r in st["predicate"]["resources"]]),
         DigestMismatchError),
        (lambda st: st.update(predicateType="https://model_signing/Digests/v0.1"),
         UnsupportedAlgorithmError),
        (lambda st: st["predicate"]["tensorfile"].update(version=2), UnsupportedAlgorithmError),
        (lambda st: st["predicate"]["tensorfile"].update(algorithm="md5"),
         UnsupportedAlgorithmError),
        # The other algorithm's name over the same digests: the headers no
        # longer hash to the signed header digests, which verify compares
        # before hashing any data (issue 22: a swapped 4 GiB file must not be
        # hashed to find that out), so it cannot blame the signer instead.
        (lambda st: st["predicate"]["tensorfile"].update(
            algorithm={"blake3": "sha256", "sha256": "blake3"}[st["predicate"]["tensorfile"]["algorithm"]]),
         DigestMismatchError),
        (lambda st: st["predicate"]["resources"][0].update(name="../etc/passwd"), BundleError),
        (lambda st: st["predicate"]["resources"].append(st["predicate"]["resources"][0]),
         BundleError),
        (lambda st: st.update(subject=[]), BundleError),
        (lambda st: st["predicate"].update(resources="x"), BundleError),
        (lambda st: st["predicate"]["tensorfile"]["files"].update({"nope.safetensors": {}}),
         ManifestError),
    ],
)
def test_signed_but_unverifiable_payload_fails(
    signed: Path, p256: Any, edit: Callable[[dict[str, Any]], None], error: type[Exception]
) -> None:
    st = _payload(signed / "model.sig")
    edit(st)
    _sign_statement(signed / "model.sig", st, p256.private)
    with pytest.raises(error):
        verify(signed, p256.public)


def test_wrong_tensor_digest_in_extension_fails(signed: Path, p256: Any) -> None:
    """A signer that recorded a wrong tensor digest: the file's bytes match its
    signed SHA-256, so it is the signature that is wrong (ManifestError, not
    a digest mismatch), with or without deep verification."""
    st = _payload(signed / "model.sig")
    st["predicate"]["tensorfile"]["files"][SHARD]["tensors"]["embed"] = "ab" * 32
    _sign_statement(signed / "model.sig", st, p256.private)
    for deep in (False, True):
        with pytest.raises(ManifestError, match=r"matches its signed file digest.*'embed'"):
            verify(signed, p256.public, deep=deep)


def _bundle_edits() -> list[tuple[str, Callable[[bytes], bytes], type[Exception]]]:
    def doc_edit(f: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
        def run(raw: bytes) -> bytes:
            d = json.loads(raw)
            f(d)
            return json.dumps(d).encode()
        return run

    return [
        ("truncated", lambda raw: raw[: len(raw) // 2], BundleError),
        ("empty", lambda raw: b"", BundleError),
        ("not-utf8", lambda raw: b"\xff" + raw, BundleError),
        ("array", lambda raw: b"[]", BundleError),
        ("duplicate-key", lambda raw: raw.replace(b'"mediaType"', b'"mediaType": "x", "mediaType"', 1),
         BundleError),
        ("nan", lambda raw: raw.replace(b'"tlogEntries": []', b'"tlogEntries": NaN', 1),
         BundleError),
        ("unsigned", doc_edit(lambda d: d["dsseEnvelope"].update(signatures=[])), BundleError),
        ("empty-sig", doc_edit(lambda d: d["dsseEnvelope"]["signatures"][0].update(sig="")),
         BundleError),
        ("two-sigs", doc_edit(lambda d: d["dsseEnvelope"]["signatures"].append(
            d["dsseEnvelope"]["signatures"][0])), BundleError),
        ("bad-base64", doc_edit(lambda d: d["dsseEnvelope"].update(payload="abc$")), BundleError),
        ("sig-not-str", doc_edit(lambda d: d["dsseEnvelope"]["signatures"][0].update(sig=5)),
         BundleError),
        ("no-envelope", doc_edit(lambda d: d.pop("dsseEnvelope")), BundleError),
        ("no-material", doc_edit(lambda d: d.update(verificationMaterial={})), BundleError),
        ("media-type", doc_edit(lambda d: d.update(mediaType="application/x")),
         UnsupportedAlgorithmError),
        ("payload-type", doc_edit(lambda d: d["dsseEnvelope"].update(payloadType="text/plain")),
         UnsupportedAlgorithmError),
        ("payload-not-json", doc_edit(lambda d: d["dsseEnvelope"].update(
            payload=base64.b64encode(b"{nope").decode())), SignatureError),
    ]


@pytest.mark.parametrize(("name", "edit", "error"), _bundle_edits(), ids=lambda x: x if isinstance(x, str) else "")
def test_malformed_bundle_fails(
    signed: Path, p256: Any, name: str, edit: Callable[[bytes], bytes], error: type[Exception]
) -> None:
    sig = signed / "model.sig"
    sig.write_bytes(edit(sig.read_bytes()))
    with pytest.raises(error):
        verify(signed, p256.public)


def test_unparseable_payload_that_is_signed_is_a_bundle_error(signed: Path, p256: Any) -> None:
    priv = load_private_key(p256.private)
    payload = b"{not json"
    (signed / "model.sig").write_bytes(
        Bundle(payload, sign_bytes(priv, pae(payload)), key_hint(priv.public_key())).to_json())
    with pytest.raises(BundleError, match="not valid JSON"):
        verify(signed, p256.public)


def test_oversized_bundle_is_refused(
    signed: Path, p256: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorfile.integrity.bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_SIZE", 100)
    with pytest.raises(BundleError, match="over 100"):
        verify(signed, p256.public)


def test_missing_signature_is_not_signed(model: Path, p256: Any) -> None:
    with pytest.raises(NotSignedError, match="no signature file"):
        verify(model, p256.public)


def test_every_failure_is_an_integrity_error(signed: Path, p256: Any) -> None:
    """Callers that catch IntegrityError see every verification failure."""
    for cls in (BundleError, SignatureError, DigestMismatchError, MissingFileError,
                NotSignedError, ManifestError, UnsupportedAlgorithmError, ModelPathError):
        assert issubclass(cls, IntegrityError)


# ------------------------------------------------------------------ single-file models


def test_single_file_model(single: Path, p256: Any) -> None:
    sig = sign(single, p256.private)
    assert sig == single.parent / "model.sig"
    r = verify(single, p256.public)
    assert r.files == (".",) and r.model_name == single.name and r.tensors == 5
    flip(single, data_offset(single) + 1)
    with pytest.raises(DigestMismatchError, match="tensor data changed"):
        verify(single, p256.public)


def test_folder_signature_verifies_one_of_its_files(signed: Path, p256: Any, tmp_path: Path) -> None:
    """A shard checked alone against its folder's signature, as verify-on-load
    does (issue 21); a file the folder's signature does not name is not signed."""
    report = verify(signed / SHARD, p256.public, signature=signed / "model.sig")
    assert report.files == (SHARD,) and report.part_of == str(signed)
    stranger = tmp_path / SHARD
    shutil.copy(signed / SHARD, stranger)
    with pytest.raises(NotSignedError, match="not one of them"):
        verify(stranger, p256.public, signature=signed / "model.sig")


def test_signature_outside_the_folder(model: Path, p256: Any, tmp_path: Path) -> None:
    sig = sign(model, p256.private, tmp_path / "elsewhere.sig")
    assert not (model / "model.sig").exists()
    assert verify(model, p256.public, signature=sig).files_checked == 4
    shutil.copy(sig, model / "model.sig")  # a copy inside is ignored as the signature file
    assert verify(model, p256.public).files_checked == 4
    os.remove(model / "model.sig")


@pytest.mark.parametrize(
    "leftover", [".model.sig.k3j_9x0a.tmp", "tokenizer/.vocab.txt.abcdefgh.tmp"]
)
def test_temporary_files_of_an_interrupted_write_neither_block_sign_nor_fail_verify(
    model: Path, p256: Any, leftover: str
) -> None:
    """A sign, save or convert killed before its rename leaves a temporary file
    (issue 22 item 5): the next sign removes it (no process holds it) and never
    makes it part of the model; one that appears later (a write in progress,
    another kill) is not an unsigned file for verify."""
    (model / leftover).write_bytes(b"half a signature")
    sign(model, p256.private)
    assert not (model / leftover).exists()
    assert verify(model, p256.public).verified
    (model / leftover).write_bytes(b"half a signature")
    assert verify(model, p256.public).verified
    (model / leftover).unlink()


def test_swapped_file_fails_before_its_data_is_hashed(
    signed: Path, p256: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed shard replaced by a valid 4 GiB sparse file (19.7 s to hash,
    then again to explain) fails on its header digest, no data hashed."""
    import importlib

    verifying = importlib.import_module("tensorfile.integrity.verify")
    text = json.dumps({"embed": {"dtype": "U8", "shape": [4 << 30], "data_offsets": [0, 4 << 30]}})
    text += " " * (-len(text) % 8)
    with open(signed / SHARD, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text.encode())
        f.truncate(8 + len(text) + (4 << 30))

    def no_hashing(*_: object, **__: object) -> None:
        raise AssertionError("tensor data was hashed")

    monkeypatch.setattr(verifying, "hash_contents", no_hashing)
    monkeypatch.setattr(verifying, "hash_file", no_hashing)
    with pytest.raises(DigestMismatchError, match=rf"{re.escape(SHARD)}.*header does not hash") as e:
        verify(signed, p256.public)
    assert "renamed, added or removed" in str(e.value)  # the signed shard has more tensors
