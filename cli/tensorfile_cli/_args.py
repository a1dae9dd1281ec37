"""Reading the command line's arguments into what the library takes.

Checks that need no library work and must happen before any (a path that is
not there or cannot be read, an option given twice, a key and its password)
live here, so every command applies them the same way and ``app.py`` stays
the list of commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

#: Environment variable holding a private key's password (read by sign and keygen).
PASSWORD_ENV = "TENSORFILE_KEY_PASSWORD"


def ignored(model: Path, paths: list[Path] | None) -> list[str]:
    """``--ignore-paths`` relative to the model folder. As model-signing's CLI
    reads them, they are paths from the current folder (or absolute); one
    outside the model folder is an error rather than silently dropped."""
    out = []
    for p in paths or ():
        rel = os.path.relpath(os.path.abspath(p), os.path.abspath(model))
        if rel in (os.curdir, os.pardir) or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            raise typer.BadParameter(
                f"{p} is not inside the model folder {model}", param_hint="'--ignore-paths'"
            )
        out.append(rel.replace(os.sep, "/"))
    return out



def key_password(password_file: Path | None, *, ask: bool = False, confirm: bool = False) -> str | None:
    """The key password: from --password-file, the environment, or a prompt."""
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if ask:
        return str(typer.prompt("Key password", hide_input=True, confirmation_prompt=confirm))
    return None


def private_key(path: Path, password_file: Path | None) -> Any:
    """The signing key, loaded (and its password checked) before any work starts.

    An encrypted key without --password-file or the environment variable asks
    for the password on a terminal (getpass); elsewhere the error names both.
    """
    from tensorfile.errors import KeyPasswordError
    from tensorfile.integrity.keys import load_private_key

    password = key_password(password_file)
    try:
        return load_private_key(path, password)
    except KeyPasswordError as exc:
        if password is not None:
            raise
        if not sys.stdin.isatty():
            raise KeyPasswordError(f"{exc}, and there is no terminal to ask on") from None
    import getpass

    return load_private_key(path, getpass.getpass(f"Password for {path}: "))


def one(values: list[Path] | None, option: str) -> Path | None:
    """The one value of an option that must not be repeated (click keeps the last)."""
    if values and len(values) > 1:
        raise typer.BadParameter(
            f"given {len(values)} times ({', '.join(map(str, values))}); give it once",
            param_hint=f"'{option}'",
        )
    return values[0] if values else None


def exists(*paths: Path | str | None) -> None:
    """Refuse an input path that is not there ("no such file or folder") or that
    cannot be read (the ``PermissionError``, "check the file's permissions"):
    one line and exit 2, before any work starts."""
    import errno

    from tensorfile.errors import InputNotFoundError

    for p in paths:
        if p is None:
            continue
        if not os.path.lexists(p):
            raise InputNotFoundError(errno.ENOENT, "no such file or folder", str(p))
        if os.path.isdir(p):
            with os.scandir(p):
                pass
        elif os.path.isfile(p):
            # O_NONBLOCK: never wait on a FIFO swapped in; only the open is
            # tried (Windows has no FIFOs and no O_NONBLOCK).
            os.close(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))


