"""Static pickle scanning and, built on the same interpreter, conversion.

Nothing in this package imports, looks up or calls a name found in a pickle,
and importing it loads neither torch nor numpy.

What a user calls:

- :func:`scan` (this package): files or folders in, a :class:`ScanReport`
  out (per file a :class:`FileReport`, per stream a :class:`StreamReport`,
  each :class:`Finding` with its :class:`Verdict`; :class:`Skipped` paths),
  bounded by :class:`ScanLimits` (per file) and :class:`Limits` (per stream).
- :func:`tensorfile.pickles.convert.convert`: a checkpoint file or Hugging
  Face folder to safetensors, returning a ``ConversionReport`` (that module,
  which numpy-backed conversion needs, is not imported here).

The floors below, bottom up (spec/SCANNING.md): :mod:`.opcodes` (bytes ->
opcodes, as ``_pickle.c`` reads them), :mod:`.machine` (opcodes -> the
imports and calls they would make), :mod:`.policy` (the allowlist and
verdicts), :mod:`.containers` (zip, legacy, tar, numpy and raw files ->
pickle streams), :mod:`.scanner`; the converter's private floors
``_builder``, ``_extract``, ``_metadata``, ``_checkpoint``, ``_flatten`` and
``_folders`` under :mod:`.convert`.
"""

from tensorfile.pickles.containers import ScanLimits
from tensorfile.pickles.machine import Limits
from tensorfile.pickles.report import (
    FileReport,
    Finding,
    ScanReport,
    Skipped,
    StreamReport,
    Verdict,
)
from tensorfile.pickles.scanner import scan

__all__ = [
    "FileReport",
    "Finding",
    "Limits",
    "ScanLimits",
    "ScanReport",
    "Skipped",
    "StreamReport",
    "Verdict",
    "scan",
]
