"""keygen, hash, sign and verify from the command line (in process and as a subprocess)."""

from __future__ import annotations

import datetime
import hashlib
import shutil
import stat
from pathlib import Path
from typing import Any

import blake3
import pytest


@pytest.fixture
def model(tmp_path: Path, st_file: Path) -> Path:
    """A model folder: weights, a config and a tokenizer file."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    shutil.copy(st_file, folder / "model.safetensors")
    (folder / "config.json").write_text('{"hidden": 4}')
    (folder / "tokenizer.json").write_text('{"vocab": {}}')
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    from tensorfile.integrity import generate_key

    pair = generate_key(tmp_path / "k.pem")
    return pair.private_key, pair.public_key


@pytest.fixture
def signed(model: Path, keys: tuple[Path, Path]) -> Path:
    """``model`` signed through the library (set-up for the verify tests)."""
    from tensorfile.integrity import sign

    sign(model, keys[0])
    return model


# -- keygen -------------------------------------------------------------------------------
def test_keygen_writes_a_pair(cli: Any, tmp_path: Path, json_of: Any) -> None:
    priv = tmp_path / "sk.pem"
    r = cli(["keygen", str(priv), "--json"])
    res = json_of(r, "keygen", 0)
    assert res["private_key"] == str(priv) and res["public_key"] == f"{priv}.pub"
    assert res["algorithm"].startswith("ecdsa-p256") and not res["encrypted"]
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in priv.read_bytes()
    assert b"PUBLIC KEY" in Path(f"{priv}.pub").read_bytes()
    assert len(res["fingerprint"]) == 64


def test_keygen_human_output_says_how_to_use_the_keys(cli: Any, tmp_path: Path) -> None:
    priv = tmp_path / "sk.pem"
    r = cli(["keygen", str(priv), "--type", "ed25519", "--public-key", str(tmp_path / "pub.pem")])
    assert r.code == 0
    assert "ed25519" in r.stdout
    assert f"tensorfile verify MODEL --key {tmp_path / 'pub.pem'}" in r.stdout


def test_keygen_refuses_to_overwrite(cli: Any, tmp_path: Path, error_line: Any) -> None:
    priv = tmp_path / "sk.pem"
    assert cli(["keygen", str(priv), "-q"]).code == 0
    before = priv.read_bytes()
    r = cli(["keygen", str(priv)])
    assert r.code == 2
    assert "already exists" in error_line(r, "keygen")
    assert priv.read_bytes() == before
    assert cli(["keygen", str(priv), "--overwrite", "-q"]).code == 0
    assert priv.read_bytes() != before


def test_keygen_encrypt_without_a_terminal_or_password_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    r = cli(["keygen", str(tmp_path / "k.pem"), "--encrypt"])
    assert r.code == 2 and "--password-file" in r.stderr
    assert not (tmp_path / "k.pem").exists()


def test_keygen_unknown_type_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    r = cli(["keygen", str(tmp_path / "k"), "--type", "rsa"])
    assert r.code == 2 and not (tmp_path / "k").exists()


def test_encrypted_key_needs_its_password(cli: Any, model: Path, tmp_path: Path, error_line: Any) -> None:
    priv = tmp_path / "enc.pem"
    env = {"TENSORFILE_KEY_PASSWORD": "correct horse"}
    assert cli(["keygen", str(priv), "--encrypt", "-q"], env=env).code == 0
    assert b"ENCRYPTED" in priv.read_bytes()
    r = cli(["sign", str(model), "--key", str(priv)])
    assert r.code == 2
    assert str(priv) in error_line(r, "sign")
    assert not (model / "model.sig").exists()
    pw = tmp_path / "pw.txt"
    pw.write_text("correct horse\n")
    assert cli(["sign", str(model), "--key", str(priv), "--password-file", str(pw), "-q"]).code == 0
    assert (model / "model.sig").exists()


# -- hash -------------------------------------------------------------------------------
def test_hash_file_matches_hashlib(cli: Any, st_file: Path, json_of: Any) -> None:
    digest = hashlib.sha256(st_file.read_bytes()).hexdigest()
    res = json_of(cli(["hash", str(st_file), "--json"]), "hash", 0)
    assert [f["sha256"] for f in res["files"]] == [digest]
    assert set(res["files"][0]["tensors"]) == {"encoder.weight", "step"}
    human = cli(["hash", str(st_file)])
    assert human.code == 0 and digest in human.stdout and res["root_digest"] in human.stdout


def test_hash_folder(cli: Any, model: Path, json_of: Any) -> None:
    res = json_of(cli(["hash", str(model), "--json", "--no-tensors"]), "hash", 0)
    by_name = {f["name"]: f for f in res["files"]}
    assert set(by_name) == {"config.json", "model.safetensors", "tokenizer.json"}
    assert by_name["config.json"]["sha256"] == hashlib.sha256(b'{"hidden": 4}').hexdigest()
    assert "tensors" not in by_name["model.safetensors"]


def test_hash_refuses_symlinks_unless_allowed(cli: Any, model: Path, json_of: Any) -> None:
    (model / "link.json").symlink_to(model / "config.json")
    err = json_of(cli(["hash", str(model), "--json"]), "hash", 2)
    assert err["type"] == "ModelPathError"
    res = json_of(cli(["hash", str(model), "--json", "--allow-symlinks"]), "hash", 0)
    assert "link.json" in {f["name"] for f in res["files"]}


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_sign_and_hash_take_the_tensor_algorithm(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any, algorithm: str
) -> None:
    priv, pub = keys
    h = json_of(cli(["hash", str(model), "--json", "--tensor-algorithm", algorithm]), "hash", 0)
    st_file = next(f for f in h["files"] if f["name"] == "model.safetensors")
    assert st_file["tensor_algorithm"] == algorithm
    json_of(cli(["sign", str(model), "--key", str(priv), "--json", "--tensor-algorithm", algorithm]),
            "sign", 0)
    v = json_of(cli(["verify", str(model), "--key", str(pub), "--json"]), "verify", 0)
    assert v["tensor_algorithm"] == algorithm and v["by_file_digest"] == ["config.json", "tokenizer.json"]
    human = cli(["verify", str(model), "--key", str(pub)])
    assert f"1 file by {algorithm} header and tensor digests" in human.stdout
    bad = cli(["sign", str(model), "--key", str(priv), "--tensor-algorithm", "md5"])
    assert bad.code == 2


def test_file_algorithm_blake3(cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any) -> None:
    priv, pub = keys
    h = json_of(cli(["hash", str(model), "--json", "--file-algorithm", "blake3"]), "hash", 0)
    cfg = next(f for f in h["files"] if f["name"] == "config.json")
    assert h["serialization"]["hash_type"] == "blake3" and "sha256" not in cfg
    assert cfg["blake3"] == blake3.blake3(b'{"hidden": 4}').hexdigest()
    human = cli(["hash", str(model), "--file-algorithm", "blake3"])
    assert human.code == 0 and "blake3" in human.stdout and cfg["blake3"][:12] in human.stdout
    json_of(cli(["sign", str(model), "--key", str(priv), "--json", "--file-algorithm", "blake3"]),
            "sign", 0)
    v = json_of(cli(["verify", str(model), "--key", str(pub), "--json"]), "verify", 0)
    assert v["serialization"]["hash_type"] == "blake3"
    (model / "config.json").write_text("{}")
    assert cli(["verify", str(model), "--key", str(pub)]).code == 1


def test_hash_missing_path(cli: Any, tmp_path: Path, error_line: Any) -> None:
    r = cli(["hash", str(tmp_path / "nope")])
    assert r.code == 2
    assert str(tmp_path / "nope") in error_line(r, "hash")


# -- sign and verify ------------------------------------------------------------------------
def test_sign_then_verify(cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any, error_line: Any) -> None:
    priv, pub = keys
    res = json_of(cli(["sign", str(model), "--key", str(priv), "--json"]), "sign", 0)
    assert res["signature"] == str(model / "model.sig") and not res["certificate"]
    v = json_of(cli(["verify", str(model), "--key", str(pub), "--json"]), "verify", 0)
    assert v["verified"] is True
    assert sorted(v["files"]) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert v["tensors_checked"] == 2 and v["signer"]["kind"] == "key"
    human = cli(["verify", str(model), "--key", str(pub)])
    assert human.code == 0 and "verified" in human.stdout and "3 files" in human.stdout
    (model / "config.json").write_text("{}")
    failed = cli(["verify", str(model), "--key", str(pub)])
    assert failed.code == 1 and failed.stdout == ""  # a failure prints nothing on stdout
    assert "config.json" in error_line(failed, "verify")


def test_sign_to_a_separate_signature_file(cli: Any, st_file: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    priv, pub = keys
    sig = tmp_path / "elsewhere" / "weights.sig"
    sig.parent.mkdir()
    assert cli(["sign", str(st_file), "--key", str(priv), "--signature", str(sig)]).code == 0
    assert sig.exists()
    assert cli(["verify", str(st_file), "--key", str(pub), "-s", str(sig), "-q"]).code == 0
    r = cli(["verify", str(st_file), "--key", str(pub), "-q"])  # default model.sig is absent
    assert r.code == 1


@pytest.mark.parametrize(
    ("tamper", "error_type"),
    [
        ("flip_tensor_byte", "DigestMismatchError"),
        ("edit_config", "DigestMismatchError"),
        ("remove_file", "MissingFileError"),
        ("add_file", "UnexpectedFileError"),
        ("garbage_signature", "BundleError"),
        ("no_signature", "NotSignedError"),
    ],
)
def test_verify_rejects_tampering(
    cli: Any, signed: Path, keys: tuple[Path, Path], json_of: Any, error_line: Any, tamper: str, error_type: str
) -> None:
    model, pub = signed, keys[1]
    weights = model / "model.safetensors"
    if tamper == "flip_tensor_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
    elif tamper == "edit_config":
        (model / "config.json").write_text('{"hidden": 5}')
    elif tamper == "remove_file":
        (model / "tokenizer.json").unlink()
    elif tamper == "add_file":
        (model / "extra.py").write_text("print('hi')")
    elif tamper == "garbage_signature":
        (model / "model.sig").write_text("{not json")
    elif tamper == "no_signature":
        (model / "model.sig").unlink()
    r = cli(["verify", str(model), "--key", str(pub), "--json"])
    err = json_of(r, "verify", 1)
    import tensorfile.errors as errors

    assert isinstance(errors.__dict__[err["type"]]("x"), errors.__dict__[error_type]), err
    assert err["message"] in error_line(r, "verify")  # the same one line on stderr


def test_verify_with_the_wrong_key_fails(cli: Any, signed: Path, tmp_path: Path, json_of: Any) -> None:
    from tensorfile.integrity import generate_key

    other = generate_key(tmp_path / "other.pem")
    err = json_of(cli(["verify", str(signed), "--key", str(other.public_key), "--json"]), "verify", 1)
    assert err["type"] == "SignatureError"


def test_verify_allows_extra_files_on_request(cli: Any, signed: Path, keys: tuple[Path, Path], json_of: Any) -> None:
    (signed / "README.md").write_text("notes")
    res = json_of(cli(["verify", str(signed), "--key", str(keys[1]), "--allow-extra-files", "--deep", "--json"]), "verify", 0)
    assert res["extra_files"] == ["README.md"] and res["tensor_digests_checked"] is True


@pytest.mark.parametrize("trust", [[], ["--key", "K", "--cert-chain", "K"], ["--key", "K", "--pins", "K"]])
def test_verify_needs_exactly_one_trust_option(cli: Any, model: Path, keys: tuple[Path, Path], trust: list[str]) -> None:
    args = [str(keys[1]) if a == "K" else a for a in trust]
    r = cli(["verify", str(model), *args])
    assert r.code == 2
    assert "--key, --cert-chain, --trusted-root or --pins (exactly one)" in " ".join(r.stderr.replace("│", " ").split())


def test_verify_with_a_private_key_is_an_input_error(cli: Any, signed: Path, keys: tuple[Path, Path], error_line: Any) -> None:
    r = cli(["verify", str(signed), "--key", str(keys[0])])
    assert r.code == 2
    assert str(keys[0]) in error_line(r, "verify")


def test_sign_with_a_missing_key(cli: Any, model: Path, tmp_path: Path, json_of: Any) -> None:
    err = json_of(cli(["sign", str(model), "--key", str(tmp_path / "none.pem"), "--json"]), "sign", 2)
    assert err["type"] == "InputNotFoundError" and not (model / "model.sig").exists()
    assert err["message"] == f"{tmp_path / 'none.pem'}: no such file or folder"



def test_sign_update_rehashes_only_what_changed(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any, error_line: Any
) -> None:
    import os

    priv, pub = keys
    for f in model.iterdir():  # written long ago: files modified just now get no hint
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))
    missing = cli(["sign", str(model), "--key", str(priv), "--update"])
    assert missing.code == 1 and "no signature file" in error_line(missing, "sign")
    json_of(cli(["sign", str(model), "--key", str(priv), "--json"]), "sign", 0)
    (model / "config.json").write_text('{"hidden": 8, "layers": 2}')
    res = json_of(cli(["sign", str(model), "--key", str(priv), "--update", "--json"]), "sign", 0)
    size = (model / "config.json").stat().st_size
    assert res["update"]["rehashed"] == ["config.json"] and res["update"]["bytes_hashed"] == size
    assert res["update"]["files"] == 3 and res["update"]["reused"] == 2
    assert res["update"]["root_digest"] != res["update"]["previous_root_digest"]
    # Changed again: re-hashed whether or not the last update could give it a
    # hint (under load, that update ran more than RACY_NS after the write).
    (model / "config.json").write_text('{"hidden": 9, "layers": 2}')
    human = cli(["sign", str(model), "--key", str(priv), "--update"])
    assert human.code == 0 and "re-hashed 1 of 3 files" in human.stdout
    json_of(cli(["verify", str(model), "--key", str(pub), "--json"]), "verify", 0)
    other = keys[0].parent / "other.pem"
    from tensorfile.integrity import generate_key

    generate_key(other)
    refused = cli(["sign", str(model), "--key", str(other), "--update"])
    assert refused.code == 1 and "different key" in error_line(refused, "sign")

# -- certificates ----------------------------------------------------------------------------
def _chain(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root CA and a code-signing leaf: (leaf key, leaf cert, root cert) as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name("test root"))
        .issuer_name(name("test root"))
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("model publisher"))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    paths = (tmp_path / "leaf.key", tmp_path / "leaf.crt", tmp_path / "root.crt")
    paths[0].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return paths


def test_certificate_sign_and_verify(cli: Any, model: Path, tmp_path: Path, json_of: Any, keys: tuple[Path, Path]) -> None:
    leaf_key, leaf_cert, root_cert = _chain(tmp_path)
    res = json_of(cli(["sign", str(model), "--key", str(leaf_key), "--certificate", str(leaf_cert), "--json"]), "sign", 0)
    assert res["certificate"] is True
    v = json_of(cli(["verify", str(model), "--cert-chain", str(root_cert), "--json"]), "verify", 0)
    assert v["signer"]["kind"] == "certificate"
    assert "model publisher" in v["signer"]["certificate"]["subject"]
    human = cli(["verify", str(model), "--cert-chain", str(root_cert)])
    assert human.code == 0 and "model publisher" in human.stdout
    # A bare public key is not the trust the bundle asks for.
    assert cli(["verify", str(model), "--key", str(keys[1]), "-q"]).code == 1
