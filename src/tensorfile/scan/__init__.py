"""Static assessment of model formats besides pickles: one interface, one report type.

Each format has its own module, and the modules stand side by side (none
imports another): :mod:`.gguf`, :mod:`.onnx`, :mod:`.keras`,
:mod:`.savedmodel`, :mod:`.chat_template`. Each implements
:class:`Assessor` (``detect(head, name)`` by content, ``assess(path,
limits)`` -> parts) and reports with the pickle scanner's types
(:class:`~tensorfile.pickles.report.StreamReport`, ``Finding``, ``Verdict``),
so a model folder gets one report. Shared lower floors: :mod:`._base` (the
interface, :class:`FormatLimits`, file access), :mod:`._protobuf` (a bounded
wire reader, for ONNX and SavedModel) and :mod:`._jinja` (the chat template
check, for GGUF and tokenizer configs). :mod:`.loaders` routes a file to its
assessor and joins the result with the pickle scanner's
(:func:`tensorfile.pickles.scan` calls it for every file).

A format whose loader can run code or read other files and which is not
read is ``not-assessed`` (never ``safe``). spec/SCANNING.md, "Other model
formats", has the rules of each.
"""

from tensorfile.scan._base import Assessor, FormatLimits
from tensorfile.scan.loaders import ASSESSORS, assessor_for, judge

__all__ = ["ASSESSORS", "Assessor", "FormatLimits", "assessor_for", "judge"]
