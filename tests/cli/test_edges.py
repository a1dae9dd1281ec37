"""The command line at its edges (issue 21 rules 3-5, issue 22 items 9-10):
empty is not safe, every message true, 80 columns, names escaped, unreadable
input is one line."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile import save_file
from tensorfile.integrity import generate_key


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    pair = generate_key(tmp_path / "k.pem")
    return pair.private_key, pair.public_key


def _weights(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    return path


def _sign_anyway(model: Path, sig: Path, key: Path) -> None:
    """A signature of whatever is there, as another signer (or an older
    tensorfile) would make it: the library's sign refuses an empty model."""
    from tensorfile.integrity.bundle import write_bundle
    from tensorfile.integrity.hashing import HashOptions
    from tensorfile.integrity.manifest import hash_model
    from tensorfile.integrity.sign import sign_manifest

    write_bundle(sig, sign_manifest(hash_model(model, HashOptions(tensors=False)), key))


# -- rule 3: empty is not safe ----------------------------------------------------------
def test_scan_refuses_empty_things(cli: Any, tmp_path: Path, json_of: Any) -> None:
    empty = tmp_path / "pytorch_model.bin"
    empty.write_bytes(b"")
    (f,) = json_of(cli(["scan", str(empty), "--json"]), "scan", 2)["files"]
    assert (f["format"], f["verdict"]) == ("empty", "error") and "0 bytes" in f["error"]
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "config.json").write_text("{}")
    (configs / "__init__.py").write_text("")  # an empty file that is not weights: fine
    res = json_of(cli(["scan", str(configs), "--json"]), "scan", 2)
    folder = [f for f in res["files"] if f["path"] == str(configs)]
    assert folder and "no model files" in folder[0]["error"]
    assert {f["verdict"] for f in res["files"] if f["path"] != str(configs)} == {"safe"}
    (tmp_path / "none").mkdir()
    json_of(cli(["scan", str(tmp_path / "none"), "--json"]), "scan", 2)
    gguf = tmp_path / "gguf"  # weights the pickle scanner does not read are still weights
    gguf.mkdir()
    (gguf / "model.gguf").write_bytes(b"GGUF\3\0\0\0" + bytes(16))
    res = cli(["scan", str(gguf), "--json"]).json()["result"]  # its own verdict aside
    assert not [f for f in res["files"] if f["format"] == "folder"]
    # In a folder, a 0-byte file named like weights is an interrupted download.
    _weights(configs / "model.safetensors")
    (configs / "pytorch_model.bin").write_bytes(b"")
    res = json_of(cli(["scan", str(configs), "--json"]), "scan", 2)
    assert [f["format"] for f in res["files"] if f["verdict"] == "error"] == ["empty"]
    (configs / "pytorch_model.bin").unlink()
    json_of(cli(["scan", str(configs), "--json"]), "scan", 0)


def test_sign_and_verify_refuse_empty_models(cli: Any, tmp_path: Path, json_of: Any,
                                             keys: tuple[Path, Path]) -> None:
    empty_dir, configs, empty_file = tmp_path / "e", tmp_path / "c", tmp_path / "w.safetensors"
    empty_dir.mkdir()
    configs.mkdir()
    (configs / "config.json").write_text("")  # only 0-byte files: a failed download
    empty_file.write_bytes(b"")
    for model, what in ((empty_dir, "an empty folder"), (configs, "all of them empty"),
                        (empty_file, "an empty file (0 bytes)")):
        sig = tmp_path / f"{model.name}.sig"
        err = json_of(cli(["sign", str(model), "--key", str(keys[0]), "-s", str(sig), "--json"]),
                      "sign", 2)
        assert err["type"] == "EmptyModelError" and what in err["message"], err
        assert "download" in err["hint"] and not sig.exists()
        _sign_anyway(model, sig, keys[0])
        err = json_of(cli(["verify", str(model), "--key", str(keys[1]), "-s", str(sig),
                           "--json"]), "verify", 2)
        assert err["type"] == "EmptyModelError" and what in err["message"], err
    # A signed model whose weights are gone is "missing", not "empty".
    model = tmp_path / "m"
    _weights(model / "model.safetensors")
    json_of(cli(["sign", str(model), "--key", str(keys[0]), "--json"]), "sign", 0)
    (model / "model.safetensors").unlink()
    err = json_of(cli(["verify", str(model), "--key", str(keys[1]), "--json"]), "verify", 1)
    assert err["type"] == "MissingFileError"


