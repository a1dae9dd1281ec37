"""``tensorfile check``: scan, format validation and verification of a model, by a policy.

One call runs what a pipeline would otherwise wire up from three commands:

1. every file in scope (the policy's ignore globs and size bounds applied; the
   git files at the top of a folder left out, as verification leaves them) is
   scanned by :func:`tensorfile.scan.scanner.scan_one`, with the policy's
   allowed globals; ``.safetensors`` files are validated by the format core
   on the way, and each ``*.safetensors.index.json`` against its shards;
2. when the policy requires trust, the model is verified against it
   (:func:`tensorfile.integrity.verify` or :func:`~tensorfile.integrity.verify_pins`):
   any one key, root, keyless signer or the pins that verifies will do;
3. every problem becomes a :class:`~tensorfile.check.findings.CheckFinding`
   that fails the run or not, as the policy says.

Exit codes (``CheckReport.exit_code``): 0 nothing fails the run; 1 a failing
finding that is dangerous, unknown, a verification failure or a size bound;
2 only failing findings about what could not be read or assessed (``error``,
``incomplete``, ``not-assessed``). A policy that cannot be read raises
:class:`~tensorfile.errors.PolicyError` (the CLI exits 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfile._io.files import PathLike
from tensorfile._progress import ProgressCallback
from tensorfile._report import FileReport, Skipped, Verdict
from tensorfile.check.findings import (
    CheckFinding,
    allowed_uses,
    file_findings,
    relative,
    skipped_finding,
)
from tensorfile.check.policy import Policy, Trust
from tensorfile.errors import TensorfileError
from tensorfile.integrity.hashing import DEFAULT_IGNORED
from tensorfile.scan.scanner import _walk, scan_one

#: Kinds whose failing findings make exit code 1 (a finding) rather than 2.
_FINDING_KINDS = frozenset({"dangerous", "unknown", "verification", "bound"})
INDEX_SUFFIX = ".safetensors.index.json"


@dataclass(frozen=True)
class FileStatus:
    """One file checked: its scan verdict and format, and the policy's view of it.

    ``status`` is ``safe``, ``allowed`` (safe only thanks to the policy's
    ``allowed`` globals, never called ``safe``), ``ignored`` or the scan verdict.
    """

    path: str
    status: str
    verdict: str
    format: str
    allowed: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        """``allowed by policy (reason; reason)`` for allowed files, else the status."""
        if self.status != "allowed":
            return self.status
        return "allowed by policy (" + "; ".join(self.allowed.values()) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "label": self.label,
                "verdict": self.verdict, "format": self.format, "allowed": dict(self.allowed),
                "error": self.error}


@dataclass(frozen=True)
class Verification:
    """What the trust check did: ``verified``, ``failed`` or ``not-required``."""

    status: str
    report: dict[str, Any] | None = None
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "report": self.report, "errors": list(self.errors)}


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check`: files, findings, verification, and the policy used."""

    path: str
    root: str
    policy: Policy
    files: tuple[FileStatus, ...]
    findings: tuple[CheckFinding, ...]
    verification: Verification

    @property
    def passed(self) -> bool:
        return not any(f.fails for f in self.findings)

    @property
    def exit_code(self) -> int:
        failing = {f.kind for f in self.findings if f.fails}
        return 0 if not failing else 1 if failing & _FINDING_KINDS else 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tensorfile_cli/schemas/check.json)."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        return {
            "path": self.path,
            "root": self.root,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "policy": self.policy.to_dict(),
            "summary": {"files": len(self.files), "by_status": counts,
                        "findings": len(self.findings),
                        "failing": sum(f.fails for f in self.findings)},
            "files": [f.to_dict() for f in self.files],
            "findings": [f.to_dict() for f in self.findings],
            "verification": self.verification.to_dict(),
        }


def check(path: PathLike, policy: Policy | None = None, *,
          progress: ProgressCallback | None = None) -> CheckReport:
    """Check the model file or folder at ``path`` as ``policy`` says (default:
    :class:`Policy()`, scan everything, fail on anything not proven safe)."""
    policy = policy or Policy()
    target = Path(path)
    root = target if target.is_dir() else target.parent
    files: list[FileStatus] = []
    findings: list[CheckFinding] = []
    to_scan, ignored = _in_scope(target, root, policy, files, findings)
    for item in to_scan:
        report = scan_one(item, policy.bounds.scan, policy.allow)
        findings.extend(file_findings(report, root, policy.fail_on))
        files.append(_status(report, root))
        if item.name.endswith(INDEX_SUFFIX):
            findings.extend(_index_findings(item, root))
    verification = _verify(target, policy.trust, ignored, progress)
    findings.extend(CheckFinding("TF101", "verification", "", e, True)
                    for e in verification.errors if verification.status == "failed")
    return CheckReport(str(path), str(root), policy, tuple(files), tuple(findings), verification)


