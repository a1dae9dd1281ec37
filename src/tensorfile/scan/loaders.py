"""The registry of assessors: which read a file, and how their verdicts join.

Every file is read by the assessors that claim it, in two steps:

1. The readings from the bytes alone (:class:`~tensorfile.scan._base.ByteAssessor`,
   local files and remote objects alike, :func:`read_bytes`): the pickle
   family (:class:`~tensorfile.scan.pickle.reading.PickleAssessor`) claims
   every file, because ``torch.load``, ``pickle.load``, ``numpy.load`` and
   ``joblib.load`` unpickle whatever they are given; then safetensors
   (:class:`~tensorfile.scan.safetensors.SafetensorsAssessor`), for a file
   named or shaped like one, which replaces the pickle report only where
   unpickling the file stops before any import (a valid safetensors file is
   no polyglot).
2. The model formats read from a local file and the files beside it
   (:data:`ASSESSORS`, :func:`judge`): every one whose ``detect`` claims the
   file (by its first bytes, or by a name its own loader goes by) reads it,
   because another loader (llama.cpp, onnxruntime, Keras, TensorFlow,
   transformers) would open it: the file's report is their parts (the
   first that found something names the format), plus the pickle streams when the pickle reading found a pickle in
   it (an import or call: a polyglot that ``torch.load`` would also run),
   with the worst verdict of all.

:func:`judge_file` and :func:`judge_url` run both steps for the walk
(:mod:`.scanner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from tensorfile._io.sources import Image, open_image
from tensorfile._report import FileReport, StreamReport, Verdict
from tensorfile.errors import FormatError, ScanError
from tensorfile.scan._base import HEAD_SIZE, Assessor, ByteAssessor, FormatLimits, not_assessed
from tensorfile.scan.chat_template import ChatTemplateAssessor
from tensorfile.scan.gguf import GgufAssessor
from tensorfile.scan.keras import KerasAssessor
from tensorfile.scan.onnx import OnnxAssessor
from tensorfile.scan.pickle.containers import ScanLimits
from tensorfile.scan.pickle.reading import (
    NO_CONTAINER,
    PickleAssessor,
    stops_before_any_import,
    unpickles_something,
)
from tensorfile.scan.safetensors import SafetensorsAssessor
from tensorfile.scan.savedmodel import SavedModelAssessor

SAFETENSORS: Final = SafetensorsAssessor()

def byte_assessors(limits: ScanLimits | None = None,
                   extra_allowed: Mapping[str, str] | None = None) -> tuple[ByteAssessor, ...]:
    """The readings from the bytes alone, for one scan's settings, in order:
    the pickle reading (it claims every file) first."""
    return (PickleAssessor(limits, extra_allowed), SAFETENSORS)


def read_bytes(image: Image, name: str, basename: str, limits: ScanLimits | None = None,
               extra_allowed: Mapping[str, str] | None = None) -> FileReport:
    """Step 1: the report of ``image`` (reported as ``name``, its last path
    component ``basename``) from every :func:`byte_assessors` reading that claims it."""
    first, *others = byte_assessors(limits, extra_allowed)
    report = first.read(image, name, basename)
    assert report is not None  # the pickle reading claims every file
    try:
        head = bytes(image[:HEAD_SIZE])
    except (OSError, FormatError):  # the pickle report says why; a name still claims
        head = b""
    for assessor in others:
        if assessor.detect(head, basename):
            report = _join_bytes(report, assessor, image, name, basename)
    return report


def _join_bytes(report: FileReport, assessor: ByteAssessor, image: Image, name: str,
                basename: str) -> FileReport:
    """The pickle report joined with another byte reading (safetensors): a
    container the pickle reading found (zip, tar, ...) is what the loaders
    read unless the file is named for the other format; a file whose
    unpickling reaches an import keeps its pickle report (``torch.load``
    would run it whatever its name), with the other reading's complaint."""
    named = basename.lower().endswith("." + assessor.format)
    if report.format not in NO_CONTAINER and not named:
        return report
    other = assessor.read(image, name, basename)
    if other is None:  # neither named nor shaped like it
        return report
    if other.format == "unreadable":  # the source failed or changed since the pickle scan
        return other
    if not stops_before_any_import(report):
        if other.error:
            report.error = f"named .{assessor.format}, but {other.error}"
        return report
    return other


