"""Typed scan results: per file, per pickle stream, per finding.

Everything here is plain data so the CLI can render it and ``to_dict()`` gives
the JSON form. The classes are written out rather than made with
``@dataclass``, which generates and compiles methods at import time, a cost
every ``tensorfile scan`` start-up paid. Verdicts combine by severity:
``safe`` < ``not-assessed`` < ``incomplete`` < ``unknown`` < ``error`` <
``dangerous``. ``not-assessed`` is a model file whose loader can run code
or read other files and which the scanner does not read (spec/SCANNING.md,
"Other model formats").
``error`` outranks ``unknown`` because a part that could not be read might
hide anything; ``dangerous`` outranks everything because it is a proven
problem. ``incomplete`` is only ever the verdict of a whole scan: every file
read was safe, but some path in scope was skipped (:class:`Skipped`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, NamedTuple

from tensorfile._records import Record


class Verdict(str, enum.Enum):
    """How loading the input would behave, as far as the scanner can prove."""

    SAFE = "safe"
    NOT_ASSESSED = "not-assessed"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"
    ERROR = "error"
    DANGEROUS = "dangerous"

    @property
    def severity(self) -> int:
        """Rank used to combine verdicts (higher wins)."""
        return _SEVERITY[self]

    @staticmethod
    def worst(verdicts: Iterable[Verdict], default: Verdict) -> Verdict:
        """The most severe of ``verdicts`` (``default`` when there are none)."""
        result = default
        for v in verdicts:
            if v.severity > result.severity:
                result = v
        return result


_SEVERITY = {Verdict.SAFE: 0, Verdict.NOT_ASSESSED: 1, Verdict.INCOMPLETE: 2,
             Verdict.UNKNOWN: 3, Verdict.ERROR: 4, Verdict.DANGEROUS: 5}


class Finding(NamedTuple):
    """One reason a stream is not safe.

    ``opcode`` and ``offset`` locate it in the stream's buffer (``offset`` is
    relative to the member that holds the stream, e.g. the zip entry);
    ``global_name`` is the ``module.name`` involved, when there is one.
    """

    verdict: Verdict
    reason: str
    opcode: str | None = None
    offset: int | None = None
    global_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "opcode": self.opcode,
            "offset": self.offset,
            "global": self.global_name,
        }


class StreamReport(Record):
    """One pickle stream (or one unreadable part) inside a file.

    ``location`` names where it sits, e.g. ``archive/data.pkl``,
    ``pickle #2 @ 1234`` or ``model.zip!inner.pt!archive/data.pkl``;
    ``offset`` is where the stream starts inside that member; ``globals``
    lists every ``module.name`` it imports, allowed or not.
    """

    __slots__ = ("location", "offset", "verdict", "findings", "globals", "error")  # noqa: RUF023 (field order)
    location: str
    offset: int
    verdict: Verdict
    findings: list[Finding]
    globals: list[str]
    error: str | None

    def __init__(self, location: str, offset: int, verdict: Verdict,
                 findings: list[Finding] | None = None, globals: list[str] | None = None,
                 error: str | None = None) -> None:
        self.location = location
        self.offset = offset
        self.verdict = verdict
        self.findings = [] if findings is None else findings
        self.globals = [] if globals is None else globals
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "location": self.location,
            "offset": self.offset,
            "verdict": self.verdict.value,
            "findings": [f.to_dict() for f in self.findings],
            "globals": list(self.globals),
            "error": self.error,
        }


class FileReport(Record):
    """One input file: the container it is, its streams, and its overall verdict.

    ``format`` is what the content was detected as (``torch-zip``,
    ``torch-legacy``, ``torch-tar``, ``pickle``, ``npy``, ``zip`` ...).
    ``error`` is set when the file as a whole could not be read.
    """

    __slots__ = ("path", "format", "verdict", "streams", "error")  # noqa: RUF023 (field order)
    path: str
    format: str
    verdict: Verdict
    streams: list[StreamReport]
    error: str | None

    def __init__(self, path: str, format: str, verdict: Verdict,
                 streams: list[StreamReport] | None = None, error: str | None = None) -> None:
        self.path = path
        self.format = format
        self.verdict = verdict
        self.streams = [] if streams is None else streams
        self.error = error

    @property
    def findings(self) -> list[tuple[StreamReport, Finding]]:
        """Every finding of every stream, with its stream."""
        return [(s, f) for s in self.streams for f in s.findings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict.value,
            "error": self.error,
            "streams": [s.to_dict() for s in self.streams],
        }


class Skipped(NamedTuple):
    """A path in scope that was not read, and why (a symlinked folder, a FIFO...)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": self.path, "reason": self.reason}


class ScanReport(Record):
    """The result of :func:`tensorfile.pickles.scan`: one :class:`FileReport` per
    file read, one :class:`Skipped` per path in scope that was not."""

    __slots__ = ("files", "skipped")
    files: list[FileReport]
    skipped: list[Skipped]

    def __init__(self, files: list[FileReport] | None = None,
                 skipped: list[Skipped] | None = None) -> None:
        self.files = [] if files is None else files
        self.skipped = [] if skipped is None else skipped

    @property
    def verdict(self) -> Verdict:
        """The worst verdict over all files; ``incomplete`` instead of ``safe``
        when a path was skipped; ``error`` when nothing was found at all."""
        if not self.files and not self.skipped:
            return Verdict.ERROR
        worst = Verdict.worst((f.verdict for f in self.files), Verdict.SAFE)
        incomplete = self.skipped and worst.severity < Verdict.INCOMPLETE.severity
        return Verdict.INCOMPLETE if incomplete else worst

    @property
    def exit_code(self) -> int:
        """CLI convention: 0 everything in scope was read and is safe; 1 something
        is dangerous or unknown; 2 otherwise not everything could be read (an
        ``error``, a skipped path: ``incomplete``, a ``not-assessed`` file)."""
        return self.exit_code_allowing(not_assessed=False)

    def exit_code_allowing(self, *, not_assessed: bool) -> int:
        """:attr:`exit_code`, with ``not-assessed`` files counted as safe when
        ``not_assessed`` (``tensorfile scan --allow-not-assessed``)."""
        verdict = self.verdict
        if not_assessed and verdict is Verdict.NOT_ASSESSED:
            verdict = Verdict.SAFE
        if verdict is Verdict.SAFE:
            return 0
        if any(f.verdict in (Verdict.DANGEROUS, Verdict.UNKNOWN) for f in self.files):
            return 1
        return 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "files": [f.to_dict() for f in self.files],
            "skipped": [s.to_dict() for s in self.skipped],
        }
