"""The scanner's import path stays light: no torch, no numpy (the CLI starts fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tensorfile"


def test_scanner_imports_neither_torch_nor_numpy() -> None:
    # The package's own __init__ (the safetensors reader) is stubbed out so only
    # what the scanner itself imports is measured.
    code = (
        "import sys, types\n"
        f"m = types.ModuleType('tensorfile'); m.__path__ = [{str(SRC)!r}]\n"
        "sys.modules['tensorfile'] = m\n"
        "from tensorfile.pickles import scan\n"
        "scan(sys.argv[1])\n"
        "heavy = sorted(n for n in ('torch', 'numpy', 'ml_dtypes') if n in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, __file__], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_public_names_outlive_the_move() -> None:
    """tensorfile.pickles and tensorfile.pickles.convert are facades over the
    new homes (issue 27 item 6): the same objects, not copies."""
    import tensorfile.convert
    import tensorfile.pickles
    import tensorfile.pickles.convert
    from tensorfile._report import ScanReport, Verdict
    from tensorfile.scan.scanner import scan

    assert tensorfile.pickles.scan is scan
    assert tensorfile.pickles.ScanReport is ScanReport and tensorfile.pickles.Verdict is Verdict
    assert tensorfile.pickles.convert.convert is tensorfile.convert.convert
    assert tensorfile.pickles.convert.ConversionReport is tensorfile.convert.ConversionReport
    assert set(tensorfile.pickles.convert.__all__) == set(tensorfile.convert.__all__)
