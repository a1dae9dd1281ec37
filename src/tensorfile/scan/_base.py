"""The one interface every format assessor implements, its limits, and small shared helpers.

An assessor answers for one model format. Two kinds share the registry of
:mod:`.loaders`: a :class:`ByteAssessor` reads a file's bytes (local or
remote) into a whole report (the pickle family, which claims every file,
and safetensors); an :class:`Assessor` reads a local model file, with the
files beside it, into parts (GGUF, ONNX, Keras, SavedModel, chat templates).
For an :class:`Assessor`, :meth:`Assessor.detect` says from
a file's first bytes (and its name, for formats whose loader goes by name)
whether the file is one of its own; :meth:`Assessor.assess` reads it within
:class:`FormatLimits` and returns its parts as the pickle scanner's
:class:`~tensorfile._report.StreamReport` (a part: a template, a
config, the graph, a tensor's external data), each with its verdict and
findings. Structural breakage raises a :class:`~tensorfile.errors.ScanError`
(``MalformedModelError``, ``ScanLimitError``); :mod:`.loaders` turns that
into an ``error`` verdict.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol

from tensorfile._io.files import open_regular
from tensorfile._io.sources import Image, open_image
from tensorfile._report import FileReport, Finding, StreamReport, Verdict
from tensorfile.errors import ScanLimitError

#: A file's bytes as the parsers take them: slicing gives ``bytes``.
Buf = bytes | Image

#: How many bytes :meth:`Assessor.detect` sees.
HEAD_SIZE = 4096


class FormatLimits(NamedTuple):
    """Bounds on the work one format assessor does on one file (exceeded: ``error``).

    A ``NamedTuple`` like the scanner's other records (no dataclass start-up cost).
    """

    #: GGUF metadata key/values and tensors.
    max_kv: int = 1 << 16
    max_tensors: int = 1 << 20
    #: Items of one GGUF array, and how deep arrays may nest.
    max_array: int = 1 << 24
    max_array_depth: int = 4
    #: A GGUF key or tensor name, and a chat template (bytes).
    max_name: int = 1 << 16
    max_template: int = 1 << 20
    #: A JSON document read whole (Keras config, tokenizer config).
    max_json: int = 64 << 20
    #: Protobuf: message nesting, and fields visited in one file.
    max_depth: int = 64
    max_fields: int = 1 << 24
    #: Distinct external-data files of one ONNX model.
    max_external: int = 1 << 16


class Assessor(Protocol):
    """One model format: recognise it, then read it statically."""

    #: The ``FileReport.format`` of the files it reads (``gguf``, ``onnx``...).
    format: str

    def detect(self, head: bytes, name: str) -> bool:
        """Whether a file starting with ``head`` (at most :data:`HEAD_SIZE`
        bytes) and called ``name`` is this format. By content first; a name
        only ever adds files (the format's loader goes by it), never removes one."""
        ...

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        """The file's parts with their verdicts. An empty list: nothing of
        this format to judge after all (the pickle scanner's report stands)."""
        ...


class ByteAssessor(Protocol):
    """A format read from its bytes alone (the pickle family, safetensors), so
    alike from a local file and from a remote object (:mod:`tensorfile._io.sources`).

    Its reading is a whole :class:`~tensorfile._report.FileReport` (the
    format it found, its streams, the verdict), which :mod:`.loaders` joins
    with the other readings of the file. Settings (bounds, a project's
    allowed globals) are given when it is built, for one scan."""

    format: str

    def detect(self, head: bytes, name: str) -> bool:
        """As :meth:`Assessor.detect`."""
        ...

    def read(self, image: Image, name: str, basename: str) -> FileReport | None:
        """The report of ``image`` (reported as ``name``; ``basename`` is its
        last path component, for a loader that goes by it); None when it is
        not of this format after all. Never raises on bad content."""
        ...


def part(location: str, findings: list[Finding], *, notes: list[str] | None = None,
         offset: int = 0) -> StreamReport:
    """A part whose verdict is the worst of its findings (``safe`` with none).

    ``notes`` go where a pickle stream lists its imports: names the part uses
    that change nothing in the verdict (an ONNX custom-op domain)."""
    verdict = Verdict.worst((f.verdict for f in findings), Verdict.SAFE)
    return StreamReport(location, offset, verdict, findings, notes)


def not_assessed(location: str, why: str) -> StreamReport:
    """A part the scanner does not read, and why: never ``safe``."""
    return StreamReport(location, 0, Verdict.NOT_ASSESSED,
                        [Finding(Verdict.NOT_ASSESSED, why)])


@contextmanager
def mapped(path: Path) -> Iterator[Buf]:
    """The file's bytes, copied in as they are read (never a map of the file,
    which would fault if it changed: :mod:`tensorfile._io.sources`); an empty
    file is empty bytes. Slices of either are ``bytes`` copies."""
    with open_image(path) as image:
        yield image if image.size else b""


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """The whole file, refusing one over ``cap`` bytes (a document read whole)."""
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ScanLimitError(f"{what} is over the {cap:,}-byte limit for a document read whole")
    return data