# -- rule 4: true messages --------------------------------------------------------------
def test_a_shard_verifies_against_its_folders_signature(cli: Any, tmp_path: Path, json_of: Any,
                                                        keys: tuple[Path, Path]) -> None:
    from tensorfile.sharded import save_sharded

    model = tmp_path / "m"
    save_sharded({f"t{i}": np.full(100, i, dtype=np.float32) for i in range(4)}, model,
                 max_shard_size=500)
    json_of(cli(["sign", str(model), "--key", str(keys[0]), "--json"]), "sign", 0)
    shard = model / "model-00001-of-00004.safetensors"
    res = json_of(cli(["verify", str(shard), "--key", str(keys[1]), "--json"]), "verify", 0)
    assert res["files"] == [shard.name] and res["part_of"] == str(model)
    text = cli(["verify", str(shard), "--key", str(keys[1])]).stdout
    assert f"one file of the model signed as the folder {model}" in text
    other = model / "copy.safetensors"
    shutil.copy(shard, other)
    err = json_of(cli(["verify", str(other), "--key", str(keys[1]), "--json"]), "verify", 1)
    assert err["type"] == "NotSignedError" and "this file is not one of them" in err["message"]
    with open(shard, "r+b") as f:  # a changed shard still fails
        f.seek(-4, os.SEEK_END)
        f.write(b"\1\2\3\4")
    json_of(cli(["verify", str(shard), "--key", str(keys[1]), "--json"]), "verify", 1)


def test_load_file_of_nothing_is_both_errors(tmp_path: Path) -> None:
    from tensorfile import load_file
    from tensorfile.errors import TensorfileError

    with pytest.raises(FileNotFoundError) as info:
        load_file(tmp_path / "nope")
    assert isinstance(info.value, TensorfileError)


