"""Hand-written hostile pickles, one per technique in shared/notes/torch-pickles.md.

Every sample is bytes from the assembler in ``pickle_kit``; none is ever
loaded. Each must scan as not safe (most as ``dangerous``), and scanning all
of them must leave the canary file uncreated and the named modules unimported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pickle_kit import HOSTILE, glob, proto, text, tup

from tensorfile.pickles import Verdict, scan


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary-created"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sample_is_never_safe(name: str, tmp_path: Path, canary: Path) -> None:
    build, expected = HOSTILE[name]
    path = tmp_path / "sample.bin"
    path.write_bytes(build(canary))
    report = scan(path)
    (file,) = report.files
    assert file.verdict is not Verdict.SAFE
    assert file.verdict.value == expected, [s.to_dict() for s in file.streams]
    if expected == "dangerous":
        assert any(f.verdict is Verdict.DANGEROUS and f.offset is not None
                   for _, f in file.findings)
    assert not canary.exists()


def test_payload_offsets_point_at_the_opcode(tmp_path: Path, canary: Path) -> None:
    data = proto(2) + glob("os", "system") + tup(text("x")) + b"R."
    path = tmp_path / "p.pkl"
    path.write_bytes(data)
    (file,) = scan(path).files
    found = {(f.opcode, f.offset, f.global_name) for _, f in file.findings}
    assert ("GLOBAL", 2, "os.system") in found
    assert ("REDUCE", data.index(b"R."), "os.system") in found


def test_canary_nothing_runs_or_imports(tmp_path: Path, canary: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scan every sample at once; no payload runs and no named module gets imported."""
    module = tmp_path / "tensorfile_scan_canary_mod.py"
    module.write_text(f"open({str(canary)!r}, 'w').close()\ndef run(*a): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, (build, _) in enumerate(HOSTILE.values()):
        (folder / f"{i}.bin").write_bytes(build(canary))
    (folder / "import.pkl").write_bytes(proto(2) + glob("tensorfile_scan_canary_mod", "run")
                                        + tup() + b"R.")
    before = set(sys.modules)
    report = scan(folder)
    assert len(report.files) == len(HOSTILE) + 1
    assert all(f.verdict is not Verdict.SAFE for f in report.files)
    assert report.exit_code in (1, 2)
    assert not canary.exists()
    assert "tensorfile_scan_canary_mod" not in sys.modules
    newly = {m for m in set(sys.modules) - before if m.split(".")[0] in (
        "os", "subprocess", "pip", "pydoc", "venv", "runpy", "cProfile", "timeit", "webbrowser",
        "socket", "urllib", "shutil", "logging", "asyncio", "torch", "some_helper_pkg")}
    assert not newly
