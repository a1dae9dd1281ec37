"""Shared helpers for the CLI tests.

``cli`` runs the command line two ways, so every test exercises both: in
process through Typer's ``CliRunner`` and as the installed console script in
a subprocess (what users and CI pipelines run). ``check_json`` validates
``--json`` output against the schemas shipped in ``tensorfile_cli/schemas``
with a small JSON Schema validator (the subset the schemas use; jsonschema is
not a dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tensorfile_cli

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
SCHEMAS = Path(tensorfile_cli.__file__).resolve().parent / "schemas"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        obj = json.loads(self.stdout)
        assert isinstance(obj, dict)
        return obj


def script_command() -> list[str]:
    """The installed ``tensorfile`` console script, or ``python -m tensorfile_cli``."""
    exe = Path(sys.executable).parent / "tensorfile"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorfile_cli"]


#: Inherited settings that would make a pipe look like a terminal: pytest-xdist
#: exports COLUMNS=80 to its workers, and the CLI wraps text to COLUMNS.
#: A test that wants them passes them in ``env``.
_TERMINAL_ENV = ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")


def run_process(args: list[str], env: Mapping[str, str] | None = None) -> Run:
    full_env = {k: v for k, v in os.environ.items() if k not in _TERMINAL_ENV}
    full_env.update(env or {})
    p = subprocess.run(
        [*script_command(), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
        timeout=120,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def run_runner(args: list[str], env: Mapping[str, str] | None = None) -> Run:
    from typer.testing import CliRunner

    from tensorfile_cli.main import app

    unset: dict[str, str | None] = dict.fromkeys(_TERMINAL_ENV[2:])
    r = CliRunner().invoke(app, args, env={**unset, **(env or {})}, prog_name="tensorfile")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Run(r.exit_code, r.stdout, r.stderr)


CliFn = Callable[..., Run]


@pytest.fixture(params=["runner", "process"])
def cli(request: pytest.FixtureRequest) -> CliFn:
    """Run ``tensorfile ARGS...`` in process (CliRunner) and as a subprocess."""
    return run_runner if request.param == "runner" else run_process


# -- a small JSON Schema validator (the subset our schemas use) ----------------------
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}
_KNOWN = {
    "$schema", "$id", "$defs", "title", "description", "$ref", "type", "enum", "const",
    "properties", "required", "additionalProperties", "items", "minimum", "oneOf",
    "anyOf", "allOf",
}  # fmt: skip


def validate(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, at: str = "$") -> None:
    """Raise AssertionError naming the path of the first place ``instance`` breaks ``schema``."""
    root = schema if root is None else root
    unknown = set(schema) - _KNOWN
    assert not unknown, f"validator does not implement {unknown} (at {at})"
    if "$ref" in schema:
        # "#/$defs/x" in this schema, or "other.json#/$defs/x" beside it.
        file, _, pointer = schema["$ref"].partition("#")
        base = load_schema(file.removesuffix(".json")) if file else root
        target: Any = base
        for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
            target = target[part]
        validate(instance, target, base, at)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_TYPES[t](instance) for t in types), f"{at}: {instance!r} is not {types}"
    if "enum" in schema:
        assert instance in schema["enum"], f"{at}: {instance!r} not in {schema['enum']}"
    if "const" in schema:
        assert instance == schema["const"], f"{at}: {instance!r} != {schema['const']!r}"
    if "minimum" in schema and _TYPES["number"](instance):
        assert instance >= schema["minimum"], f"{at}: {instance} < {schema['minimum']}"
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in instance, f"{at}: missing required {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                validate(value, props[key], root, f"{at}.{key}")
            elif extra is False:
                raise AssertionError(f"{at}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                validate(value, extra, root, f"{at}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            validate(item, schema["items"], root, f"{at}[{i}]")
    for sub in schema.get("allOf", []):
        validate(instance, sub, root, at)
    if "anyOf" in schema:
        assert sum(_passes(instance, s, root, at) for s in schema["anyOf"]) >= 1, f"{at}: matches no anyOf"
    if "oneOf" in schema:
        n = sum(_passes(instance, s, root, at) for s in schema["oneOf"])
        assert n == 1, f"{at}: matches {n} of oneOf, want exactly 1"


def _passes(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any], at: str) -> bool:
    try:
        validate(instance, schema, root, at)
    except AssertionError:
        return False
    return True


def load_schema(name: str) -> dict[str, Any]:
    obj = json.loads((SCHEMAS / f"{name}.json").read_text())
    assert isinstance(obj, dict)
    return obj


def check_json(run: Run, command: str, code: int) -> dict[str, Any]:
    """Parse ``--json`` stdout, validate envelope and result, check the exit code.

    Returns the ``result`` (on success) or the ``error`` object.
    """
    obj = run.json()
    validate(obj, load_schema("envelope"))
    assert obj["command"] == command
    assert obj["exit_code"] == code == run.code, (obj["exit_code"], code, run.code, run.stderr)
    if "result" in obj:
        validate(obj["result"], load_schema(command))
        return dict(obj["result"])
    return dict(obj["error"])


def one_error_line(run: Run, command: str) -> str:
    """The single ``tensorfile CMD: error: ...`` line on stderr (no traceback)."""
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"tensorfile {command}: error: "), lines[0]
    assert "Traceback" not in run.stderr
    return lines[0]


# Test modules are imported with --import-mode=importlib, which cannot import
# this conftest by name: the helpers reach them as fixtures.
@pytest.fixture
def json_of() -> Callable[[Run, str, int], dict[str, Any]]:
    return check_json


@pytest.fixture
def error_line() -> Callable[[Run, str], str]:
    return one_error_line


@pytest.fixture
def schema_validate() -> Callable[..., None]:
    return validate


@pytest.fixture
def schema() -> Callable[[str], dict[str, Any]]:
    return load_schema


@pytest.fixture
def runner() -> Callable[..., Run]:
    """Run in process only (for tests that patch the library)."""
    return run_runner


@pytest.fixture
def command_line() -> list[str]:
    """argv prefix of the installed console script."""
    return script_command()


@pytest.fixture
def shell() -> Callable[..., Run]:
    """Run the installed console script only (for terminal/environment checks)."""
    return run_process


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    """A small safetensors file with two tensors and metadata."""
    import numpy as np

    import tensorfile

    path = tmp_path / "model.safetensors"
    tensorfile.save_file(
        {"encoder.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.zeros((), np.int64)},
        path,
        metadata={"format": "pt", "note": "test"},
    )
    return path


# -- tensorfile check (issue 26) ---------------------------------------------------------
_LIGHTNING_SAVE = """
import argparse, sys, torch
torch.save({
    "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0",
    "state_dict": {"layer.weight": torch.ones(2, 2), "layer.bias": torch.zeros(2)},
    "hparams_name": "args",
    "hyper_parameters": argparse.Namespace(lr=0.01, batch_size=32, name="run-1"),
}, sys.argv[1])
"""


def torch_saved_lightning(path: Path) -> Path:
    """The checkpoint written by the real ``torch.save`` (in a subprocess: the
    tests never import torch)."""
    subprocess.run([sys.executable, "-c", _LIGHTNING_SAVE, str(path)], check=True, timeout=300)
    return path


def hand_built_lightning(path: Path) -> Path:
    """The same checkpoint assembled opcode by opcode with the pickle tests' kit
    (what ``torch.save`` writes, protocol 2, in a zip), for the numpy-only core
    run where torch is not installed. ``test_hand_built_lightning_scans_as_torch_saved``
    holds the two to the same scan where torch is there."""
    import struct

    kits = str(REPO / "tests" / "pickles")
    if kits not in sys.path:
        sys.path.insert(0, kits)
    import torch_pickle_kit as kit

    namespace = kit.glob("argparse", "Namespace") + kit.EMPTY_TUPLE + b"\x81" + kit.dict_of([
        ("lr", b"G" + struct.pack(">d", 0.01)), ("batch_size", kit.integer(32)),
        ("name", kit.text("run-1"))]) + b"b"  # NEWOBJ, then BUILD with its __dict__
    state = kit.dict_of([
        ("layer.weight", kit.tensor_v2(kit.storage("0", numel=4), 0, [2, 2], [2, 1])),
        ("layer.bias", kit.tensor_v2(kit.storage("1", numel=2), 0, [2], [1]))])
    top = kit.dict_of([("epoch", kit.integer(3)), ("global_step", kit.integer(120)),
                       ("pytorch-lightning_version", kit.text("2.5.0")), ("state_dict", state),
                       ("hparams_name", kit.text("args")), ("hyper_parameters", namespace)])
    records = {"0": struct.pack("<4f", 1, 1, 1, 1), "1": struct.pack("<2f", 0, 0)}
    path.write_bytes(kit.Checkpoint(kit.stream(top), records).zip_bytes(prefix=path.stem))
    return path


@pytest.fixture
def lightning_builders() -> tuple[Callable[[Path], Path], Callable[[Path], Path]]:
    """(torch_saved_lightning, hand_built_lightning), to compare the two."""
    return torch_saved_lightning, hand_built_lightning


@pytest.fixture(scope="session")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning-style checkpoint whose hyper-parameters are an ``argparse.Namespace``:
    torch's own where torch is installed, else the same assembled by hand."""
    import importlib.util

    path = tmp_path_factory.mktemp("lightning") / "last.ckpt"
    if importlib.util.find_spec("torch") is None:
        return hand_built_lightning(path)
    return torch_saved_lightning(path)
