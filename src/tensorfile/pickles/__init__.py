"""Static pickle scanning (and, built on the same interpreter, conversion).

Nothing in this package imports, looks up or calls a name found in a pickle,
and importing it loads neither torch nor numpy.

Layers, bottom up: :mod:`.opcodes` (bytes -> opcodes, as ``_pickle.c`` reads
them), :mod:`.machine` (opcodes -> the imports and calls they would make),
:mod:`.policy` (the allowlist and verdicts, spec/SCANNING.md),
:mod:`.containers` (zip, legacy, tar, numpy and raw files -> pickle streams)
and :func:`scan`, the library call, which returns a :class:`ScanReport`.
"""

from tensorfile.pickles.report import (
    FileReport,
    Finding,
    ScanReport,
    Skipped,
    StreamReport,
    Verdict,
)
from tensorfile.pickles.scanner import scan

__all__ = ["FileReport", "Finding", "ScanReport", "Skipped", "StreamReport", "Verdict", "scan"]
