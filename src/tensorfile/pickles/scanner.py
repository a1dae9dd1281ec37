"""The library call behind ``tensorfile scan``: files and folders in, a typed report out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tensorfile.pickles.containers import ScanLimits, scan_file
from tensorfile.pickles.report import FileReport, ScanReport, Verdict

PathLike = str | os.PathLike[str]


def scan(paths: PathLike | Iterable[PathLike], *, limits: ScanLimits | None = None) -> ScanReport:
    """Statically scan files (folders recursively) for pickles that would run code.

    Nothing is imported or executed. Each file is classified by its content
    (torch zip, legacy torch, tar, raw pickle, numpy, nested archives) and each
    pickle stream in it gets a verdict: ``safe`` only when it provably does
    nothing but rebuild tensors and plain data. A path that does not exist or
    cannot be read yields a file report with verdict ``error``; so does a file
    named explicitly that is not a pickle. Inside a folder, files that are not
    pickles at all (config JSON, safetensors, text: unpickling them would fail
    before importing anything) are listed as ``not-pickle``/``safe``. The
    function never raises on bad input.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = ScanReport()
    for path in paths:
        named = Path(path)
        for file in _files(named):
            if isinstance(file, FileReport):
                report.files.append(file)
            else:
                report.files.append(scan_file(file, limits, named=file == named))
    return report


def _files(path: Path) -> Iterator[Path | FileReport]:
    """Regular files under ``path`` in a stable order; a report for what cannot be read."""
    if path.is_dir():
        found = False
        unreadable: list[OSError] = []
        for root, dirs, names in os.walk(path, onerror=unreadable.append, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                candidate = Path(root) / name
                if candidate.is_file():
                    found = True
                    yield candidate
        for exc in unreadable:  # a folder that cannot be listed may hide anything
            yield FileReport(str(exc.filename or path), "folder", Verdict.ERROR,
                             error=f"cannot list folder: {exc.strerror or exc}")
        if not found and not unreadable:
            yield FileReport(str(path), "folder", Verdict.ERROR, error="folder holds no files")
    elif path.is_file():
        yield path
    else:
        yield FileReport(str(path), "missing", Verdict.ERROR,
                         error="no such file" if not path.exists() else "not a regular file")
