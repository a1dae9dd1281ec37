"""Which format assessor reads a file, and how its verdict joins the pickle scanner's.

The pickle reading (:mod:`tensorfile.scan.pickle`) reads every file the way
``torch.load``, ``pickle.load`` and ``numpy.load`` would. A file that one of
the assessors in :data:`ASSESSORS` also claims (by its first bytes, or by a
name its own loader goes by) is read by that assessor too, because another
loader (llama.cpp, onnxruntime, Keras, TensorFlow, transformers) would open
it: the file's report is the assessor's parts, plus the pickle streams when
the pickle scanner found a pickle in it (an import or call: a polyglot that
``torch.load`` would also run), with the worst verdict of all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tensorfile._report import FileReport, StreamReport, Verdict
from tensorfile.errors import ScanError
from tensorfile.scan._base import HEAD_SIZE, Assessor, FormatLimits, not_assessed
from tensorfile.scan.chat_template import ChatTemplateAssessor
from tensorfile.scan.gguf import GgufAssessor
from tensorfile.scan.keras import KerasAssessor
from tensorfile.scan.onnx import OnnxAssessor
from tensorfile.scan.savedmodel import SavedModelAssessor

#: In order: the first whose ``detect`` says yes reads the file.
ASSESSORS: Final[tuple[Assessor, ...]] = (
    GgufAssessor(), KerasAssessor(), OnnxAssessor(), SavedModelAssessor(),
    ChatTemplateAssessor(),
)


def assessor_for(head: bytes, name: str) -> Assessor | None:
    """The assessor that claims a file starting with ``head`` called ``name``."""
    return next((a for a in ASSESSORS if a.detect(head, name)), None)


def judge(path: Path, pickle_report: FileReport,
          limits: FormatLimits | None = None) -> FileReport:
    """``pickle_report`` (the pickle scanner's reading of ``path``) joined with the
    reading of the format assessor that claims the file, if one does."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_SIZE)
    except OSError:  # the pickle scanner already reported why it cannot be read
        return pickle_report
    assessor = assessor_for(head, path.name)
    if assessor is None:
        return pickle_report
    try:
        parts = assessor.assess(path, limits or FormatLimits())
    except ScanError as exc:
        parts = [StreamReport(assessor.format, 0, Verdict.ERROR, error=str(exc))]
    except OSError as exc:
        parts = [StreamReport(assessor.format, 0, Verdict.ERROR,
                              error=f"cannot read: {exc.strerror or exc}")]
    if not parts:
        return pickle_report
    if _unpickles_something(pickle_report):
        parts = [*parts, *pickle_report.streams]
    verdict = Verdict.worst((p.verdict for p in parts), Verdict.SAFE)
    return FileReport(str(path), assessor.format, verdict, parts)


def judge_remote(name: str, basename: str, head: bytes,
                 pickle_report: FileReport) -> FileReport:
    """:func:`judge` for a remote object: the assessors read local files only,
    so a file one of them claims is ``not-assessed`` (never ``safe``), with the
    pickle streams when the pickle scanner found a pickle in it."""
    assessor = assessor_for(head, basename)
    if assessor is None:
        return pickle_report
    parts = [not_assessed(assessor.format, f"{assessor.format} files are read only on a local "
                          "disk: download it and scan the file")]
    if _unpickles_something(pickle_report):
        parts = [*parts, *pickle_report.streams]
    verdict = Verdict.worst((p.verdict for p in parts), Verdict.SAFE)
    return FileReport(name, assessor.format, verdict, parts)


def _unpickles_something(report: FileReport) -> bool:
    """Whether the pickle scanner found a pickle that imports or calls anything.

    Other readings of a file that is not a pickle (``not-pickle``, a zip
    without a ``.pkl``) end before any import, so they add nothing."""
    return any(s.globals or s.findings for s in report.streams)
