"""Where a command's result goes: JSON, human text, progress, and error lines.

One :class:`Output` per command run. It decides once, from the flags and the
environment, whether to print JSON or text, whether to colour it and whether
to draw progress bars, so commands never ask.

Rules:

* ``--json`` prints exactly one JSON object on stdout (the envelope below),
  whether the command succeeded or failed; nothing else goes to stdout.
* ``--quiet`` prints nothing on success; errors still get their one line on
  stderr. The exit code says the rest.
* Colour only on a terminal, never with ``NO_COLOR`` set (``FORCE_COLOR``
  forces it); progress bars only when stderr is a terminal.
* An error is one line on stderr: what went wrong, in which file, and what
  to do. A traceback only with ``--debug``.

The JSON envelope (``schemas/envelope.json``)::

    {"command": "scan", "version": "0.1.0", "exit_code": 0, "result": {...}}
    {"command": "scan", "version": "0.1.0", "exit_code": 2, "error": {...}}

Rich is imported only when a table or a progress bar is drawn, and json only
when JSON is printed, which keeps start-up fast for the common scripted cases.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, NoReturn

from tensorfile._progress import ProgressCallback
from tensorfile_cli._exit import ExitCode, classify

if TYPE_CHECKING:
    from rich.console import Console



def colour_enabled(stream: IO[str]) -> bool:
    """Colour on a terminal unless NO_COLOR is set; FORCE_COLOR turns it on anywhere."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return _isatty(stream) and os.environ.get("TERM") != "dumb"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_SGR = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}

#: How each verdict is coloured in text output.
VERDICT_STYLES: dict[str, tuple[str, ...]] = {
    "safe": ("green",),
    "incomplete": ("yellow",),
    "not-assessed": ("yellow",),
    "skipped": ("yellow",),
    "unknown": ("yellow",),
    "error": ("yellow",),
    "dangerous": ("red", "bold"),
}


