"""The CLI's shared behaviour: version, help, exit codes, errors, colour, start-up imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tensorfile_cli._exit import ExitCode, classify

COMMANDS = ["inspect", "scan", "convert", "hash", "sign", "verify", "keygen", "check"]


def registered() -> list[str]:
    from tensorfile_cli.main import app

    return [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]


def test_version(cli: Any) -> None:
    import tensorfile

    r = cli(["--version"])
    assert r.code == 0
    assert r.stdout.strip() == f"tensorfile {tensorfile.__version__}"


def test_no_arguments_shows_help_and_is_a_usage_error(cli: Any) -> None:
    r = cli([])
    assert r.code == 2
    assert "inspect" in r.stdout + r.stderr


def test_commands_are_the_documented_ones(cli: Any) -> None:
    assert sorted(registered()) == sorted(COMMANDS)
    r = cli(["--help"], env={"COLUMNS": "200"})
    assert r.code == 0
    for command in COMMANDS:
        assert command in r.stdout
    assert "0 ok, 1 a finding" in " ".join(r.stdout.split())


@pytest.mark.parametrize("command", registered())
def test_every_command_has_help_with_an_example_and_common_options(cli: Any, command: str) -> None:
    r = cli([command, "--help"], env={"COLUMNS": "200"})
    assert r.code == 0
    assert "Example:" in r.stdout and f"tensorfile {command}" in r.stdout
    for option in ("--json", "--quiet", "--debug"):
        assert option in r.stdout
    if command in ("sign", "verify", "hash"):
        # Square brackets in help texts are rich markup: a "[default: ...]" would vanish.
        assert "(default: model.sig" in " ".join(r.stdout.split())


def test_unknown_option_is_a_usage_error(cli: Any, st_file: Path) -> None:
    r = cli(["inspect", str(st_file), "--no-such-option"])
    assert r.code == 2
    assert "No such option" in r.stderr


def test_schemas_are_valid_json_and_cover_every_command(schema: Any) -> None:
    for name in ["envelope", *registered()]:
        s = schema(name)
        assert s["type"] == "object" and s["title"]


def test_validator_rejects_what_it_should(schema_validate: Any, schema: Any) -> None:
    env = schema("envelope")
    good = {"command": "scan", "version": "1", "exit_code": 0, "result": {}}
    schema_validate(good, env)
    bad_cases = [
        {**good, "exit_code": 3},
        {**good, "exit_code": True},
        {**good, "command": "rm"},
        {k: v for k, v in good.items() if k != "version"},
        {**good, "extra": 1},
        {**good, "error": {"type": "X", "message": "m", "path": None, "hint": "h"}},  # both
        {"command": "scan", "version": "1", "exit_code": 2},  # neither
        {"command": "scan", "version": "1", "exit_code": 2, "error": {"type": "X", "message": "m"}},
    ]
    for bad in bad_cases:
        with pytest.raises(AssertionError):
            schema_validate(bad, env)


def test_exit_code_table() -> None:
    from tensorfile import errors

    assert classify(errors.DigestMismatchError("x")).code == ExitCode.FINDING
    assert classify(errors.SignatureError("x")).code == ExitCode.FINDING
    assert classify(errors.BundleError("x")).code == ExitCode.FINDING
    assert classify(errors.UnsupportedAlgorithmError("x")).code == ExitCode.FINDING
    assert classify(errors.UnsafePickleError("x")).code == ExitCode.FINDING
    assert classify(errors.KeyLoadError("x")).code == ExitCode.UNUSABLE
    assert classify(errors.ScanError("x")).code == ExitCode.UNUSABLE
    assert classify(errors.ConversionError("x")).code == ExitCode.UNUSABLE
    assert classify(errors.InvalidHeaderError("x")).code == ExitCode.UNUSABLE
    assert classify(FileNotFoundError(2, "No such file", "f")).code == ExitCode.UNUSABLE
    bug = classify(ZeroDivisionError())
    assert bug.code == ExitCode.UNUSABLE and "bug" in bug.hint


def test_importing_the_cli_stays_light() -> None:
    """Start-up: importing the CLI must not pull in the library's heavy modules."""
    code = (
        "import sys, tensorfile_cli.main; "
        "heavy = [m for m in ('numpy', 'torch', 'cryptography', 'rich', 'rich.table', 'tensorfile') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_json_error_envelope(cli: Any, tmp_path: Path, json_of: Any, error_line: Any) -> None:
    missing = tmp_path / "missing.safetensors"
    r = cli(["hash", str(missing), "--json"])
    err = json_of(r, "hash", 2)
    assert err["type"] == "InputNotFoundError"  # exit 2, "no such file or folder"
    assert err["path"] == str(missing)
    assert str(missing) in err["message"]
    json.loads(r.stdout)  # nothing but the one object on stdout


def test_debug_shows_the_traceback(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    plain = cli(["inspect", str(bad)])
    assert plain.code == 2 and "Traceback" not in plain.stderr
    dbg = cli(["inspect", str(bad), "--debug"])
    assert dbg.code == 2
    assert "Traceback" in dbg.stderr and "tensorfile inspect: error:" in dbg.stderr


def test_quiet_prints_nothing_on_success(cli: Any, st_file: Path) -> None:
    r = cli(["inspect", str(st_file), "--quiet"])
    assert r.code == 0 and r.stdout == "" and r.stderr == ""


def test_no_colour_when_piped_or_no_color(shell: Any, tmp_path: Path, st_file: Path) -> None:
    for args in (["scan", str(st_file)], ["inspect", str(st_file)]):  # stdout: verdicts, tables
        assert "\x1b[" not in shell(args).stdout
        assert "\x1b[" in shell(args, env={"FORCE_COLOR": "1"}).stdout
        assert "\x1b[" not in shell(args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    missing = str(tmp_path / "m")
    assert "\x1b[" not in shell(["hash", missing]).stderr
    forced = shell(["hash", missing], env={"FORCE_COLOR": "1"})
    assert "\x1b[" in forced.stderr
    assert "\x1b[" not in shell(["hash", missing], env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stderr


def test_progress_bar_only_on_a_terminal(tmp_path: Path, command_line: list[str], shell: Any) -> None:
    """On a terminal, hashing shows a bar with bytes, rate and time left;
    on a pipe, nothing is drawn."""
    pty = pytest.importorskip("pty")
    import os
    import re

    big = tmp_path / "weights.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # sparse: quick to make, still 64 MiB to hash
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*command_line, "hash", str(big), "--no-tensors"], stdout=subprocess.PIPE, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    frames = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode(errors="replace")).split("\r")
    final = [f for f in frames if "hashing" in f][-1]
    assert re.search(r"hashing .*67\.1/67\.1 MB .*B/s", final), frames
    assert b"root digest" in stdout  # the result itself still goes to stdout
    piped = shell(["hash", str(big), "--no-tensors"])
    assert piped.code == 0 and piped.stderr == ""


def test_shell_completion(shell: Any) -> None:
    script = shell(["--show-completion", "bash"])
    assert script.code == 0 and "_TENSORFILE_COMPLETE=complete_bash" in script.stdout
    words = shell([], env={"_TENSORFILE_COMPLETE": "complete_bash", "COMP_WORDS": "tensorfile s", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["scan", "sign"]
    options = shell(
        [], env={"_TENSORFILE_COMPLETE": "complete_bash", "COMP_WORDS": "tensorfile verify --al", "COMP_CWORD": "2"}
    )
    assert set(options.stdout.split()) == {"--allow-ca-signer", "--allow-extra-files", "--allow-symlinks"}


@pytest.mark.parametrize(
    ("raised", "code", "text"),
    [
        (ZeroDivisionError("boom"), 2, "bug in tensorfile"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_unexpected_failures(
    monkeypatch: pytest.MonkeyPatch, runner: Any, st_file: Path, raised: BaseException, code: int, text: str
) -> None:
    """A bug is one line asking for a report (exit 2), Ctrl-C exits 130; neither shows a traceback."""
    import tensorfile.integrity

    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(tensorfile.integrity, "hash_model", fail)
    r = runner(["hash", str(st_file)])
    assert r.code == code
    assert text in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    if code == 2:
        dbg = runner(["hash", str(st_file), "--debug"])
        assert "Traceback" in dbg.stderr and "ZeroDivisionError: boom" in dbg.stderr
