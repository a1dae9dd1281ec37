"""Fuzz the static pickle scanner on any file content.

Contract checked on every input (the whole input is one file):

1. ``tensorfile.pickles.scan`` never raises on bad content (its documented
   promise) and never unpickles: every stdlib unpickling entry point and
   ``torch.load`` raise ``AssertionError`` while it runs.
2. The report is well formed: one file, a known verdict no milder than any
   of its streams' verdicts, ``safe`` only with no error and every stream
   safe without findings, and ``to_dict()`` is JSON (the CLI prints it).
3. Scanning is deterministic: the same bytes give the same report.
"""

from __future__ import annotations

import json

import fuzzlib

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile.pickles import Verdict, scan

_scratch: fuzzlib.Scratch | None = None


def _file(data: bytes) -> str:
    global _scratch
    if _scratch is None:
        _scratch = fuzzlib.Scratch(".pt")
    return str(_scratch.write(data))


def scan_report(data: bytes) -> dict[str, object]:
    """Scan ``data`` as a file and check the report's shape; return its dict form."""
    path = _file(data)
    with fuzzlib.no_unpickling():
        report = scan(path)
    assert len(report.files) == 1, report.files
    file = report.files[0]
    assert isinstance(file.verdict, Verdict), file.verdict
    worst = Verdict.worst((s.verdict for s in file.streams), Verdict.SAFE)
    assert worst.severity <= file.verdict.severity, (worst, file.verdict)
    if file.verdict is Verdict.SAFE:
        assert file.error is None, f"safe with an error: {file.error}"
        assert all(s.verdict is Verdict.SAFE and not s.findings for s in file.streams)
    as_dict = report.to_dict()
    json.dumps(as_dict)
    return as_dict


def TestOneInput(data: bytes) -> None:
    first = scan_report(data)
    assert scan_report(data) == first, "scanning the same bytes twice gave different reports"


if __name__ == "__main__":
    fuzzlib.main(TestOneInput, "scan")
