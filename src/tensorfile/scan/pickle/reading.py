"""The pickle family as an assessor: every stream ``torch.load``, ``pickle.load``,
``numpy.load`` or ``joblib.load`` would unpickle from a file.

It claims every file, because those loaders unpickle whatever they are
given: raw pickles, torch zip, legacy and tar checkpoints, ``.npy``/``.npz``
and joblib files are told apart by their bytes in :mod:`.containers` (which
hands ``.npy`` headers to :mod:`tensorfile.scan.npy` and joblib's
compressions to :mod:`tensorfile.scan.joblib`). Its report is the file's
whole report when no other assessor claims the file; :mod:`tensorfile.scan.loaders`
joins it with the others' by the rules of :func:`unpickles_something` and
:func:`stops_before_any_import`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tensorfile._io.sources import Image
from tensorfile._report import FileReport
from tensorfile.scan.pickle.containers import ScanLimits, scan_image


class PickleAssessor:
    """The pickle reading: a :class:`~tensorfile.scan._base.ByteAssessor` built
    with one scan's settings (its bounds, a project's allowed globals)."""

    format = "pickle"

    def __init__(self, limits: ScanLimits | None = None,
                 extra_allowed: Mapping[str, str] | None = None) -> None:
        self.limits = limits
        self.extra_allowed = extra_allowed

    def detect(self, head: bytes, name: str) -> bool:
        """Every file: the loaders unpickle whatever they are given."""
        return True

    def read(self, image: Image, name: str, basename: str) -> FileReport:
        """The pickle streams of ``image`` (a file found by the walk: a file
        that is no pickle at all is ``not-pickle``, unless it declares itself
        one with a PROTO byte, when it is a broken pickle)."""
        report = scan_image(image, name, self.limits, named=False,
                            extra_allowed=self.extra_allowed)
        if report.format == "not-pickle" and _starts_with_proto(image):
            report = scan_image(image, name, self.limits, named=True,
                                extra_allowed=self.extra_allowed)
        return report


def _starts_with_proto(image: Image) -> bool:
    try:
        return len(image) > 0 and image[0] == 0x80
    except OSError:
        return False


#: Formats of files the pickle reading found no container in: a pickle or nothing.
NO_CONTAINER = frozenset({"not-pickle", "pickle", "unknown"})


def unpickles_something(report: FileReport) -> bool:
    """Whether the pickle reading found a pickle that imports or calls anything.

    Other readings of a file that is not a pickle (``not-pickle``, a zip
    without a ``.pkl``) end before any import, so they add nothing."""
    return any(s.globals or s.findings for s in report.streams)


def stops_before_any_import(report: FileReport) -> bool:
    """True when unpickling the file fails before it could import or call anything.

    A valid safetensors header can start with bytes that are opcodes: ``c``
    (GLOBAL) then reads a module name that holds the NUL bytes of the length
    prefix, ``P`` (PERSID) needs a ``persistent_load`` that torch's first
    pickle (the legacy magic number) does not have; either ends the unpickler
    there. ``\\x82``-``\\x84`` (EXT1/2/4) look up copyreg's extension registry
    (empty in stock Python and torch) and the stream breaks a few bytes later
    at the NUL bytes of the prefix, before any call.
    """
    if report.format == "not-pickle":
        return True
    if len(report.streams) != 1 or report.streams[0].offset != 0:
        return False
    (stream,) = report.streams
    for name in stream.globals:
        # An import of a real name, even an allowlisted one, means the loaders
        # read on into the file as a pickle (a polyglot), whatever breaks later.
        module = name.rsplit(".", 1)[0]
        if module and "\0" not in module:
            return False
    for finding in sorted(stream.findings, key=lambda f: f.offset or 0):
        if finding.opcode in ("PERSID", "BINPERSID"):
            return True
        module = (finding.global_name or "").rsplit(".", 1)[0]
        if finding.opcode in ("GLOBAL", "INST") and ("\0" in module or not module):
            return True
        if not (finding.opcode or "").startswith("EXT"):
            return False
    return stream.error is not None
