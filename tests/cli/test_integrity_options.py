"""model-signing's options on `sign`, `hash` and `verify`, and what verify says it left out."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def model(tmp_path: Path, st_file: Path) -> Path:
    folder = tmp_path / "my-model"
    folder.mkdir()
    shutil.copy(st_file, folder / "model.safetensors")
    (folder / "config.json").write_text('{"hidden": 4}')
    (folder / "README.md").write_text("# readme\n")
    (folder / "logs").mkdir()
    (folder / "logs" / "run.txt").write_text("x")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    from tensorfile.integrity import generate_key

    pair = generate_key(tmp_path / "k.pem")
    return pair.private_key, pair.public_key


def _statement(sig: Path) -> dict[str, Any]:
    doc = json.loads(sig.read_text())
    return json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))


def test_sign_ignore_paths_and_verify_lists_them(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any
) -> None:
    r = cli(["sign", str(model), "-k", str(keys[0]), "--ignore-paths", str(model / "README.md"),
             "--ignore-paths", str(model / "logs"), "-q"])
    assert r.code == 0, r.stderr
    st = _statement(model / "model.sig")
    names = [x["name"] for x in st["predicate"]["resources"]]
    assert names == ["config.json", "model.safetensors"]
    assert st["predicate"]["serialization"]["ignore_paths"] == [
        ".git", ".gitattributes", ".github", ".gitignore", "README.md", "logs", "model.sig"]
    (model / "README.md").write_text("changed, and not signed")
    v = json_of(cli(["verify", str(model), "-k", str(keys[1]), "--json"]), "verify", 0)
    assert v["ignored_by_signature"] == st["predicate"]["serialization"]["ignore_paths"]
    assert v["ignored_present"] == [".gitattributes", "README.md", "logs", "model.sig"]
    assert v["ignored_by_verifier"] == []
    human = cli(["verify", str(model), "-k", str(keys[1])])
    assert human.code == 0
    # Only what is there (issue 21: no .git line for paths that do not exist).
    assert ("left out by the signature (present, not checked): .gitattributes, README.md, "
            "logs\n") in human.stdout
    assert ".github" not in human.stdout


def test_no_ignore_git_paths_signs_the_git_files(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any
) -> None:
    r = cli(["sign", str(model), "-k", str(keys[0]), "--no-ignore-git-paths", "-q"])
    assert r.code == 0, r.stderr
    st = _statement(model / "model.sig")
    assert ".gitattributes" in [x["name"] for x in st["predicate"]["resources"]]
    assert st["predicate"]["serialization"]["ignore_paths"] == ["model.sig"]
    # The verifier's default git exclusion does not skip a signed file ...
    v = json_of(cli(["verify", str(model), "-k", str(keys[1]), "--json"]), "verify", 0)
    assert ".gitattributes" in v["files"] and ".gitattributes" not in v["ignored_by_verifier"]
    assert v["ignored_by_verifier"] == [".git", ".github", ".gitignore"]
    (model / ".gitattributes").write_text("tampered\n")
    assert cli(["verify", str(model), "-k", str(keys[1]), "-q"]).code == 1
    # ... and with --no-ignore-git-paths an unsigned .gitignore is an extra file.
    (model / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (model / ".gitignore").write_text("*.tmp\n")
    assert cli(["verify", str(model), "-k", str(keys[1]), "-q"]).code == 0
    failed = cli(["verify", str(model), "-k", str(keys[1]), "--no-ignore-git-paths", "--json"])
    err = json_of(failed, "verify", 1)
    assert ".gitignore" in err["message"]


def test_verify_ignore_paths_skips_unsigned_files_only(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any
) -> None:
    assert cli(["sign", str(model), "-k", str(keys[0]), "-q"]).code == 0
    (model / "notes.txt").write_text("added later")
    assert cli(["verify", str(model), "-k", str(keys[1]), "-q"]).code == 1
    v = json_of(cli(["verify", str(model), "-k", str(keys[1]), "--ignore-paths",
                     str(model / "notes.txt"), "--json"]), "verify", 0)
    assert v["ignored_by_verifier"] == ["notes.txt"]  # the git files: by the signature
    assert "notes.txt" in v["ignored_present"]
    # A signed file named in --ignore-paths is checked all the same.
    (model / "config.json").write_text("{}")
    r = cli(["verify", str(model), "-k", str(keys[1]), "--ignore-paths", str(model / "config.json"),
             "--ignore-paths", str(model / "notes.txt"), "--json"])
    assert "config.json" in json_of(r, "verify", 1)["message"]


def test_ignore_unsigned_files_is_allow_extra_files(
    cli: Any, model: Path, keys: tuple[Path, Path], json_of: Any
) -> None:
    assert cli(["sign", str(model), "-k", str(keys[0]), "-q"]).code == 0
    (model / "new.bin").write_bytes(b"\0")
    v = json_of(cli(["verify", str(model), "-k", str(keys[1]), "--ignore-unsigned-files",
                     "--json"]), "verify", 0)
    assert v["extra_files"] == ["new.bin"]


def test_ignore_path_outside_the_model_is_an_error(
    cli: Any, model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    for cmd in (["sign", str(model), "-k", str(keys[0])], ["hash", str(model)]):
        r = cli([*cmd, "--ignore-paths", str(tmp_path / "elsewhere")])
        assert r.code == 2 and "not inside the model folder" in " ".join(r.stderr.split())
    assert not (model / "model.sig").exists()


def test_hash_takes_the_same_options(cli: Any, model: Path, json_of: Any) -> None:
    res = json_of(cli(["hash", str(model), "--ignore-paths", str(model / "logs"),
                       "--no-ignore-git-paths", "--json"]), "hash", 0)
    names = [f["name"] for f in res["files"]]
    assert names == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert res["serialization"]["ignore_paths"] == ["logs", "model.sig"]


def test_model_signing_honours_tensorfile_ignore_paths(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """model-signing verifies a bundle signed with --ignore-paths, with the
    ignored file changed (it applies the signature's ignore_paths), and
    tensorfile verifies model-signing's --no-ignore-git-paths bundle."""
    ms = pytest.importorskip("model_signing")
    pytest.importorskip("OpenSSL")
    from tensorfile.integrity import sign, verify

    sig = sign(model, keys[0], tmp_path / "tf.sig", ignore_paths=["README.md", "logs"])
    (model / "README.md").write_text("changed")
    ms.verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(model, sig)
    ms_sig = tmp_path / "ms.sig"
    ms.signing.Config().use_elliptic_key_signer(private_key=keys[0]).set_hashing_config(
        ms.hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)
    ).sign(model, ms_sig)
    r = verify(model, keys[1], signature=ms_sig)
    assert ".gitattributes" in r.files and "README.md" in r.files