def terminal_width() -> int | None:
    """Columns to fit text to: the terminal's (or ``COLUMNS``), None into a pipe."""
    if not (_isatty(sys.stdout) or os.environ.get("COLUMNS")):
        return None
    import shutil

    return max(shutil.get_terminal_size().columns, 40)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, carriage
    returns, escape sequences, Unicode line separators and direction overrides)
    as its Python escape, so a name read from a file cannot forge lines,
    colours or order in text output (issue 22, item 9)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def printable_tree(value: Any) -> Any:
    """:func:`printable` applied to every string (and key) of a result."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > _TABLE_ROWS and _printable_table(value):
            return value
        return [printable_tree(v) for v in value]
    return value


#: Lists longer than this are first checked column by column.
_TABLE_ROWS = 64
#: Cell types that hold no text.
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


def _printable_table(rows: list[Any]) -> bool:
    """Whether ``rows``, dicts with the same string keys (a table such as
    ``inspect``'s 1.4 million tensors), hold only printable text: checked a
    column at a time in C (a Python call per cell took a minute there).
    False means "not known": the caller walks the rows."""
    from itertools import chain
    from operator import itemgetter

    if set(map(type, rows)) != {dict}:
        return False
    keys = list(rows[0])
    # Same keys in every row: each row's size matches and each key is found.
    if set(map(len, rows)) != {len(keys)} or not all(
        type(k) is str and k.isprintable() for k in keys
    ):
        return False
    for key in keys:
        try:
            column = list(map(itemgetter(key), rows))
        except KeyError:
            return False
        types = set(map(type, column))
        if types == {list}:  # lists of plain values (shapes)
            column = list(chain.from_iterable(column))
            types = set(map(type, column))
        if types == {str}:
            if not "".join(column).isprintable():
                return False
        elif not types <= _PLAIN_TYPES:
            return False
    return True


class Output:
    """Presentation of one command run (see the module docstring)."""

    def __init__(self, command: str, *, json_out: bool, quiet: bool, debug: bool) -> None:
        self.command = command
        self.json = json_out
        self.quiet = quiet
        self.debug = debug
        self._console: Console | None = None

    # -- plain text ---------------------------------------------------------
    @property
    def human(self) -> bool:
        """Whether human-readable text goes to stdout."""
        return not (self.json or self.quiet)

    def style(self, text: str, *styles: str, stream: IO[str] | None = None) -> str:
        """``text`` wrapped in ANSI styles when ``stream`` (stdout) takes colour."""
        if not styles or not colour_enabled(stream or sys.stdout):
            return text
        codes = ";".join(_SGR[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        """One line of human output on stdout (nothing with --json or --quiet)."""
        if self.human:
            sys.stdout.write(text + "\n")

    def para(self, text: str, indent: str = "", *, styled: tuple[str, ...] = ()) -> None:
        """``text`` (plain) as one line, wrapped at whole words to the terminal's
        width with ``indent`` before every line after the first; each word of
        ``styled`` (verdicts) is then coloured once. Not wrapped into a pipe."""
        if not self.human:
            return
        lines = [text]
        width = terminal_width()
        if width is not None and len(text) > width:
            import textwrap

            lines = textwrap.wrap(text, width, subsequent_indent=indent + "    ",
                                  break_long_words=False, break_on_hyphens=False)
        for word in styled:  # the verdict follows ": " (a name may hold the word too)
            for i, ln in enumerate(lines):
                at = ln.find(f": {word}") + 2
                if at >= 2:
                    coloured = self.style(word, *VERDICT_STYLES.get(word, ()))
                    lines[i] = ln[:at] + coloured + ln[at + len(word):]
                    break
        sys.stdout.write("\n".join(lines) + "\n")

    # -- rich ---------------------------------------------------------------
    @property
    def console(self) -> Console:
        """A rich console on stdout, made on first use (rich is slow to import)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=sys.stdout,
                color_system="auto" if colour_enabled(sys.stdout) else None,
                highlight=False,
                # Pipes get long lines rather than names wrapped mid-word.
                width=terminal_width() or 200,
            )
        return self._console

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressCallback | None]:
        """A bytes progress bar (size, rate, time left) on stderr, or ``None``
        when it should not be drawn (not a terminal, --json, --quiet)."""
        if not (self.human and _isatty(sys.stderr)):
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(
            file=sys.stderr, color_system="auto" if colour_enabled(sys.stderr) else None
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update

    # -- results and errors ---------------------------------------------------
    def finish(
        self,
        result: dict[str, Any],
        render: Callable[[Output, dict[str, Any]], None],
        code: ExitCode = ExitCode.OK,
    ) -> NoReturn:
        """Print the result (JSON envelope, or ``render`` for people) and exit."""
        if self.json:
            self._emit_json({"exit_code": int(code), "result": result})
        elif not self.quiet:
            # Names come from files and folders: escaped for people, raw in JSON.
            render(self, printable_tree(result))
        raise SystemExit(int(code))

    def fail(self, exc: BaseException, *paths: object) -> NoReturn:
        """Report ``exc`` as one line (and JSON if asked) and exit with its code.

        ``paths`` are the files the command was given, the main one first; the
        message is prefixed with the main one unless it already names one.
        """
        verdict = classify(exc)
        message = _message(exc)
        given = [str(p) for p in paths if p is not None]
        where = given[0] if given else ""
        named = isinstance(exc, OSError) and exc.filename is not None  # names its own file
        if isinstance(exc, OSError) and not named and exc.errno in _WRITE_ERRNOS:
            # A write failed somewhere under the outputs: not the input's fault.
            named, message = True, f"{message} (while writing the output)"
        if where and not named and not any(p in message for p in given):
            message = f"{where}: {message}"
        if self.json:
            self._emit_json(
                {
                    "exit_code": int(verdict.code),
                    "error": {
                        "type": type(exc).__name__,
                        "message": message,
                        "path": where or None,
                        "hint": verdict.hint,
                    },
                }
            )
        if self.debug:
            import traceback

            traceback.print_exception(exc)
        prefix = self.style("error:", "red", "bold", stream=sys.stderr)
        sys.stderr.write(
            f"tensorfile {self.command}: {prefix} {printable(message)} — {verdict.hint}\n")
        raise SystemExit(int(verdict.code))

    def _emit_json(self, body: dict[str, Any]) -> None:
        import json

        from tensorfile import __version__

        envelope = {"command": self.command, "version": __version__, **body}
        try:
            # json.dumps indents in Python, a call per value: `inspect --json`
            # of 1.4 million tensors took minutes. msgspec writes the same
            # text in C (floats may spell exponents without "+").
            import msgspec

            text = msgspec.json.format(msgspec.json.encode(envelope), indent=2).decode()
        except (ImportError, TypeError):
            text = json.dumps(envelope, indent=2, ensure_ascii=False)
        sys.stdout.write(text + "\n")


#: Errors only a write raises: the file the command was given is not to blame.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _message(exc: BaseException) -> str:
    """The exception's text on one line (a KeyError's text is not repr()'d)."""
    text = str(exc) if not isinstance(exc, KeyError) or not exc.args else str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{_destination(exc.filename)}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(text.split())
    for library, cli in _CLI_WORDS:
        text = text.replace(library, cli)
    return text or type(exc).__name__


#: Library messages name the library's arguments; on the command line the
#: advice is the option (the bundle's own field names are left alone).
_CLI_WORDS = (
    ("pass allow_symlinks", "pass --allow-symlinks"),
    ("(allow_extra_files ignores them)", "(--allow-extra-files ignores them)"),
    ("pass them in ignore_paths", "pass them with --ignore-paths"),
)


def _destination(filename: object) -> object:
    """The file a write was for, when ``filename`` is its temporary file
    (``DIR/.NAME.xxxxxxxx.tmp``, see :func:`tensorfile._io.atomic.atomic_write`):
    users know the name they asked for, not the temporary one."""
    from tensorfile._io.atomic import looks_like_temp_file

    if not isinstance(filename, str):
        return filename
    folder, name = os.path.split(filename)
    if not looks_like_temp_file(name):
        return filename
    return os.path.join(folder, name[1:-len(".xxxxxxxx.tmp")])


@contextmanager
def guarded(out: Output, *paths: object) -> Iterator[None]:
    """Turn any exception from the library into ``out.fail`` (one line, exit code).

    ``paths``: the files the command was given, the main one first.
    """
    try:
        yield
    except SystemExit:
        raise
    except KeyboardInterrupt:
        # 130 as shells report SIGINT; click would say exit 1, which here means a finding.
        sys.stderr.write(f"tensorfile {out.command}: interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:
        out.fail(exc, *paths)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a command builds its result.

    A result of millions of small dicts (``inspect`` of 1.4 million tensors)
    makes the collector run every 700 of them and walk everything built so
    far: 17 of 23 s building that result. The dicts hold no cycles, and the
    collector is switched back on after (a command then exits anyway).
    """
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
