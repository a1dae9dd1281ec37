"""Pinned verification without a key: formats, the tamper matrix, and verify-on-load."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import (
    DigestMismatchError,
    IntegrityError,
    ManifestError,
    MissingFileError,
    ModelPathError,
    NotSignedError,
    PinsError,
    UnexpectedFileError,
)
from tensorfile.integrity import Pins, hash_model, parse_pins, verify_pins
from tensorfile.integrity.onload import load_verifier

SHARD = "model-00001-of-00002.safetensors"
FILES = ["config.json", SHARD, "model-00002-of-00002.safetensors", "tokenizer/vocab.txt"]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tensor_offset(path: Path, name: str) -> int:
    with tensorfile.safe_open(path) as f:
        return f.byte_range(name)[0]


# ------------------------------------------------------------------ pins files, one per format


def _manifest_json(model: Path, out: Path) -> Path:
    out.write_text(json.dumps(hash_model(model).to_dict()))
    return out


def _manifest_envelope(model: Path, out: Path) -> Path:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    res = CliRunner().invoke(app, ["hash", str(model), "--json"])
    assert res.exit_code == 0, res.output
    out.write_text(res.stdout)
    return out


def _sha256sum(model: Path, out: Path) -> Path:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum")
    res = subprocess.run(["sha256sum", *FILES], cwd=model, capture_output=True, text=True, check=True)
    out.write_text(res.stdout)
    return out


def _sha256sum_tag(model: Path, out: Path) -> Path:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum")
    res = subprocess.run(["sha256sum", "--tag", *[f"./{f}" for f in FILES]], cwd=model,
                         capture_output=True, text=True, check=True)
    assert res.stdout.startswith("SHA256 (")
    out.write_text(res.stdout)
    return out


def _json_map(model: Path, out: Path) -> Path:
    out.write_text(json.dumps({
        f: ({"oid": f"sha256:{sha(model / f)}", "size": (model / f).stat().st_size}
            if f.endswith(".safetensors") else sha(model / f))
        for f in FILES
    }))
    return out


def _hub_siblings(model: Path, out: Path) -> Path:
    """The Hub's model info (files_metadata=True): every file LFS here."""
    out.write_text(json.dumps({"id": "org/tiny", "siblings": [
        {"rfilename": f, "blobId": "0" * 40,
         "lfs": {"sha256": sha(model / f), "size": (model / f).stat().st_size, "pointerSize": 134}}
        for f in FILES
    ]}))
    return out


FORMATS: dict[str, Callable[[Path, Path], Path]] = {
    "hash-json": _manifest_json,
    "hash-json-envelope": _manifest_envelope,
    "sha256sum": _sha256sum,
    "sha256sum-tag": _sha256sum_tag,
    "json-map": _json_map,
    "hub-siblings": _hub_siblings,
}


