"""The package's imports point down the floors: no cycle, hidden or not (issue 18)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_and_no_module_over_800_lines() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    graph = json.loads(run.stdout)
    assert graph["cycles"] == [] and run.returncode == 0
    # "About 800": _picklevm/machine.py and _picklevm/policy.py (the
    # allowlist's torch name tables) come close; every module is under 820.
    over = [name for name, lines in graph["lines"].items() if lines > 820]
    assert over == [], over


def test_the_tool_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The measure can fail: a cycle behind a function-local import is reported."""
    pkg = tmp_path / "tensorfile"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tensorfile import b\n")
    (pkg / "b.py").write_text("def f() -> None:\n    from tensorfile.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tensorfile import a\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py"), "--src", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 1
    assert "2 modules: tensorfile.a, tensorfile.b" in run.stdout
    assert "tensorfile.b -> tensorfile.a  (function-local)" in run.stdout
    assert "tensorfile.c ->" not in run.stdout  # TYPE_CHECKING imports never run


#: The scanner's and converter's floors, bottom up (spec/SCANNING.md, "Where
#: each format lives"): a module imports only from its own floor or below.
SCAN_FLOORS = ("tensorfile._records", "tensorfile._report", "tensorfile._picklevm",
               "tensorfile.scan", "tensorfile.convert", "tensorfile.pickles")
#: The format rooms of tensorfile.scan: none imports another, except that the
#: pickle containers hand .npy headers and joblib's compressions to theirs.
FORMATS = ("pickle", "joblib", "npy", "safetensors", "gguf", "onnx", "keras",
           "savedmodel", "chat_template")
FORMAT_EDGES_ALLOWED = {("pickle", "npy"), ("pickle", "joblib")}


def _floor(module: str) -> int | None:
    for i, floor in enumerate(SCAN_FLOORS):
        if module == floor or module.startswith(floor + "."):
            return i
    return None


def _room(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "scan" and parts[2] in FORMATS:
        return parts[2]
    return None


def _edges() -> dict[str, list[str]]:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    edges: dict[str, list[str]] = json.loads(run.stdout)["edges"]
    return edges


def test_scan_and_convert_import_down_the_floors() -> None:
    """The pickle machine imports neither the scanner nor the converter, the
    scanner never the converter, and nothing below imports the facades."""
    up = [(a, b) for a, targets in _edges().items() for b in targets
          if (fa := _floor(a)) is not None and (fb := _floor(b)) is not None and fb > fa]
    assert up == []


def test_format_rooms_stand_side_by_side() -> None:
    crossing = [(a, b) for a, targets in _edges().items() for b in targets
                if (ra := _room(a)) and (rb := _room(b)) and ra != rb
                and (ra, rb) not in FORMAT_EDGES_ALLOWED]
    assert crossing == []


def test_every_room_is_in_the_spec_table() -> None:
    """spec/SCANNING.md's table names every module of the scanner's, the
    converter's and the pickle machine's packages (the layout shows it)."""
    spec = (ROOT / "spec" / "SCANNING.md").read_text(encoding="utf-8")
    table = spec[spec.index("## Where each format lives"):]
    table = table[:table.index("\n## ", 1)]
    src = ROOT / "src" / "tensorfile"
    missing = [str(path.relative_to(src)) for folder in ("scan", "_picklevm", "convert")
               for path in sorted((src / folder).rglob("*.py"))
               if path.name != "__init__.py" and path.name not in table]
    assert missing == []
