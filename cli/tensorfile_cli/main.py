"""The ``tensorfile`` console script: a fast path for ``scan``, Typer for the rest.

``tensorfile scan`` is benchmarked as a whole process against picklescan, and
importing Typer (with click and, for help and errors, rich) costs more than
scanning a typical checkpoint. So :func:`main` first asks
:func:`tensorfile_cli._scan.fast_args` whether the command line is a plain
``scan`` (paths plus ``--json``/``--quiet``/``--debug``); if so it runs the
scan command's body directly. Anything else, including ``scan --help``, a
usage error or an option the fast path does not know, goes to the Typer app
in :mod:`tensorfile_cli.app`, which therefore stays the one definition of
every command, its options, help and usage errors.

``tensorfile_cli.main.app`` still names the Typer app (imported on first use).
"""

from __future__ import annotations

import sys
from typing import Any


def exit_on_termination() -> None:
    """Make SIGTERM and SIGHUP unwind the program as Ctrl-C does (a
    ``SystemExit`` with status 128 + the signal's number), so that a write
    in progress removes its temporary file. Only where the signal still has
    its default action (an embedding program's own handler is kept)."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, stop)


def main() -> None:
    """Console-script entry point (``tensorfile``)."""
    from tensorfile_cli import _scan

    exit_on_termination()

    fast = _scan.fast_args(sys.argv[1:])
    if fast is not None:
        _scan.run_standalone(fast)
    from tensorfile_cli.app import app

    app(prog_name="tensorfile")


def __getattr__(name: str) -> Any:
    """``app``: the Typer application, imported only when asked for (PEP 562)."""
    if name == "app":
        from tensorfile_cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