@pytest.fixture(params=sorted(FORMATS))
def pinned(model: Path, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """The model and a pins file for it (outside the model folder), in each format."""
    return model, FORMATS[request.param](model, tmp_path / f"pins.{request.param}")


def test_untampered_model_verifies(pinned: tuple[Path, Path]) -> None:
    model, pins = pinned
    r = verify_pins(model, pins)
    assert r.files == tuple(FILES)
    assert r.signer.kind == "pins" and r.signer.key_fingerprint == sha(pins)
    assert r.signature == str(pins)
    assert r.bytes_hashed == sum((model / f).stat().st_size for f in FILES)
    # pins from `hash --json` carry tensor digests: safetensors files are checked by them
    if "hash-json" in pins.name:
        assert r.tensor_digests_checked and r.tensors == 9
    else:
        assert r.by_file_digest == r.files and not r.tensor_digests_checked


# ------------------------------------------------------------------ the tamper matrix


def _tamper_tensor(m: Path) -> None:
    flip(m / SHARD, tensor_offset(m / SHARD, "layer.2.weight") + 40)


def _tamper_header(m: Path) -> None:
    flip(m / SHARD, 8 + 3)


def _tamper_config(m: Path) -> None:
    (m / "config.json").write_text('{"hidden_size": 16, "layers": 6}\n')


def _truncate(m: Path) -> None:
    p = m / SHARD
    p.write_bytes(p.read_bytes()[:-4])


def _append(m: Path) -> None:
    with open(m / "tokenizer" / "vocab.txt", "ab") as f:
        f.write(b"d\n")


def _swap_files(m: Path) -> None:
    a, b = m / SHARD, m / "model-00002-of-00002.safetensors"
    tmp = m / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


@pytest.mark.parametrize(
    ("tamper", "error", "pattern"),
    [
        (_tamper_tensor, DigestMismatchError, "pinned model"),
        (_tamper_header, DigestMismatchError, SHARD),
        (_tamper_config, DigestMismatchError, r"config\.json"),
        (_truncate, DigestMismatchError, SHARD),
        (_append, DigestMismatchError, r"vocab\.txt"),
        (_swap_files, DigestMismatchError, SHARD),
        (lambda m: (m / "extra.bin").write_bytes(b"x"), UnexpectedFileError, r"not covered by the pins"),
        (lambda m: (m / "config.json").unlink(), MissingFileError, r"pinned files missing: 'config\.json'"),
        (lambda m: (m / "config.json").rename(m / "config2.json"), MissingFileError, "renamed"),
        (lambda m: shutil.rmtree(m / "tokenizer"), MissingFileError, r"vocab\.txt"),
    ],
)
def test_tamper_matrix(
    pinned: tuple[Path, Path], tamper: Callable[[Path], Any], error: type[Exception], pattern: str
) -> None:
    model, pins = pinned
    tamper(model)
    with pytest.raises(error, match=pattern):
        verify_pins(model, pins)


def test_truncated_file_with_a_pinned_size_fails_before_hashing(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = _hub_siblings(model, tmp_path / "info.json")
    _truncate(model)
    import sys

    v = sys.modules["tensorfile.integrity.verify"]

    def no_hashing(*a: Any, **k: Any) -> Any:
        raise AssertionError("hashed")

    monkeypatch.setattr(v, "hash_contents", no_hashing)
    with pytest.raises(DigestMismatchError, match=r"size [\d,]+ bytes, pinned [\d,]+"):
        verify_pins(model, pins)


def test_extra_files_on_request_and_git_files(model: Path, tmp_path: Path) -> None:
    pins = _sha256sum(model, tmp_path / "SHA256SUMS")
    (model / "extra.bin").write_bytes(b"x")
    (model / ".gitattributes").write_text("*.bin lfs\n")
    r = verify_pins(model, pins, allow_extra_files=True)
    assert r.extra_files == ("extra.bin",) and ".gitattributes" in r.ignored_present
    with pytest.raises(UnexpectedFileError, match=r"\.gitattributes"):
        verify_pins(model, pins, allow_extra_files=False, ignore_git_paths=False,
                    ignore_paths=["extra.bin"])


def test_pins_file_inside_the_model_is_left_out(model: Path) -> None:
    pins = _sha256sum(model, model / "SHA256SUMS")
    r = verify_pins(model, pins)
    assert r.ignored_by_signature == ("SHA256SUMS",)


def test_pin_for_a_missing_file(model: Path, tmp_path: Path) -> None:
    pins = tmp_path / "p.json"
    pins.write_text(json.dumps({**{f: sha(model / f) for f in FILES}, "gone.bin": "a" * 64}))
    with pytest.raises(MissingFileError, match=r"gone\.bin"):
        verify_pins(model, pins)


def test_symlink_refused(model: Path, tmp_path: Path) -> None:
    pins = _sha256sum(model, tmp_path / "SUMS")
    (model / "link").symlink_to(tmp_path / "SUMS")
    with pytest.raises(ModelPathError, match="symlink"):
        verify_pins(model, pins, allow_extra_files=True)


def test_wrong_tensor_digest_in_hash_manifest_is_a_manifest_error(model: Path, tmp_path: Path) -> None:
    doc = hash_model(model).to_dict()
    entry = next(f for f in doc["files"] if f["name"] == SHARD)
    entry["tensors"]["embed"] = "0" * 64
    pins = tmp_path / "m.json"
    pins.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="embed"):
        verify_pins(model, pins)


# ------------------------------------------------------------------ wrong pin formats

GOOD = "ab" * 32


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (b"", "pins no file"),
        (b"\n# only a comment\n", "pins no file"),
        (b"not a hash line\n", "not a SHA-256 line"),
        (b"abcd  config.json\n", "not a SHA-256 line"),
        (f"{GOOD}config.json\n".encode(), "not a SHA-256 line"),
        (f"\\{GOOD}  a\\nb\n".encode(), "escaped file names"),
        (f"{GOOD}  a\n{GOOD}  ./a\n".encode(), "pinned twice"),
        (f"{GOOD}  ../a\n".encode(), "not a plain path"),
        (f"{GOOD}  /etc/passwd\n".encode(), "not a plain path"),
        (f"{GOOD}  a//b\n".encode(), "not a plain path"),
        (f"{GOOD}  .\n{GOOD}  b\n".encode(), "must be the only pin"),
        (b"\xff\xfe garbage", "neither JSON nor UTF-8"),
        (b"{", "not valid JSON"),
        (b'{"a": "ab", "a": "cd"}', "duplicate key"),
        (b'{"a": 5}', "64 hex digits"),
        (b'{"a": "sha1:' + b"ab" * 20 + b'"}', "64 hex digits"),
        (b'{"a": {"sha256": "' + GOOD.encode() + b'", "md5": "x"}}', "must have one of"),
        (b'{"a": {"sha256": "' + GOOD.encode() + b'", "size": -1}}', "non-negative"),
        (b'{"a": {"sha256": "' + GOOD.encode() + b'", "size": 1.5}}', "non-negative"),
        (b"[1, 2]", "must be an object"),
        (b'{"siblings": [{"rfilename": "a"}]}', "no sibling has an LFS"),
        (b'{"files": [], "serialization": {"hash_type": "md5"}}', "hash_type"),
        (b'{"files": [{"name": "a"}], "serialization": {"hash_type": "sha256"}}', "no sha256 digest"),
        (b'{"files": [{"name": "a", "sha256": "' + GOOD.upper().encode()
         + b'"}], "serialization": {"hash_type": "sha256"}}', "lowercase"),
        (b"version https://git-lfs.github.com/spec/v1\nsize 3\n", "oid sha256"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + GOOD.encode() + b"\n", "size"),
    ],
)
def test_wrong_pin_formats(text: bytes, pattern: str) -> None:
    with pytest.raises(PinsError, match=pattern):
        parse_pins(text, "pins.txt")


