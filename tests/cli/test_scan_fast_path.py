"""The console script's Typer-free ``scan`` path behaves exactly like the Typer command.

``tensorfile scan PATHS [--json] [--quiet|-q] [--debug]`` runs without importing
Typer (start-up is most of a scan's wall time); every other command line goes
to Typer. These tests compare the two paths byte for byte, as processes, and
check that the fast path's reading of a command line is click's.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfile_cli import _scan

#: The Typer command line, run as a process the way the console script runs.
TYPER = [sys.executable, "-c", "from tensorfile_cli.app import app; app(prog_name='tensorfile')"]
#: The console script's entry point, run as a process; reports whether Typer was imported.
FAST = [
    sys.executable,
    "-c",
    "import atexit, sys; "
    "atexit.register(lambda: sys.stderr.write('typer imported: %s\\n' % ('typer' in sys.modules))); "
    "from tensorfile_cli.main import main; main()",
]


def run(prefix: list[str], args: list[str], **extra_env: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["COLUMNS"] = "100"
    env.update(extra_env)
    p = subprocess.run([*prefix, *args], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=120)
    return p.returncode, p.stdout, p.stderr


def fast(args: list[str], **extra_env: str) -> tuple[int, str, str, bool]:
    """Exit code, stdout, stderr (without the probe line) and whether Typer was imported."""
    code, out, err = run(FAST, args, **extra_env)
    err, _, probe = err.rpartition("typer imported: ")
    assert probe.strip() in ("True", "False"), err + probe
    return code, out, err, probe.strip() == "True"


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Safe, dangerous, unknown and unreadable inputs (written as bytes, never loaded)."""
    import fractions

    files = {
        "safe": (tmp_path / "safe.pkl", pickle.dumps({"step": 3, "lr": [0.1, 0.01]}, protocol=2)),
        "dangerous": (tmp_path / "evil.pkl",
                      b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."),
        "unknown": (tmp_path / "odd.pkl", pickle.dumps(fractions.Fraction(1, 3), protocol=2)),
        "truncated": (tmp_path / "cut.pkl", pickle.dumps({"a": list(range(50))}, protocol=4)[:-9]),
    }
    for path, data in files.values():
        path.write_bytes(data)
    paths = {name: path for name, (path, _) in files.items()}
    paths["missing"] = tmp_path / "absent.bin"
    paths["folder"] = tmp_path
    return paths


CASES = [
    (["safe"], [], 0),
    (["safe"], ["--json"], 0),
    (["dangerous"], [], 1),
    (["dangerous", "safe"], ["--json"], 1),
    (["unknown"], ["-q"], 1),
    (["truncated"], [], 2),
    (["truncated"], ["--json", "--debug"], 2),
    (["missing"], [], 2),
    (["missing"], ["--json"], 2),
    (["folder"], [], 1),
    (["safe"], ["--quiet"], 0),
    (["dangerous"], ["--quiet", "--json"], 1),
]


@pytest.mark.parametrize(("names", "flags", "code"), CASES)
def test_fast_path_prints_what_typer_prints(inputs: dict[str, Path], names: list[str],
                                            flags: list[str], code: int) -> None:
    paths = [str(inputs[n]) for n in names]
    # Options before, between and after the paths: click accepts all three.
    args = ["scan", *flags[:1], *paths[:1], *flags[1:], *paths[1:]]
    assert _scan.fast_args(args) is not None
    fast_code, fast_out, fast_err, typer_loaded = fast(args)
    assert not typer_loaded
    assert (fast_code, fast_out, fast_err) == run(TYPER, args)
    assert fast_code == code
    if "--json" in flags:
        assert fast_out.startswith("{") and f'"exit_code": {code}' in fast_out
    elif "--quiet" in flags or "-q" in flags:
        assert fast_out == ""
    else:
        overall = {0: ("safe",), 1: ("dangerous", "unknown"), 2: ("error",)}[code]
        assert " scanned: " in fast_out and fast_out.split()[-1] in overall


def test_colours_are_typers(inputs: dict[str, Path]) -> None:
    args = ["scan", str(inputs["dangerous"]), str(inputs["safe"]), str(inputs["truncated"])]
    fast_code, fast_out, fast_err, typer_loaded = fast(args, FORCE_COLOR="1")
    assert not typer_loaded and "\x1b[31;1mdangerous\x1b[0m" in fast_out
    assert (fast_code, fast_out, fast_err) == run(TYPER, args, FORCE_COLOR="1")


def test_double_dash_ends_the_options(inputs: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "--json"
    odd.write_bytes(pickle.dumps([1, 2], protocol=2))
    monkeypatch.chdir(tmp_path)
    args = ["scan", "-q", "--", "--json", str(inputs["safe"])]
    assert _scan.fast_args(args) == _scan.ScanArgs([Path("--json"), inputs["safe"]], quiet=True)
    fast_code, fast_out, fast_err, typer_loaded = fast(args)
    assert not typer_loaded and fast_code == 0 and fast_out == fast_err == ""
    assert (fast_code, fast_out, fast_err) == run(TYPER, args)


@pytest.mark.parametrize("args", [
    ["scan", "--help"],
    ["scan", "-h"],
    ["scan", "x.pkl", "--help"],
    ["--help"],
    ["--version"],
    ["scan"],                              # missing argument
    ["scan", "x.pkl", "--no-such-option"],
    ["scan", "--jso", "x.pkl"],            # click does not expand prefixes
    ["scan", "--json=1", "x.pkl"],         # a flag takes no value
    ["scan", "-qj", "x.pkl"],
    ["scan", "-", "x.pkl"],
    ["scan", "--version", "x.pkl"],
    ["inspect", "x.pkl"],
    [],
])
def test_everything_else_goes_to_typer(args: list[str]) -> None:
    assert _scan.fast_args(args) is None
    fast_code, fast_out, fast_err, typer_loaded = fast(args)
    assert typer_loaded
    assert (fast_code, fast_out, fast_err) == run(TYPER, args)


@pytest.mark.parametrize(("args", "message"), [
    (["scan"], "Missing argument"),  # typer<0.20 names it 'PATHS...'
    (["scan", "x.pkl", "--no-such-option"], "No such option:? '?--no-such-option"),
    (["scan", "--json=1", "x.pkl"], "Option '--json' does not take a value"),
])
def test_usage_errors_exit_2_as_typer_does(args: list[str], message: str) -> None:
    code, out, err, _ = fast(args)
    assert code == 2 and out == ""
    # rich boxes the message and may wrap it, at a width that varies by version.
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", err).split())
    assert re.search(message, flat), err


def test_scan_help_is_typers() -> None:
    code, out, _, typer_loaded = fast(["scan", "--help"])
    assert code == 0 and typer_loaded
    assert "Usage: tensorfile scan" in out and "--json" in out and "Example:" in out


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _scan.fast_args(["scan", "x.pkl"]) is not None
    monkeypatch.setenv("_TENSORFILE_COMPLETE", "complete_bash")
    assert _scan.fast_args(["scan", "x.pkl"]) is None


def _scan_command() -> Any:
    import typer

    from tensorfile_cli.app import app

    return typer.main.get_command(app).commands["scan"]


def test_fast_flags_are_the_typer_commands_options() -> None:
    options = {
        opt: param.name
        for param in _scan_command().params
        if param.param_type_name == "option"
        for opt in (*param.opts, *param.secondary_opts)
        if opt not in ("--help", "-h")
    }
    assert options == {**_scan.FLAGS, **_scan.TYPER_ONLY}
    assert set(_scan.ScanArgs._fields) == {"paths", *_scan.FLAGS.values()}


#: Command-line words the fast path takes, and words it leaves to Typer (weighted 4:1).
TOKENS = ["--json", "--quiet", "-q", "--debug", "--", "a.pkl", "b c", "", "scan", "dir/"] * 4 + [
    "-", "--jso", "-qq", "--help", "-h", "--json=1", "-x", "--version"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=7))
def test_fast_path_reads_a_command_line_as_click_does(tokens: list[str]) -> None:
    """Whenever the fast path takes a command line, click parses it to the same values."""
    parsed = _scan.fast_args(["scan", *tokens])
    if parsed is None:
        # Only for what it cannot read as click would: an option it does not
        # know before any "--", or no path at all.
        cut = tokens.index("--") if "--" in tokens else len(tokens)
        before, after = tokens[:cut], tokens[cut + 1:]
        unknown_option = any(t.startswith("-") and t not in _scan.FLAGS for t in before)
        no_path = not after and all(t.startswith("-") for t in before)
        assert unknown_option or no_path
        return
    ctx = _scan_command().make_context("scan", list(tokens))
    params = ctx.params
    assert [Path(p) for p in params["paths"]] == parsed.paths
    assert (params["json_out"], params["quiet"], params["debug"]) == (
        parsed.json_out, parsed.quiet, parsed.debug)


def test_main_still_exports_the_typer_app() -> None:
    import tensorfile_cli.app
    import tensorfile_cli.main

    assert tensorfile_cli.main.app is tensorfile_cli.app.app
    with pytest.raises(AttributeError):
        _ = tensorfile_cli.main.no_such_name


def test_closed_stdout_exits_1_quietly_as_typer_does(tmp_path: Path) -> None:
    """``tensorfile scan FILE | head -1``: click exits 1 with nothing on stderr."""
    many = tmp_path / "many.pkl"  # 1,500 unknown globals: ~100 KB of report, more than a pipe holds
    many.write_bytes(b"\x80\x02" + b"".join(b"cfoo\nbar%d\n0" % i for i in range(1500)) + b"N.")
    results = []
    for prefix in (FAST, TYPER):
        # Into a pipe (no COLUMNS, which pytest-xdist exports): one line per file.
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        p = subprocess.Popen([*prefix, "scan", str(many)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert p.stdout is not None and p.stderr is not None
        first = p.stdout.readline()
        p.stdout.close()
        err = p.stderr.read().decode()
        results.append((first, p.wait(timeout=120), err.replace("typer imported: False\n", "")
                        .replace("typer imported: True\n", "")))
    assert results[0] == results[1]
    assert results[0][1] == 1 and results[0][2] == "" and b": unknown (pickle" in results[0][0]


def test_windows_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    """click expands wildcards on Windows (``scan *.bin`` in cmd.exe); the fast path does not."""
    monkeypatch.setattr(_scan.os, "name", "nt")
    assert _scan.fast_args(["scan", "x.pkl"]) is None
