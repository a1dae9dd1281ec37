"""Findings as a SARIF 2.1.0 log (``--format sarif``), for code-scanning dashboards.

One run, one result per :class:`~tensorfile.check.findings.CheckFinding`:

* ``ruleId``/``ruleIndex`` into ``tool.driver.rules`` (every rule of
  :data:`~tensorfile.check.findings.RULES`, in id order, so indexes are stable);
* ``level``: ``error`` when the finding fails the run, ``note`` for a use
  allowed by the policy, ``warning`` otherwise;
* the location: the file, relative to ``base`` (the working folder: a CI
  job's checkout, so that code scanning, which reads URIs from the
  repository's root, finds ``models/last.ckpt``), with ``uriBaseId``
  ``%SRCROOT%`` whose absolute URI is in ``originalUriBaseIds``; a file
  outside ``base`` gets its absolute ``file:`` URI and no base id; region
  ``startLine`` 1 (code-scanning UIs want a line; a checkpoint has none) and
  ``region.byteOffset`` when the offset counts from the file's first byte
  (the file's own pickles, tar members, stored zip entries: what torch.save
  writes). A finding in a member (a zip entry such as ``archive/data.pkl``)
  also gets a related location in an artifact nested in the file
  (``parentIndex``), with the offset there when it counts in the member's
  content (a deflated entry, inflated). The primary location stays a path a
  repository has. ``partialFingerprints`` keep alerts stable across runs
  (GitHub's upload would otherwise try to read lines out of the binary files).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tensorfile.check.findings import RULES, CheckFinding, Rule, relative

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
#: The base id GitHub's and Microsoft's SARIF tools use for the source root.
BASE_ID = "%SRCROOT%"
_RULE_IDS = sorted(RULES)


def _uri(path: str) -> str:
    # ":" is escaped: in a first segment it would read as a URI scheme. A file name's
    # bytes that are not UTF-8 (surrogate escapes in Python) are percent-encoded as they are.
    return quote(_raw(path or "."), safe="/!@")


def _raw(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return text.encode("utf-8", "surrogatepass")


def _text(text: str) -> str:
    """Valid Unicode for the log (UTF-8 JSON): undecodable bytes become U+FFFD."""
    return _raw(text).decode("utf-8", "replace")


def to_sarif(findings: Iterable[CheckFinding], root: str | os.PathLike[str], *,
             version: str, exit_code: int,
             base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SARIF log of ``findings`` (whose paths are relative to the folder ``root``),
    with URIs relative to the folder ``base`` (default: the working folder)."""
    root_path = Path(os.path.abspath(root))
    base_path = Path(os.path.abspath(base if base is not None else os.getcwd()))
    artifacts: list[dict[str, Any]] = []
    index: dict[tuple[str, str | None], int] = {}

    def location(file: str) -> dict[str, Any]:
        full = root_path / file if file else root_path  # an absolute ``file`` stays itself
        rel = relative(full, base_path)
        if os.path.isabs(rel):
            return {"uri": full.as_uri()}
        return {"uri": _uri(rel), "uriBaseId": BASE_ID}

    def artifact(file: str, member: str | None = None) -> int:
        key = (file, member)
        if key not in index:
            if member is None:
                entry: dict[str, Any] = {"location": location(file)}
            else:
                entry = {"location": {"uri": _uri(member)}, "parentIndex": artifact(file)}
            index[key] = len(artifacts)
            artifacts.append(entry)
        return index[key]

    results = []
    for f in findings:
        file_at = artifact(f.file)
        physical: dict[str, Any] = {"artifactLocation": {**location(f.file), "index": file_at}}
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": _RULE_IDS.index(f.rule),
            "level": "error" if f.fails else "note" if f.kind == "allowed" else "warning",
            "message": {"text": _text(_message(f))},
            "locations": [{"physicalLocation": physical}],
            "partialFingerprints": {"tensorfile/v1": _fingerprint(f)},
            "properties": {"kind": f.kind, "fails": f.fails,
                           "global": None if f.global_name is None else _text(f.global_name)},
        }
        # Code-scanning UIs want a line (GitHub's upload flags results without one);
        # a checkpoint has none, so the region is line 1 plus the byte offset.
        physical["region"] = {"startLine": 1}
        if f.offset is not None and f.offset_in == "file":
            physical["region"]["byteOffset"] = f.offset
        elif f.member is not None:
            at = artifact(f.file, f.member)
            nested: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.member), "index": at}}
            if f.offset is not None and f.offset_in == "member":
                nested["region"] = {"byteOffset": f.offset}
            result["relatedLocations"] = [{
                "id": 1, "physicalLocation": nested,
                "message": {"text": _text(f"{f.member} inside {f.file}")}}]
        results.append(result)
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "tensorfile",
                "version": version,
                "rules": [_rule(RULES[r]) for r in _RULE_IDS],
            }},
            "originalUriBaseIds": {BASE_ID: {"uri": base_path.as_uri().rstrip("/") + "/"}},
            "artifacts": artifacts,
            "results": results,
            "invocations": [{"executionSuccessful": exit_code in (0, 1), "exitCode": exit_code}],
        }],
    }


def _fingerprint(f: CheckFinding) -> str:
    """Stable across runs for the same finding (GitHub matches alerts by it)."""
    key = "\0".join(str(x) for x in (f.rule, f.file, f.member, f.offset, f.global_name, f.kind))
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _message(f: CheckFinding) -> str:
    where = ""
    if f.offset is not None and f.offset_in is not None:
        where = f" (byte {f.offset} of {f.member if f.offset_in == 'member' else f.file})"
    elif f.offset is not None:
        where = f" (scanner offset {f.offset} in {f.member})"
    name = f"{f.global_name}: " if f.global_name else ""
    return f"{f.file or 'model'}: {f.kind}: {name}{f.message}{where}"


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.short},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": "note" if rule.id == "TF006" else "error"},
    }
