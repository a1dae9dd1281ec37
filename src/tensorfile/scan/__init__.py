"""Static assessment of model files, one room per format, one interface, one report type.

Pickles and what carries them: :mod:`.pickle` (torch zip, legacy and tar
checkpoints, raw pickles, ``.npy``/``.npz`` and joblib files: every stream a
loader would unpickle, read by the pickle machine in
:mod:`tensorfile._picklevm`), with the ``.npy`` header in :mod:`.npy`,
joblib's compressions in :mod:`.joblib` and the ``.safetensors`` check in
:mod:`.safetensors`. The other formats stand side by side (none imports
another): :mod:`.gguf`, :mod:`.onnx`, :mod:`.keras`, :mod:`.savedmodel`,
:mod:`.chat_template`. Each implements :class:`Assessor` (``detect(head,
name)`` by content, ``assess(path, limits)`` -> parts). Everything reports
with one set of types (:mod:`tensorfile._report`: ``StreamReport``,
``Finding``, ``Verdict``), so a model folder gets one report. Shared lower
floors: :mod:`._base` (the interface, :class:`FormatLimits`, file access),
:mod:`._protobuf` (a bounded wire reader, for ONNX and SavedModel) and
:mod:`._jinja` (the chat template check, for GGUF and tokenizer configs).
:mod:`.loaders` is the one registry: the readings from the bytes alone
(:class:`ByteAssessor`: the pickle family in :mod:`.pickle.reading`, which
claims every file, and safetensors), then the model format that claims the
file, joined into one report; :mod:`.scanner` walks files and folders and
asks the registry about each (:func:`tensorfile.pickles.scan` is its public name).

A format whose loader can run code or read other files and which is not
read is ``not-assessed`` (never ``safe``). spec/SCANNING.md, "Where each
format lives" and "Other model formats", has the rules of each.
"""

from tensorfile.scan._base import Assessor, ByteAssessor, FormatLimits
from tensorfile.scan.loaders import ASSESSORS, assessor_for, byte_assessors, judge

__all__ = ["ASSESSORS", "Assessor", "ByteAssessor", "FormatLimits", "assessor_for",
           "byte_assessors", "judge"]
