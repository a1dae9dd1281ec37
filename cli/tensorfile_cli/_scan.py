"""``tensorfile scan``'s body, and the command line it can run without Typer.

:func:`run` is the whole command: the Typer command in :mod:`tensorfile_cli.app`
calls it, and so does :func:`tensorfile_cli.main.main` when :func:`fast_args`
recognises a plain scan command line. Start-up is most of the time of a
typical scan, and Typer (click, and rich for help and errors) takes longer
to import than the scanner, so a plain scan skips it.

:func:`fast_args` accepts only what it can read exactly as click would: the
word ``scan``, then paths and the flags in :data:`FLAGS` in any order, with
``--`` ending the options. Everything else (``--help``, a misspelt or unknown
option, no path at all, shell completion, and any command line on Windows,
where click expands wildcards itself) returns ``None`` and goes to Typer, so
help texts and usage errors have one source. A test keeps :data:`FLAGS`
equal to the Typer command's options.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from tensorfile_cli._exit import ExitCode
from tensorfile_cli._output import Output, guarded

if TYPE_CHECKING:
    from tensorfile.pickles import ScanReport

#: The options of ``tensorfile scan`` (besides --help), by the parameter they set.
FLAGS = {"--json": "json_out", "--quiet": "quiet", "-q": "quiet", "--debug": "debug",
         "--follow-symlinks": "follow_symlinks", "--allow-not-assessed": "allow_not_assessed"}

#: Set by a shell asking Typer to complete a command line (``_TENSORFILE_COMPLETE``).
_COMPLETE_VAR = "_TENSORFILE_COMPLETE"


class ScanArgs(NamedTuple):
    """A scan command line, parsed."""

    paths: list[Path]
    json_out: bool = False
    quiet: bool = False
    debug: bool = False
    follow_symlinks: bool = False
    allow_not_assessed: bool = False


#: Options only the Typer command reads: the fast path hands such a command line over.
TYPER_ONLY = {"--format": "output_format", "-f": "output_format",
              "--storage-options": "storage_options"}


def run(paths: Sequence[Path | str], *, json_out: bool, quiet: bool, debug: bool,
        follow_symlinks: bool = False, allow_not_assessed: bool = False,
        output_format: str = "text", storage_options: dict[str, Any] | None = None
        ) -> NoReturn:
    """Scan ``paths``, print the report (text, JSON or SARIF) and exit 0, 1 or 2.

    ``allow_not_assessed``: files of a format the scanner does not read
    (``not-assessed``) do not fail the scan by themselves. A ``str`` path is a
    URL, read with ``storage_options``."""
    out = Output("scan", json_out=json_out or output_format == "json", quiet=quiet, debug=debug)
    with guarded(out, *paths):
        from tensorfile.pickles import scan as scan_paths

        report = scan_paths(paths, follow_symlinks=follow_symlinks,
                            storage_options=storage_options)
        code = report.exit_code_allowing(not_assessed=allow_not_assessed)
        if output_format == "sarif" and not json_out:  # --json wins, as in check
            _sarif(report, quiet, code)
    from tensorfile_cli import _render

    result = report.to_dict()
    result["exit_code"] = code
    out.finish(result, _render.scan, ExitCode(code))


def _sarif(report: ScanReport, quiet: bool, code: int) -> NoReturn:
    """Print the scan as SARIF 2.1.0, paths relative to the current folder."""
    import json

    from tensorfile import __version__
    from tensorfile.check.findings import scan_findings
    from tensorfile.check.policy import DEFAULT_FAIL_ON
    from tensorfile.check.sarif import to_sarif

    findings = scan_findings(report, Path.cwd(), DEFAULT_FAIL_ON)
    log = to_sarif(findings, Path.cwd(), version=__version__, exit_code=code)
    if not quiet:
        sys.stdout.write(json.dumps(log, indent=2, ensure_ascii=False) + "\n")
    raise SystemExit(code)


def fast_args(argv: Sequence[str]) -> ScanArgs | None:
    """``argv`` (without the program name) as a scan command, or ``None`` for Typer."""
    if not argv or argv[0] != "scan" or _COMPLETE_VAR in os.environ or os.name == "nt":
        return None
    flags: dict[str, bool] = {}
    paths: list[Path] = []
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--":
            paths.extend(Path(p) for p in rest)
        elif arg.startswith("-"):  # an option, or "-": whatever click makes of it
            name = FLAGS.get(arg)
            if name is None:
                return None
            flags[name] = True
        elif "://" in arg:  # a URL (Path would fold its "//"), and its storage options: Typer
            return None
        else:
            paths.append(Path(arg))
    if not paths:  # Typer's "Missing argument" usage error
        return None
    return ScanArgs(paths, **flags)


def run_standalone(args: ScanArgs) -> NoReturn:
    """:func:`run` with the exits Typer's standalone mode gives the same errors.

    Ctrl-C outside the scan itself exits 130 without a message; a closed
    stdout (``tensorfile scan DIR | head``) exits 1 without a traceback.
    """
    try:
        run(args.paths, json_out=args.json_out, quiet=args.quiet, debug=args.debug,
            follow_symlinks=args.follow_symlinks, allow_not_assessed=args.allow_not_assessed)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # What's left in stdout's buffer goes nowhere instead of failing again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