def test_a_file_in_another_format_says_what_it_is(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tensorfile import load_file
    from tensorfile.errors import FormatError

    torch.save({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    with pytest.raises(FormatError, match=r"not a safetensors file: it is a zip archive.*"
                       r"tensorfile convert"):
        load_file(tmp_path / "model.safetensors")
    (tmp_path / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n"
                                              "oid sha256:" + "0" * 64 + "\nsize 1234567890\n")
    with pytest.raises(FormatError, match="Git LFS pointer"):
        load_file(tmp_path / "lfs.safetensors")


def test_hints_fit_the_error() -> None:
    from tensorfile.errors import TrustedRootError
    from tensorfile_cli._exit import classify
    from tensorfile_cli._output import _message

    assert "disk is full" in classify(OSError(errno.ENOSPC, "No space left on device")).hint
    assert "read-only" in classify(OSError(errno.EROFS, "Read-only file system", "x")).hint
    assert "readable" not in classify(OSError(errno.ENOSPC, "No space left")).hint
    assert "trusted_root.json" in classify(TrustedRootError("x: not JSON")).hint
    assert "key" not in classify(TrustedRootError("x")).hint.replace("not a key", "")
    # The file named is the one asked for, not the temporary file beside it.
    temp = OSError(errno.EROFS, "Read-only file system", "/d/.model.safetensors.ab_12xyz.tmp")
    assert _message(temp) == "/d/model.safetensors: Read-only file system"


def test_cli_messages_name_cli_options(cli: Any, tmp_path: Path, json_of: Any,
                                       keys: tuple[Path, Path]) -> None:
    model = tmp_path / "m"
    _weights(model / "model.safetensors")
    json_of(cli(["sign", str(model), "--key", str(keys[0]), "--json"]), "sign", 0)
    (model / "extra.txt").write_text("x")
    err = json_of(cli(["verify", str(model), "--key", str(keys[1]), "--json"]), "verify", 1)
    assert "(--allow-extra-files ignores them)" in err["message"]
    (model / "extra.txt").unlink()
    (model / "link").symlink_to("model.safetensors")
    err = json_of(cli(["verify", str(model), "--key", str(keys[1]), "--json"]), "verify", 2)
    assert "pass --allow-symlinks" in err["message"] and " allow_symlinks" not in err["message"]


def test_left_out_paths_are_shown_only_when_present(cli: Any, tmp_path: Path,
                                                    keys: tuple[Path, Path]) -> None:
    st = _weights(tmp_path / "one" / "w.safetensors")
    assert cli(["sign", str(st), "--key", str(keys[0])]).code == 0
    r = cli(["verify", str(st), "--key", str(keys[1])])
    assert r.code == 0 and "left out" not in r.stdout and ".git" not in r.stdout


def test_trusted_root_that_is_a_key(cli: Any, tmp_path: Path, json_of: Any,
                                    keys: tuple[Path, Path]) -> None:
    st = _weights(tmp_path / "w.safetensors")
    _sign_anyway(st, tmp_path / "model.sig", keys[0])
    err = json_of(cli(["verify", str(st), "--trusted-root", str(keys[1]), "--identity", "a@b",
                       "--identity-provider", "https://x", "--json"]), "verify", 2)
    assert err["type"] == "TrustedRootError" and "trusted_root.json" in err["hint"]


def test_trusted_root_that_is_a_key_without_sigstore(
        tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional sigstore package a key given as the trusted root is
    still a TrustedRootError (the file is wrong), not "install sigstore"."""

    from tensorfile.errors import TrustedRootError
    from tensorfile.integrity import SigstoreTrust
    from tensorfile.integrity.keyless import verify_keyless

    st = _weights(tmp_path / "w.safetensors")
    _sign_anyway(st, tmp_path / "model.sig", keys[0])
    monkeypatch.setitem(sys.modules, "sigstore", None)  # `import sigstore` raises ImportError
    with pytest.raises(TrustedRootError, match=r"not a Sigstore trusted root|JSON"):
        verify_keyless((tmp_path / "model.sig").read_bytes(), tmp_path / "model.sig",
                       SigstoreTrust(keys[1], "a@b", "https://x"))


# -- issue 22 items 9 and 10 --------------------------------------------------------------
def test_names_cannot_forge_lines(cli: Any, tmp_path: Path, json_of: Any,
                                  keys: tuple[Path, Path]) -> None:
    evil = "a\nverified: all good\x1b[2J\u202e"
    st = tmp_path / "n.safetensors"
    save_file({evil: np.ones(2, dtype=np.float32), "[red]x": np.ones(1, dtype=np.float32)},
              st, metadata={"k\r": "v"})
    text = cli(["inspect", str(st)]).stdout
    assert "a\\nverified: all good\\x1b[2J\\u202e" in text and "[red]x" in text
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    res = json_of(cli(["inspect", str(st), "--json"]), "inspect", 0)
    assert evil in [t["name"] for t in res["tensors"]]  # JSON keeps the name as it is
    pkl = tmp_path / "g.pkl"
    pkl.write_bytes(b"\x80\x02cos\nsys\rsafe\ntem\nX\x01\x00\x00\x00xq\x85R.")
    out = cli(["scan", str(pkl)]).stdout
    assert "\r" not in out and "\\r" in out
    model = tmp_path / "m"
    _weights(model / "model.safetensors")
    assert cli(["sign", str(model), "--key", str(keys[0])]).code == 0
    (model / "x\nverified: all good").write_text("")
    r = cli(["verify", str(model), "--key", str(keys[1]), "--allow-extra-files"])
    assert r.code == 0 and "\nverified: all good" not in r.stdout and "x\\nverified" in r.stdout


@pytest.mark.parametrize("where", ["name", "shape-row", "metadata"])
def test_names_escaped_in_long_tables(cli: Any, tmp_path: Path, json_of: Any, where: str) -> None:
    """Past 2,000 tensors the table is plain text and the result is checked
    for unprintable text a column at a time: one bad name among many is
    still escaped, the rest printed as they are."""
    from tensorfile_cli._output import printable_tree

    evil = "z\nverified: all good\u2028"
    tensors = {f"t{i:04d}": np.ones(1, dtype=np.uint8) for i in range(2_100)}
    if where == "name":
        tensors[evil] = np.ones(3, dtype=np.uint8)
    st = tmp_path / "many.safetensors"
    save_file(tensors, st, metadata={"k": evil} if where == "metadata" else None)
    text = cli(["inspect", str(st)]).stdout
    assert "\u2028" not in text and "\nverified" not in text
    assert "t2099" in text and text.count("\n") > 2_100
    if where == "name":
        assert "z\\nverified: all good\\u2028" in text
    rows = [{"name": f"t{i}", "shape": [1, 2], "n": i, "f": 0.5, "x": None} for i in range(100)]
    assert printable_tree(rows) is rows  # nothing to escape: not copied
    rows[70]["shape"] = ["ok", evil]  # a list cell that holds text
    assert printable_tree(rows)[70]["shape"] == ["ok", "z\\nverified: all good\\u2028"]
    rows[70] = {**rows[0], evil: 1}  # a key, in one row only
    assert "z\\nverified: all good\\u2028" in printable_tree(rows)[70]


def _without_read_override(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``tensorfile ARGS`` unable to read other users' files, even as root."""
    from tensorfile_cli import __file__ as cli_init

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(cli_init).parents[1]), str(Path(__file__).parents[2] / "src")])}
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: every file is readable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "tensorfile_cli", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=env)


def test_unreadable_input_is_one_line(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    import json

    st = _weights(tmp_path / "secret" / "w.safetensors")
    os.chmod(st, 0o600)
    if os.geteuid() == 0:
        os.chown(st, 65534, 65534)  # another user's file
    else:
        os.chmod(st, 0)
    os.chmod(tmp_path, 0o755)
    for args in (["inspect"], ["hash"], ["convert"], ["sign", "--key", str(keys[0])],
                 ["verify", "--key", str(keys[1])]):
        run = _without_read_override([args[0], str(st), *args[1:], "--json"])
        assert run.returncode == 2, (args, run.stderr)
        err = json.loads(run.stdout)["error"]
        assert err["type"] == "PermissionError" and "permission" in err["hint"], err
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"tensorfile {args[0]}: error: "), lines


