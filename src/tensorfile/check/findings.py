"""Findings with stable rule ids: what ``check`` and ``scan --format sarif`` report.

A scan report is a tree (files, streams, findings); pipelines want a flat
list with one rule id per kind of problem, a file and a place in it. This
module flattens it, once, for the check report, the JSON and SARIF.

Offsets: ``member`` is the part of the file a finding is in (a zip entry such
as ``archive/data.pkl``; None for the file's own pickle sequence), ``offset``
the scanner's byte offset, and ``offset_in`` what it counts from: ``file``
(the file's first byte), ``member`` (the member's content, e.g. a deflated
entry once inflated) or None (the report cannot tell: nested containers). The
rule ids below are stable; new rules get new ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from tensorfile._io.sources import open_image
from tensorfile._picklevm._allowed import ALLOWED_PREFIX
from tensorfile._report import FileReport, ScanReport, Skipped
from tensorfile.errors import TensorfileError
from tensorfile.scan.pickle._zip import zip_layout
from tensorfile.scan.pickle.containers import ScanLimits


class Rule(NamedTuple):
    """One kind of finding: a stable id, a name, what it means and what to do."""

    id: str
    name: str
    short: str
    help: str


RULES: dict[str, Rule] = {r.id: r for r in (
    Rule("TF001", "dangerous-pickle", "A pickle imports or calls a known code-execution, file "
         "or network gadget", "Do not load this file; get the model from a trusted source."),
    Rule("TF002", "unknown-pickle", "A pickle uses an import or call outside the allowlist",
         "If you trust the class, allow it in the policy with a reason; or convert the "
         "tensors to safetensors."),
    Rule("TF003", "unreadable", "A file or part could not be read to the end (malformed, "
         "ambiguous, over a bound, or not a valid safetensors file)",
         "It is not known to be safe: do not load it."),
    Rule("TF004", "skipped-path", "A path in scope was not read (a symlinked folder, a FIFO "
         "or device)", "Remove it, or pass --follow-symlinks for symlinked folders."),
    Rule("TF005", "not-assessed", "A file in a format the scanner does not assess",
         "Check it by other means, or leave it out with an ignore glob."),
    Rule("TF006", "allowed-by-policy", "A pickle uses a global the project's policy allows",
         "The policy's reason says why; review the entry when the checkpoint changes."),
    Rule("TF101", "verification-failed", "The model does not match the signature or pins "
         "the policy requires", "Do not use this model: get it again, or a new signature."),
    Rule("TF102", "bound-exceeded", "A file or the model exceeds a size bound of the policy",
         "Raise the bound in the policy if the size is expected."),
    Rule("TF103", "invalid-index", "A sharded model's index does not match its shards",
         "Regenerate model.safetensors.index.json from the shards."),
)}

#: Rule of each scan verdict (a verdict not listed here reads as unreadable).
VERDICT_RULES = {"dangerous": "TF001", "unknown": "TF002", "error": "TF003",
                 "incomplete": "TF004", "not-assessed": "TF005", "allowed": "TF006"}
#: Kinds of finding that are not scan verdicts: they always fail a check.
ALWAYS_FAIL = frozenset({"verification", "bound"})


class CheckFinding(NamedTuple):
    """One finding: its rule, kind (a scan verdict, ``allowed``, ``verification``
    or ``bound``), the file (``/``-separated, relative to the root; ``""`` for the
    model as a whole), what, whether it fails the run, and where in the file."""

    rule: str
    kind: str
    file: str
    message: str
    fails: bool
    member: str | None = None
    offset: int | None = None
    offset_in: str | None = None
    global_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (schemas/check.json)."""
        return {"rule": self.rule, "kind": self.kind, "file": self.file,
                "message": self.message, "fails": self.fails, "member": self.member,
                "offset": self.offset, "offset_in": self.offset_in, "global": self.global_name}


def _member(location: str) -> str | None:
    """The member a stream lies in (None for the file's own pickle sequence)."""
    return None if location == "(file)" or location.startswith(("(", "#", "@")) else location