def _in_scope(target: Path, root: Path, policy: Policy, files: list[FileStatus],
              findings: list[CheckFinding]) -> tuple[list[Path], list[str]]:
    """Files to scan, and those left out by ignore globs (relative to ``root``).

    Files the walk could not read become findings; size bounds are checked
    from ``stat`` before anything is read, so an oversized file is never opened.
    """
    bounds = policy.bounds
    to_scan: list[Path] = []
    ignored: list[str] = []
    total = 0
    folder = target.is_dir()
    for item in _walk(target, policy.follow_symlinks):
        where = item.path if isinstance(item, (FileReport, Skipped)) else item
        rel = relative(where, root)
        if folder and rel.split("/", 1)[0] in DEFAULT_IGNORED:
            # The git files at the top of the folder (.git with its LFS copies of
            # the models, .github, ...) are not the model: verify leaves them out too.
            continue
        if policy.ignores(rel):
            ignored.append(rel)
            files.append(FileStatus(rel, "ignored", "not-scanned", "ignored"))
            continue
        if isinstance(item, Skipped):
            findings.append(skipped_finding(item, root, policy.fail_on))
            continue
        if isinstance(item, FileReport):
            findings.extend(file_findings(item, root, policy.fail_on))
            files.append(_status(item, root))
            continue
        try:
            size = item.stat().st_size
        except OSError as e:  # gone since the folder was listed
            findings.append(CheckFinding("TF003", "error", rel, f"cannot read: {e.strerror or e}",
                                         "error" in policy.fail_on))
            files.append(FileStatus(rel, "error", "error", "unreadable"))
            continue
        total += size
        if bounds.max_file_size is not None and size > bounds.max_file_size:
            findings.append(CheckFinding("TF102", "bound", rel, f"{size:,} bytes: over the "
                                         f"policy's max-file-size of {bounds.max_file_size:,}",
                                         True))
            files.append(FileStatus(rel, "bound", "not-scanned", "too-big"))
            continue
        to_scan.append(item)
    if bounds.max_files is not None and len(to_scan) > bounds.max_files:
        findings.append(CheckFinding("TF102", "bound", "", f"{len(to_scan):,} files: over the "
                                     f"policy's max-files of {bounds.max_files:,}", True))
        to_scan = to_scan[:bounds.max_files]
    if bounds.max_total_size is not None and total > bounds.max_total_size:
        findings.append(CheckFinding("TF102", "bound", "", f"{total:,} bytes in all: over "
                                     f"the policy's max-total-size of {bounds.max_total_size:,}",
                                     True))
    return to_scan, ignored


def _status(report: FileReport, root: Path) -> FileStatus:
    allowed = allowed_uses(report)
    verdict = report.verdict.value
    status = "allowed" if verdict == Verdict.SAFE.value and allowed else verdict
    return FileStatus(relative(report.path, root), status, verdict, report.format, allowed,
                      report.error)


def _index_findings(index: Path, root: Path) -> list[CheckFinding]:
    """A sharded model's index checked against every shard's header."""
    from tensorfile.sharded import open_sharded

    try:
        with open_sharded(index):
            return []
    except (TensorfileError, OSError) as e:
        return [CheckFinding("TF103", "error", relative(index, root), str(e), True)]


def _verify(target: Path, trust: Trust, ignored: list[str],
            progress: ProgressCallback | None) -> Verification:
    """Try each trusted signer (or the pins) until one verifies."""
    if not trust.required:
        return Verification("not-required")
    from tensorfile.integrity import SigstoreTrust, verify, verify_pins

    options: dict[str, Any] = {"allow_extra_files": trust.allow_extra_files,
                               "ignore_paths": ignored if target.is_dir() else (),
                               "progress": progress}
    attempts: list[tuple[str, Any]] = []
    if trust.pins is not None:
        attempts.append((f"pins {trust.pins}", lambda: verify_pins(target, trust.pins, **options)))
    signed: dict[str, Any] = {**options, "signature": trust.signature}
    attempts += [(f"key {k}", lambda k=k: verify(target, k, **signed)) for k in trust.keys]
    attempts += [(f"roots {c}", lambda c=c: verify(target, None, c, **signed))
                 for c in trust.cert_roots]
    attempts += [(f"keyless {s.identity} ({s.issuer})", lambda s=s: verify(
        target, sigstore=SigstoreTrust(os.fspath(trust.trusted_root or ""), s.identity,
                                       s.issuer), **signed)) for s in trust.keyless]
    errors = []
    for what, attempt in attempts:
        try:
            return Verification("verified", attempt().to_dict())
        except (TensorfileError, OSError) as e:
            errors.append(f"{what}: {type(e).__name__}: {e}")
    return Verification("failed", None, tuple(errors))