def test_mixed_algorithms_are_refused() -> None:
    from tensorfile.integrity.hashing import FileDigest

    with pytest.raises(PinsError, match="mix"):
        Pins({"a": FileDigest("a", GOOD), "b": FileDigest("b", GOOD, algorithm="blake3")})


def test_pins_for_one_file_on_a_folder(model: Path, tmp_path: Path) -> None:
    p = tmp_path / "pointer"
    p.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{GOOD}\nsize 3\n")
    with pytest.raises(PinsError, match="is a folder"):
        verify_pins(model, p)


def test_unreadable_pins_file(model: Path, tmp_path: Path) -> None:
    with pytest.raises(PinsError, match="cannot read"):
        verify_pins(model, tmp_path / "nope")
    assert issubclass(PinsError, IntegrityError)


# ------------------------------------------------------------------ single files, LFS pointers


def test_lfs_pointer_pins_one_file(single: Path, tmp_path: Path) -> None:
    pointer = tmp_path / "weights.pointer"
    pointer.write_text(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha(single)}\n"
        f"size {single.stat().st_size}\n")
    assert verify_pins(single, pointer).files == (".",)
    other = tmp_path / "other.safetensors"
    other.write_bytes(single.read_bytes()[:-1] + b"\0")
    with pytest.raises(DigestMismatchError, match=r"'\.'"):
        verify_pins(other, pointer)


def test_single_file_from_a_folder_list(model: Path, tmp_path: Path) -> None:
    sums = _sha256sum(model, tmp_path / "SUMS")
    r = verify_pins(model / "config.json", sums)
    assert r.files == (".",) and r.bytes_hashed == (model / "config.json").stat().st_size
    with pytest.raises(NotSignedError, match="no pin"):
        verify_pins(tmp_path / "SUMS", sums)


# ------------------------------------------------------------------ verify-on-load


