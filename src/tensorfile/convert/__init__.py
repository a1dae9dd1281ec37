"""Convert torch pickle checkpoints to safetensors without executing them.

The public call is :func:`convert` (also reachable as
``tensorfile.pickles.convert.convert``); :class:`ConversionReport` says what
was written, dropped and flagged. The floors below it, bottom up: the pickle
machine (:mod:`tensorfile._picklevm`) and the scanner's containers
(:mod:`tensorfile.scan.pickle`), then :mod:`._builder` (what an allowlisted
pickle builds), :mod:`._metadata` (plain values as JSON), :mod:`._extract`
(``--key`` sub-trees, salvage), :mod:`._checkpoint` (a container becomes an
object graph), :mod:`._flatten` (tensors by name), :mod:`._folders` (the other
files of a model folder) and :mod:`._convert` (the call itself).
"""

from tensorfile.convert._convert import (
    ConversionReport,
    DroppedValue,
    FileAction,
    ProgressCallback,
    convert,
)

__all__ = ["ConversionReport", "DroppedValue", "FileAction", "ProgressCallback", "convert"]