def relative(path: str | os.PathLike[str], root: Path) -> str:
    """``path`` relative to the folder ``root``, ``/``-separated; outside it, absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        rel = full
    return rel.replace(os.sep, "/")


class _Offsets:
    """Which buffer the offsets of a file's streams count in (the scanner reads
    stored zip entries and tar members in place, and other members in copies).

    :meth:`base` of a stream location: ``"file"`` (a byte offset into the file
    itself: the file's own pickle sequence, a tar member, a stored zip
    entry), ``"member"`` (into the member's content: a deflated zip entry,
    inflated), or None where the report cannot tell (nested containers,
    ``_load_from_bytes`` payloads, a stream re-read frame by frame).
    """

    def __init__(self, report: FileReport) -> None:
        self.path = report.path
        self.format = report.format
        self._methods: dict[str, set[int]] | None = None

    def base(self, location: str) -> str | None:
        if location == "(file)" or location.startswith(("(", "#", "@")):
            return "file"
        if "!" in location or "(read frame by frame)" in location:
            return None
        name = location.split(" ", 1)[0]
        if "tar" in self.format:
            return "file"
        methods = self.methods().get(name, set())
        return "file" if methods == {0} else "member" if methods == {8} else None

    def methods(self) -> dict[str, set[int]]:
        """Compression method(s) of each zip entry, read as the scanner reads them."""
        if self._methods is None:
            self._methods = {}
            try:
                with open_image(self.path) as buf:  # never a map: the file may change
                    layout = zip_layout(buf, 0, len(buf), ScanLimits().max_entries)
            except (TensorfileError, OSError, ValueError):
                return self._methods
            for e in layout.entries:
                self._methods.setdefault(e.name, set()).add(e.method)
        return self._methods


def allowed_uses(report: FileReport) -> dict[str, str]:
    """Policy-allowed globals the file uses, with the policy's reason."""
    return {f.global_name or "": f.reason[len(ALLOWED_PREFIX):] for _, f in report.findings
            if f.verdict.value == "safe" and f.reason.startswith(ALLOWED_PREFIX)}


def file_findings(report: FileReport, root: Path, fail_on: Iterable[str]) -> list[CheckFinding]:
    """The findings of one scanned file (allowed uses included, as ``allowed``)."""
    fail = frozenset(fail_on)
    name = relative(report.path, root)
    offsets = _Offsets(report)
    out = []
    for stream, f in report.findings:
        verdict = f.verdict.value
        if verdict == "safe":
            if not f.reason.startswith(ALLOWED_PREFIX):
                continue
            verdict = "allowed"
        opcode = f" ({f.opcode})" if f.opcode else ""
        out.append(CheckFinding(VERDICT_RULES.get(verdict, "TF003"), verdict, name,
                                f"{f.reason}{opcode}", verdict in fail, _member(stream.location),
                                f.offset, offsets.base(stream.location), f.global_name))
    for stream in report.streams:
        if stream.error is not None:
            out.append(CheckFinding("TF003", "error", name, f"{stream.location}: {stream.error}",
                                    "error" in fail, _member(stream.location), stream.offset,
                                    offsets.base(stream.location)))
    verdict = report.verdict.value
    if verdict != "safe" and not any(f.kind == verdict for f in out):
        why = report.error or f"verdict {verdict} ({report.format})"
        out.append(CheckFinding(VERDICT_RULES.get(verdict, "TF003"), verdict, name, why,
                                verdict in fail))
    return out


def skipped_finding(skip: Skipped, root: Path, fail_on: Iterable[str]) -> CheckFinding:
    """A path in scope that was not read."""
    return CheckFinding("TF004", "incomplete", relative(skip.path, root), skip.reason,
                        "incomplete" in frozenset(fail_on))


def scan_findings(report: ScanReport, root: Path, fail_on: Iterable[str]) -> list[CheckFinding]:
    """Every finding of a whole scan (``tensorfile scan --format sarif``)."""
    out = [f for file in report.files for f in file_findings(file, root, fail_on)]
    return out + [skipped_finding(s, root, fail_on) for s in report.skipped]
