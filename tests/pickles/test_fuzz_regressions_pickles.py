"""Regression tests for what fuzzing found in the pickle scanner and converter.

Inputs live in ``fuzz/regressions/scan/`` and ``fuzz/regressions/convert/``;
``tests/fuzz/test_fuzz_regressions.py`` also replays them through the whole
harness contract.
"""

from __future__ import annotations

import re
from pathlib import Path

from tensorfile.pickles import Verdict, scan

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"


def test_malformed_npy_header_is_an_error_not_safe() -> None:
    """A .npy header that is not a literal dict (``Fat1lse`` for ``False``)
    cannot be read, so the file is an error, never safe."""
    report = scan(REGRESSIONS / "scan" / "npy_header_name_error_quotes_address")
    assert report.files[0].verdict is Verdict.ERROR
    assert "not a literal dict" in (report.files[0].streams[0].error or "")


def test_scan_report_of_malformed_npy_header_is_deterministic() -> None:
    """The npy error used to quote ast's message, which holds an object address."""
    path = REGRESSIONS / "scan" / "npy_header_name_error_quotes_address"
    error = scan(path).files[0].streams[0].error or ""
    assert not re.search(r"0x[0-9a-f]{6,}", error), error