# -- rule 5: 80 columns -----------------------------------------------------------------
def test_every_help_fits_80_columns(cli: Any) -> None:
    import typer

    from tensorfile_cli.app import app

    group: Any = typer.main.get_command(app)
    top = cli(["--help"], env={"COLUMNS": "80"})
    assert all(len(ln) <= 80 for ln in top.stdout.splitlines())
    assert not [ln for ln in top.stdout.splitlines()[1:] if ln.endswith("...")]  # no summary cut
    for name, command in group.commands.items():
        r = cli([name, "--help"], env={"COLUMNS": "80"})
        assert r.code == 0
        lines = r.stdout.splitlines()
        assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
        assert "…" not in r.stdout
        words = set(r.stdout.replace(",", " ").replace("/", " ").split())
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-"):
                    assert opt in words, (name, opt)
            for choice in getattr(param.type, "choices", ()):
                assert str(choice) in r.stdout, (name, choice)


def test_hash_and_inspect_at_80_columns(cli: Any, tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    long = "model.layers.31.self_attention.query_key_value.weight_quantization_scales"
    save_file({long: np.ones(2, dtype=np.float32)}, model / "model.safetensors")
    for i in range(3):
        (model / f"tokenizer_part_{i}.json").write_text("{}")
    r = cli(["hash", str(model)], env={"COLUMNS": "80"})
    lines = r.stdout.splitlines()
    # No table that cannot fit: sha256sum's lines, a name one line each.
    sums = [ln for ln in lines if len(ln) > 66 and ln[64:66] == "  "]
    assert [ln[66:] for ln in sums] == ["model.safetensors", *(f"tokenizer_part_{i}.json"
                                                               for i in range(3))]
    assert r.code == 0 and len(lines) == 6 and "┃" not in r.stdout
    r = cli(["inspect", str(model / "model.safetensors")], env={"COLUMNS": "80"})
    assert r.code == 0 and long in r.stdout.splitlines()  # the name whole, on its line


def test_scan_findings_once_and_wrapped_at_words(cli: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R.")
    monkeypatch.chdir(tmp_path)  # a short path: a path is never broken, whatever its length
    r = cli(["scan", pkl.name], env={"COLUMNS": "80"})
    assert r.code == 1
    lines = r.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    assert sum("dangerous: os.system" in ln for ln in lines) == 1  # GLOBAL and REDUCE: one
    assert "(GLOBAL at byte 2, REDUCE at byte 24)" in " ".join(r.stdout.split())
    words = set(" ".join(r.stdout.split()).split())
    assert {"commands", "touches", "files"} <= words  # no word cut across lines


def test_keygen_never_leaves_half_a_pair(cli: Any, tmp_path: Path, json_of: Any) -> None:
    pub = tmp_path / "k.pem.pub"
    pub.write_text("someone's public key")
    err = json_of(cli(["keygen", str(tmp_path / "k.pem"), "--json"]), "keygen", 2)
    assert err["type"] == "OutputExistsError" and str(pub) in err["message"]
    assert not (tmp_path / "k.pem").exists() and pub.read_text() == "someone's public key"


def test_sign_asks_for_the_password_on_a_terminal(tmp_path: Path) -> None:
    """An encrypted key on a terminal: a password prompt, no echo, then signing."""
    import select

    from tensorfile_cli import __file__ as cli_init

    model = tmp_path / "m"
    _weights(model / "model.safetensors")
    key = generate_key(tmp_path / "enc.pem", password="s3cret").private_key
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(cli_init).parents[1]), str(Path(__file__).parents[2] / "src")])}
    env.pop("TENSORFILE_KEY_PASSWORD", None)
    pid, fd = os.forkpty()
    if pid == 0:  # the child: exec at once
        os.execve(sys.executable, [sys.executable, "-m", "tensorfile_cli", "sign", str(model),
                                   "--key", str(key)], env)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([fd], [], [], 60)
            assert ready, seen
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, seen
            seen += chunk

    read_until(b"Password for")
    os.write(fd, b"s3cret\n")
    read_until(b"signed ")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"s3cret" not in seen and (model / "model.sig").exists()


def test_an_ignore_path_outside_the_model_is_a_usage_error(cli: Any, tmp_path: Path,
                                                            keys: tuple[Path, Path]) -> None:
    model = tmp_path / "m"
    _weights(model / "model.safetensors")
    for args in (["hash", str(model)], ["sign", str(model), "--key", str(keys[0])],
                 ["verify", str(model), "--key", str(keys[1])]):
        r = cli([*args, "--ignore-paths", str(tmp_path)])
        assert r.code == 2 and "is not inside the model folder" in r.stderr, r.stderr
        assert "bug in tensorfile" not in r.stderr