def test_load_file_with_pins(model: Path, tmp_path: Path) -> None:
    want = tensorfile.load_file(model / SHARD)
    for fmt in ("sha256sum", "hash-json", "json-map"):
        pins = Pins.from_file(FORMATS[fmt](model, tmp_path / f"p-{fmt}"))
        got = tensorfile.load_file(model / SHARD, verify=pins)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_load_with_manifest_pins_hashes_only_what_is_read(model: Path, tmp_path: Path) -> None:
    pins = Pins.from_file(_manifest_json(model, tmp_path / "m.json"))
    v = load_verifier(pins, model / SHARD)
    assert v.bytes_hashed == 0  # nothing hashed before the file is read
    with tensorfile.safe_open(model / SHARD, verify=pins) as f:
        f.get_tensor("embed")
        assert f._verifier.resource == SHARD
        assert f._verifier.bytes_hashed == 8 + int.from_bytes(
            (model / SHARD).read_bytes()[:8], "little") + 32 * 8


def test_load_with_pins_fails_closed(model: Path, tmp_path: Path) -> None:
    for fmt in ("sha256sum", "hash-json"):
        pins = Pins.from_file(FORMATS[fmt](model, tmp_path / f"p-{fmt}"))
        bad = tmp_path / f"bad-{fmt}"
        shutil.copytree(model, bad)
        _tamper_tensor(bad)
        with pytest.raises(DigestMismatchError):
            tensorfile.load_file(bad / SHARD, verify=pins.with_root(bad))
    with pytest.raises(NotSignedError, match="no pin"):
        tensorfile.load_file(tmp_path / "bad-sha256sum" / SHARD,
                             verify=pins.with_root(tmp_path))
    sized = Pins.from_file(_hub_siblings(model, tmp_path / "info.json"))
    shutil.copy(model / "model-00002-of-00002.safetensors", model / SHARD)  # valid, other size
    with pytest.raises(DigestMismatchError, match=r"size [\d,]+ bytes, pinned"):
        tensorfile.load_file(model / SHARD, verify=sized)


def test_ambiguous_pin_is_refused(model: Path, tmp_path: Path) -> None:
    """A pins file next to the model naming 'x' and 'sub/x': loading sub/x must
    not be checked against the pin of 'x'."""
    sub = model / "sub"
    sub.mkdir()
    shutil.copy(model / SHARD, sub / SHARD)
    flip(sub / SHARD, tensor_offset(sub / SHARD, "embed"))
    pins_path = tmp_path / "pins.json"
    pins_path.write_text(json.dumps({SHARD: sha(model / SHARD), f"sub/{SHARD}": sha(sub / SHARD)}))
    pins = Pins.from_file(pins_path, model_root=model)
    assert tensorfile.load_file(sub / SHARD, verify=pins)
    assert tensorfile.load_file(model / SHARD, verify=pins)
    # By its bare name, sub/x reads as the pin of x, which its bytes do not match.
    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(sub / SHARD, verify=Pins.from_file(pins_path))
    # Without a root, the pins file's own folder and the bare name are both readings.
    inside = model / "pins.json"
    shutil.copy(pins_path, inside)
    with pytest.raises(NotSignedError, match="more than one pin"):
        tensorfile.load_file(sub / SHARD, verify=Pins.from_file(inside))


def test_cli_verify_pins(model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    runner = CliRunner()
    sums = _sha256sum(model, tmp_path / "SHA256SUMS")
    ok = runner.invoke(app, ["verify", str(model), "--pins", str(sums)])
    assert ok.exit_code == 0, ok.output
    assert "pinned sha256 digests" in ok.stdout
    res = runner.invoke(app, ["verify", str(model), "--pins", str(sums), "--json"])
    doc = json.loads(res.stdout)
    assert doc["result"]["signer"]["kind"] == "pins" and doc["result"]["files_checked"] == 4
    assert runner.invoke(app, ["verify", str(model), "--pins", str(sums),
                               "--key", str(sums)]).exit_code == 2
    bad = tmp_path / "bad"
    bad.write_text("nonsense\n")
    res = runner.invoke(app, ["verify", str(model), "--pins", str(bad), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["error"]["type"] == "PinsError"
    _tamper_config(model)
    assert runner.invoke(app, ["verify", str(model), "--pins", str(sums)]).exit_code == 1
