"""Static pickle scanning and conversion: the public names, kept where users know them.

Nothing behind these names imports, looks up or calls a name found in a
pickle, and importing this package loads neither torch nor numpy.

What a user calls:

- :func:`scan`: files or folders in, a :class:`ScanReport` out (per file a
  :class:`FileReport`, per stream a :class:`StreamReport`, each
  :class:`Finding` with its :class:`Verdict`; :class:`Skipped` paths),
  bounded by :class:`ScanLimits` (per file) and :class:`Limits` (per stream).
- :func:`tensorfile.pickles.convert.convert`: a checkpoint file or Hugging
  Face folder to safetensors, returning a ``ConversionReport`` (that module,
  which numpy-backed conversion needs, is not imported here).

Where the code lives (spec/SCANNING.md, "Where each format lives"): the
pickle machine shared by both in :mod:`tensorfile._picklevm`, the scanner in
:mod:`tensorfile.scan` (one module or package per format), the converter in
:mod:`tensorfile.convert`, the report types in :mod:`tensorfile._report`.
"""

from tensorfile._picklevm.machine import Limits
from tensorfile._report import (
    FileReport,
    Finding,
    ScanReport,
    Skipped,
    StreamReport,
    Verdict,
)
from tensorfile.scan.pickle.containers import ScanLimits
from tensorfile.scan.scanner import scan

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