#: Step 2, in order: every one whose ``detect`` says yes reads the file; the
#: first with parts names its format.
ASSESSORS: Final[tuple[Assessor, ...]] = (
    GgufAssessor(), KerasAssessor(), OnnxAssessor(), SavedModelAssessor(),
    ChatTemplateAssessor(),
)


def claimants(head: bytes, name: str) -> list[Assessor]:
    """Every model-format assessor that claims a file starting with ``head``
    called ``name``, in :data:`ASSESSORS` order (each names a loader that would open it)."""
    return [a for a in ASSESSORS if a.detect(head, name)]


def assessor_for(head: bytes, name: str) -> Assessor | None:
    """The first assessor that claims a file starting with ``head`` called ``name``."""
    found = claimants(head, name)
    return found[0] if found else None


def judge_file(path: Path, limits: ScanLimits | None = None,
               extra_allowed: Mapping[str, str] | None = None) -> FileReport:
    """Both steps for one local regular file."""
    try:
        image = open_image(path)
    except OSError as exc:
        return FileReport(str(path), "unreadable", Verdict.ERROR, error=f"cannot read: {exc}")
    with image:  # one reading of the file for the pickle scan and the safetensors check
        report = read_bytes(image, str(path), path.name, limits, extra_allowed)
    return judge(path, report)


def judge_url(image: Image, url: str, basename: str, limits: ScanLimits | None = None,
              extra_allowed: Mapping[str, str] | None = None) -> FileReport:
    """Both steps for a remote object (``image``, open): step 2's formats are
    ``not-assessed`` remotely (:func:`judge_remote`)."""
    report = read_bytes(image, url, basename, limits, extra_allowed)
    try:
        head = image[:HEAD_SIZE]
    except OSError:  # the scan's report already says why it could not be read
        return report
    return judge_remote(url, basename, head, report)


def judge(path: Path, pickle_report: FileReport,
          limits: FormatLimits | None = None) -> FileReport:
    """``pickle_report`` (step 1's reading of ``path``) joined with the parts
    of every model-format assessor that claims the file; the first that
    found something names the file's format."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_SIZE)
    except OSError:  # the pickle scanner already reported why it cannot be read
        return pickle_report
    fmt: str | None = None
    parts: list[StreamReport] = []
    for assessor in claimants(head, path.name):
        found = _assess(assessor, path, limits or FormatLimits())
        if found:
            fmt = fmt or assessor.format
            parts += found
    if fmt is None:  # nothing of these formats after all: the pickle report stands
        return pickle_report
    if unpickles_something(pickle_report):
        parts = [*parts, *pickle_report.streams]
    verdict = Verdict.worst((p.verdict for p in parts), Verdict.SAFE)
    return FileReport(str(path), fmt, verdict, parts)


def _assess(assessor: Assessor, path: Path, limits: FormatLimits) -> list[StreamReport]:
    """One assessor's parts; its structural error is one ``error`` part."""
    try:
        return assessor.assess(path, limits)
    except ScanError as exc:
        return [StreamReport(assessor.format, 0, Verdict.ERROR, error=str(exc))]
    except OSError as exc:
        return [StreamReport(assessor.format, 0, Verdict.ERROR,
                             error=f"cannot read: {exc.strerror or exc}")]


def judge_remote(name: str, basename: str, head: bytes,
                 pickle_report: FileReport) -> FileReport:
    """:func:`judge` for a remote object: the model-format assessors read local
    files only, so a file one of them claims is ``not-assessed`` (never
    ``safe``), with the pickle streams when the pickle reading found a pickle in it."""
    found = claimants(head, basename)
    if not found:
        return pickle_report
    parts = [not_assessed(a.format, f"{a.format} files are read only on a local "
                          "disk: download it and scan the file") for a in found]
    if unpickles_something(pickle_report):
        parts = [*parts, *pickle_report.streams]
    verdict = Verdict.worst((p.verdict for p in parts), Verdict.SAFE)
    return FileReport(name, found[0].format, verdict, parts)
