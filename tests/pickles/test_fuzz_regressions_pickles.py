"""Regression tests for what fuzzing found in the pickle scanner and converter.

Fixed inputs live in ``fuzz/regressions/<harness>/``, open ones in
``fuzz/open/<harness>/``; ``tests/fuzz/test_fuzz_regressions.py`` also replays
them through the whole harness contract.
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
    assert "not a literal" in (report.files[0].streams[0].error or "")


def test_scan_report_of_malformed_npy_header_is_deterministic() -> None:
    """The npy error used to quote ast's message, which holds an object address."""
    path = REGRESSIONS / "scan" / "npy_header_name_error_quotes_address"
    error = scan(path).files[0].streams[0].error or ""
    assert not re.search(r"0x[0-9a-f]{6,}", error), error


def test_zip64_locator_past_the_end_is_an_error_not_an_exception() -> None:
    """A zip64 end-of-central-directory locator that points past the end of the
    file: ``scan`` promises never to raise on bad content."""
    path = REGRESSIONS / "scan" / "zip64_locator_past_end"
    assert path.is_file()
    report = scan(path)
    assert report.files[0].format == "zip"
    assert report.files[0].verdict is Verdict.ERROR


def test_pickle_prepended_to_a_torch_zip_is_never_safe(tmp_path: Path) -> None:
    """``torch.load`` takes a file for a zip only if it starts with ``PK\\x03\\x04``;
    otherwise it unpickles from byte 0. A hostile pickle followed by a valid
    torch zip (which Python's zipfile and tensorfile's zip reader still find
    from the end) therefore runs the pickle, so the scanner must not call it safe."""
    from torch_pickle_kit import Checkpoint, dict_of, storage, stream, tensor_v2

    benign = Checkpoint(
        stream(dict_of([("w", tensor_v2(storage("0"), 0, [4], [1]))])), {"0": bytes(16)}
    ).zip_bytes()
    assert scan_bytes(tmp_path, benign) is Verdict.SAFE
    hostile = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."  # never loaded
    assert scan_bytes(tmp_path, hostile) is Verdict.DANGEROUS
    assert scan_bytes(tmp_path, hostile + benign) is not Verdict.SAFE


def scan_bytes(folder: Path, data: bytes) -> Verdict:
    path = folder / "checkpoint.pt"
    path.write_bytes(data)
    return scan(path).verdict
