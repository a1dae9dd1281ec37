"""``tensorfile check``: the pipeline command (scan, validate, verify, by a policy).

The command body only finds and reads the policy, calls
:func:`tensorfile.check.check` and prints the report: text, the JSON envelope
(``schemas/check.json``) or SARIF 2.1.0 (``--format sarif``, also written
beside other output with ``--sarif-file``). Like the rest of the CLI, this
module imports only Typer and the standard library at import time.

Exit codes: 0 nothing fails the policy; 1 a finding fails it (dangerous or
unknown pickle, failed verification, size bound); 2 the check could not be
done (the policy is invalid, or what fails is only unreadable, skipped or
not-assessed input).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from tensorfile_cli._exit import ExitCode
from tensorfile_cli._output import Output, guarded

EPILOG = ("Example: tensorfile check ./my-model --format sarif > tensorfile.sarif  "
          "(policy: the nearest tensorfile.toml or [tool.tensorfile] in pyproject.toml)")


class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


FormatOpt = Annotated[
    ReportFormat,
    typer.Option("--format", "-f", help="text for people, json (as --json) or sarif (SARIF "
                 "2.1.0 for code scanning)."),
]


def check(
    path: Annotated[Path, typer.Argument(help="The model folder or file to check.")],
    policy: Annotated[
        Path | None,
        typer.Option("--policy", "-p", help="Policy file: a tensorfile.toml, or a "
                     "pyproject.toml with [tool.tensorfile] (default: the nearest one from "
                     "PATH up, then from the current folder up)."),
    ] = None,
    no_policy: Annotated[
        bool, typer.Option("--no-policy", help="Ignore policy files: the default policy.")
    ] = False,
    output_format: FormatOpt = ReportFormat.text,
    sarif_file: Annotated[
        Path | None,
        typer.Option("--sarif-file", help="Also write the SARIF log to this file."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; the exit code tells.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Scan, validate and verify a model as its policy says: one report, one exit code.

    Every file is scanned (pickles without loading them, safetensors headers,
    sharded indexes); the policy adds allowed globals (reported as `allowed by
    policy (reason)`, never `safe`), which verdicts fail, ignore globs, size
    bounds, and the trust to require (keys, certificate roots, keyless
    signers, or pins). Exit 0 nothing fails the policy; 1 a finding fails it;
    2 the check could not be done (bad policy, unreadable input).
    """
    if policy is not None and no_policy:
        raise typer.BadParameter("--policy and --no-policy exclude each other",
                                 param_hint="'--policy'")
    fmt = ReportFormat.json if json_out else output_format
    out = Output("check", json_out=fmt is ReportFormat.json, quiet=quiet, debug=debug)
    with guarded(out, path, policy), out.progress("verifying") as progress:
        from tensorfile.check import Policy, check, find_policy, load_policy

        chosen = None if no_policy else policy or find_policy(path)
        report = check(path, load_policy(chosen) if chosen is not None else Policy(),
                       progress=progress)
        code = ExitCode(report.exit_code)
        sarif = _sarif(report, code) if sarif_file or fmt is ReportFormat.sarif else ""
        if sarif_file is not None:
            sarif_file.write_text(sarif, encoding="utf-8")
    if fmt is ReportFormat.sarif:
        if not quiet:
            sys.stdout.write(sarif)
        raise SystemExit(int(code))
    out.finish(report.to_dict(), render, code)


def _sarif(report: Any, code: ExitCode) -> str:
    import json

    from tensorfile import __version__
    from tensorfile.check.sarif import to_sarif

    log = to_sarif(report.findings, report.root, version=__version__, exit_code=int(code))
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


_STYLES = {"safe": ("green",), "allowed": ("green",), "ignored": (), "dangerous": ("red", "bold"),
           "verified": ("green",), "failed": ("red", "bold")}


def render(out: Output, result: dict[str, Any]) -> None:
    """The check report for people: files, failing findings, verification, verdict."""
    from tensorfile_cli._render import plural

    source = result["policy"]["source"] or "the default policy (no policy file)"
    out.line(f"policy: {source}")
    for f in result["files"]:
        status = out.style(f["label"], *_STYLES.get(f["status"], ("yellow",)))
        out.line(f"  {f['path']}: {status}")
    shown = 0
    for f in result["findings"]:
        if f["kind"] == "allowed" or (not f["fails"] and shown >= 20):
            continue
        shown += 1
        where = f" at byte {f['offset']}" if f["offset"] is not None else ""
        member = f" of {f['member']}" if f["member"] and f["offset_in"] != "file" and where else ""
        member += f" ({f['member']})" if f["member"] and f["offset_in"] == "file" else ""
        name = f" {f['global']}" if f["global"] else ""
        mark = out.style("FAIL" if f["fails"] else "warn", "red" if f["fails"] else "yellow")
        out.line(f"  {mark} {f['rule']} {f['file'] or 'model'}{where}{member}: "
                 f"{f['kind']}{name}: {f['message']}")
    v = result["verification"]
    if v["status"] == "verified":
        signer = v["report"]["signer"]["kind"]
        out.line(f"verification: {out.style('verified', 'green')} ({signer}, "
                 f"{v['report']['files_checked']} files)")
    elif v["status"] == "failed":
        out.line(f"verification: {out.style('failed', 'red', 'bold')}")
        for e in v["errors"]:
            out.line(f"  {e}")
    else:
        out.line("verification: not required by the policy")
    s = result["summary"]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["by_status"].items()))
    verdict = (out.style("passed", "green", "bold") if result["passed"]
               else out.style("failed", "red", "bold"))
    out.line(f"{plural(s['files'], 'file')} ({counts or 'none'}); "
             f"{plural(s['failing'], 'failing finding')}: {verdict}")
