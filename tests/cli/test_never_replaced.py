"""Nothing a user owns is replaced or removed unasked (issue 21, rule 1), and
signing keys are checked before any conversion starts (rule 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def bin_file(tmp_path: Path) -> Path:
    folder = tmp_path / "ow"
    folder.mkdir()
    path = folder / "pytorch_model.bin"
    torch.save({"w": torch.ones(3)}, path)
    return path


def _refused(r: Any, json_of: Any, command: str, path: Path) -> None:
    err = json_of(r, command, 2)
    assert err["type"] == "OutputExistsError" and err["message"].startswith(f"{path}: already exists")
    assert "--overwrite" in err["hint"]


def test_convert_keeps_an_existing_output(cli: Any, bin_file: Path, json_of: Any) -> None:
    existing = bin_file.with_name("model.safetensors")
    existing.write_bytes(b"someone else's model")
    _refused(cli(["convert", str(bin_file), "--json"]), json_of, "convert", existing)
    notes = bin_file.with_name("notes.txt")
    notes.write_text("my notes")
    _refused(cli(["convert", str(bin_file), str(notes), "--json"]), json_of, "convert", notes)
    assert existing.read_bytes() == b"someone else's model" and notes.read_text() == "my notes"
    res = json_of(cli(["convert", str(bin_file), "--overwrite", "--json"]), "convert", 0)
    assert res["replaced"] == [str(existing)]
    text = cli(["convert", str(bin_file), "--overwrite"]).stdout
    assert f"replaced: {existing}" in text


def test_folder_convert_refuses_to_remove_model_safetensors(cli: Any, bin_file: Path,
                                                             json_of: Any) -> None:
    folder = bin_file.parent
    (folder / "model.safetensors").write_bytes(b"the Hub's own safetensors")
    _refused(cli(["convert", str(folder), "--json"]), json_of, "convert", folder / "model.safetensors")
    other = folder.parent / "out"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    _refused(cli(["convert", str(folder), str(other), "--json"]), json_of, "convert",
             other / "model.safetensors")
    assert (folder / "model.safetensors").read_bytes() == b"the Hub's own safetensors"
    res = json_of(cli(["convert", str(folder), "--overwrite", "--json"]), "convert", 0)
    assert res["replaced"] == [str(folder / "model.safetensors")]


def test_destination_spelt_as_a_folder_is_a_folder(cli: Any, bin_file: Path, json_of: Any) -> None:
    new = bin_file.parent / "newdir"
    res = json_of(cli(["convert", str(bin_file), f"{new}/", "--json"]), "convert", 0)
    assert res["outputs"] == [str(new / "model.safetensors")] and new.is_dir()


def test_sign_keeps_an_existing_signature(cli: Any, bin_file: Path, json_of: Any) -> None:
    from tensorfile.integrity import generate_key

    folder = bin_file.parent
    key = generate_key(folder.parent / "k.pem").private_key
    sig = folder / "model.sig"
    sig.write_text("the publisher's signature")
    _refused(cli(["sign", str(folder), "--key", str(key), "--json"]), json_of, "sign", sig)
    config = folder / "config.json"
    config.write_text("{}")
    _refused(cli(["sign", str(folder), "--key", str(key), "-s", str(config), "--json"]),
             json_of, "sign", config)
    assert sig.read_text() == "the publisher's signature" and config.read_text() == "{}"
    sig.unlink()
    res = json_of(cli(["sign", str(folder), "--key", str(key), "--json"]), "sign", 0)
    assert res["replaced"] is False
    res = json_of(cli(["sign", str(folder), "--key", str(key), "--overwrite", "--json"]), "sign", 0)
    assert res["replaced"] is True


def test_convert_sign_checks_the_key_first(cli: Any, bin_file: Path, json_of: Any) -> None:
    from tensorfile.integrity import generate_key

    folder = bin_file.parent
    enc = generate_key(folder.parent / "enc.pem", password="pw")
    before = sorted(p.name for p in folder.iterdir())
    err = json_of(cli(["convert", str(bin_file), "--sign", str(enc.private_key), "--json"]),
                  "convert", 2)
    assert err["type"] == "KeyPasswordError" and "no password" in err["message"]
    assert "--password-file" in err["hint"] and "TENSORFILE_KEY_PASSWORD" in err["hint"]
    err = json_of(cli(["convert", str(bin_file), "--sign", str(enc.public_key), "--json"]),
                  "convert", 2)
    assert err["type"] == "KeyLoadError" and "a public key: signing needs the private key" in err["message"]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    (folder / "model.sig").write_text("x")  # the signature it would write exists
    err = json_of(cli(["convert", str(bin_file), "--sign", str(enc.private_key), "--json"],
                      env={"TENSORFILE_KEY_PASSWORD": "pw"}), "convert", 2)
    assert err["type"] == "OutputExistsError" and not (folder / "model.safetensors").exists()


def test_a_repeated_key_is_refused(cli: Any, bin_file: Path) -> None:
    for args in (["sign", str(bin_file), "--key", "a.pem", "--key", "b.pem"],
                 ["verify", str(bin_file), "--key", "a.pub", "-k", "b.pub"],
                 ["convert", str(bin_file), "--sign", "a.pem", "--sign", "b.pem"]):
        r = cli(args)
        assert r.code == 2 and "given 2 times" in r.stderr, args
