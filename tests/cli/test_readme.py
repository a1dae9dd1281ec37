"""The README says what is true: set-up commands, code samples, CLI reference, exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfile_cli._exit import ExitCode

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_two_setup_commands_come_first_and_agree_with_ci() -> None:
    first = blocks("bash")[0].strip().splitlines()
    assert README.index("```bash") < README.index("## ")  # before any section
    assert len(first) == 2
    run_example, run_tests = first
    assert run_example.endswith(".venv/bin/python examples/first_run.py")
    assert "torch==2.13.0 -e ." in run_example  # a plain install: the CLI comes with it
    test_command = "python -m pytest -q -n 2"
    assert run_tests.endswith(f".venv/bin/{test_command}")
    # The test command and CI install the same lock, with hashes.
    install = "pip install -q --require-hashes -r requirements/test.lock"
    assert install in run_tests and "--no-deps -e ." in run_tests
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(test_command)}$", ci, flags=re.M), "CI runs another test command"
    assert "--require-hashes -r requirements/test.lock" in ci
    assert (REPO / "requirements" / "test.lock").is_file()
    assert (REPO / "examples" / "first_run.py").is_file()


def test_python_samples_run(tmp_path: Path) -> None:
    """Every ```python block, in order, in one fresh interpreter in an empty folder."""
    pytest.importorskip("torch")
    code = "\n\n".join(blocks("python"))
    assert "load_file" in code and "verify=" in code and "scan(" in code
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:tensorfile"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "safe 0" in proc.stdout
    assert (tmp_path / "model.sig").is_file() and (tmp_path / "model.safetensors").is_file()


def test_python_samples_keep_the_signed_model() -> None:
    """The snippets after the signing one write nothing over the signed model."""
    code = "\n\n".join(blocks("python"))
    signed_at = code.index("sign(")
    assert 'convert("pytorch_model.bin")' not in code[signed_at:]  # would need overwrite=True


def test_console_samples_run_in_order(tmp_path: Path) -> None:
    """Every ```console block, line by line in order, in one empty folder: each exits 0.

    ``python`` and ``tensorfile`` are this environment's (the venv's bin first on PATH).
    """
    pytest.importorskip("torch")
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    lines = [line[2:] for block in blocks("console") for line in block.splitlines()
             if line.startswith("$ ")]
    assert any(line.startswith("tensorfile verify") for line in lines)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TENSORFILE_KEY_PASSWORD", None)
    for line in lines:
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    assert (tmp_path / "my-model" / "model.sig").is_file()
    assert (tmp_path / "converted" / "model.safetensors").is_file()


def test_cli_reference_lists_every_command_and_its_options() -> None:
    from typer.main import get_command

    from tensorfile_cli.main import app

    group = get_command(app)
    table = README[README.index("## Command line") : README.index("### Exit codes")]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"`tensorfile {name}" in table, name
        for option in re.findall(r"(--[a-z-]+)", table[table.index(f"`tensorfile {name}") :].split("\n")[0]):
            names = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            assert option in names, (name, option)


def test_exit_code_table_matches_the_code() -> None:
    table = README[README.index("### Exit codes") : README.index("### Output")]
    rows = re.findall(r"^\| (\d) \|", table, flags=re.M)
    assert [int(r) for r in rows] == [int(c) for c in ExitCode]


def test_measured_table_is_marked_for_the_lead() -> None:
    section = README[README.index("### Measured") : README.index("## Benchmarks and fuzzers")]
    assert "MEASURED NUMBERS" in section
    for script in re.findall(r"`(bench_\w+\.py)`", section):
        assert (REPO / "bench" / script).is_file(), script


def test_benchmark_and_fuzz_commands_exist() -> None:
    section = README[README.index("## Benchmarks and fuzzers") :]
    for script in re.findall(r"bench/(bench_\w+\.py)", section):
        assert (REPO / "bench" / script).is_file(), script
    assert os.access(REPO / "fuzz" / "run", os.X_OK)
