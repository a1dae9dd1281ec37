"""The library call behind ``tensorfile scan``: files and folders in, a typed report out.

Every path in scope ends up in the report: read (a :class:`FileReport`) or
skipped with its reason (a :class:`Skipped`: a symlinked folder not followed,
a FIFO, socket or device, a broken symlink). A skip turns an otherwise safe
scan ``incomplete``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tensorfile._io.files import PathLike
from tensorfile._io.sources import Image
from tensorfile._report import FileReport, ScanReport, Skipped, Verdict
from tensorfile._weights import is_weights_name
from tensorfile.errors import TensorfileError
from tensorfile.scan.loaders import judge_file, judge_url
from tensorfile.scan.pickle.containers import ScanLimits


def scan(paths: PathLike | Iterable[PathLike], *, limits: ScanLimits | None = None,
         follow_symlinks: bool = False, extra_allowed: Mapping[str, str] | None = None,
         storage_options: Mapping[str, Any] | None = None) -> ScanReport:
    """Statically scan files (folders recursively) for pickles that would run code.

    Nothing is imported or executed. Each file is classified by its content
    (torch zip, legacy torch, tar, raw pickle, numpy, nested archives) and each
    pickle stream in it gets a verdict: ``safe`` only when it provably does
    nothing but rebuild tensors and plain data. A file that no unpickler could
    start on (config JSON, text, images: unpickling fails before importing or
    calling anything) is ``not-pickle``/``safe``; a ``.safetensors`` file (or
    one that starts like one) is checked by the format core and is
    ``safetensors``/``safe`` or ``error`` naming the broken rule.

    Paths named in ``paths`` are followed if they are symlinks. Inside a
    folder, symlinked files are read; symlinked folders are listed in
    ``ScanReport.skipped`` unless ``follow_symlinks`` (a folder reached twice
    is scanned once). FIFOs, sockets and devices are never opened (reading
    one can block forever) and are listed as skipped. A path that does not
    exist or cannot be read yields a file report with verdict ``error``. The
    function never raises on bad input.

    ``extra_allowed`` maps ``module.name`` to the reason a project policy
    allows it (:mod:`tensorfile.check`): each use is kept as a finding of
    verdict ``safe`` whose reason starts with "allowed by policy: ", which
    ``tensorfile check`` reports as "allowed by policy (reason)", never "safe".

    A path that is a URL (``https://``, ``s3://``, any fsspec scheme, with
    ``storage_options`` as fsspec takes them) names one remote file, read by
    range requests (:func:`scan_url`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = ScanReport()
    for path in paths:
        if _names_url(path):
            assert isinstance(path, str)
            report.files.append(scan_url(path, limits, extra_allowed, storage_options))
            continue
        first = len(report.files)
        for item in _walk(Path(path), follow_symlinks):
            if isinstance(item, Path):
                report.files.append(_empty(item) or scan_one(item, limits, extra_allowed))
            elif isinstance(item, Skipped):
                report.skipped.append(item)
            else:
                report.files.append(item)
        found = report.files[first:]
        if found and os.path.isdir(path) and not any(
                f.format != "not-pickle" or is_weights_name(f.path) for f in found):
            # Configs and text only: the weights are missing (a failed or
            # partial download, or the wrong folder), which is not "safe".
            report.files.append(FileReport(
                str(path), "folder", Verdict.ERROR,
                error=f"no model files: {len(found)} file(s), none a pickle checkpoint, a "
                "safetensors file or named like weights (a partial download, or the wrong "
                "folder?)"))
    return report


def _names_url(path: object) -> bool:
    # "://" first: the remote layer (and numpy, which it imports) loads only for a URL.
    if not (isinstance(path, str) and "://" in path):
        return False
    from tensorfile._io.remote import is_url

    return is_url(path)


def scan_url(url: str, limits: ScanLimits | None = None,
             extra_allowed: Mapping[str, str] | None = None,
             storage_options: Mapping[str, Any] | None = None) -> FileReport:
    """Scan one remote file without downloading it: only the bytes the scanner
    looks at are fetched, by checked range requests (:mod:`tensorfile._io.remote`),
    so a torch zip checkpoint costs its directory, its pickles and the first
    bytes of each record, never the tensor data. An object replaced while it is
    read (ETag, size) ends the scan as an ``error``, never a mixed verdict.

    Model formats read by an assessor (GGUF, ONNX, Keras...) are
    ``not-assessed`` remotely; a URL naming a folder (a prefix) is an ``error``.
    """
    from tensorfile._io.remote import RemoteFile, RemoteOptions

    path = url.split("?", 1)[0].split("#", 1)[0]
    if path.endswith("/"):
        return FileReport(url, "folder", Verdict.ERROR, error=_REMOTE_FOLDER)
    try:
        remote = RemoteFile(url, RemoteOptions(dict(storage_options or {})))
    except FileNotFoundError as exc:
        return FileReport(url, "missing", Verdict.ERROR,
                          error=f"no such object ({exc}); {_REMOTE_FOLDER}")
    except (TensorfileError, OSError) as exc:
        return FileReport(url, "unreadable", Verdict.ERROR, error=f"cannot read: {exc}")
    basename = path.rsplit("/", 1)[-1]
    with Image(remote) as image:
        return judge_url(image, url, basename, limits, extra_allowed)


_REMOTE_FOLDER = ("remote folders (prefixes) are not scanned: give the URL of each file")


def _empty(path: Path) -> FileReport | None:
    """The report of a 0-byte file named like weights (an interrupted
    download passes for nothing), else None. Other empty files
    (``__init__.py``) are ``not-pickle``, in a folder or named on the command
    line, so that ``tensorfile scan MODEL_DIR/*`` reads a folder as
    ``tensorfile scan MODEL_DIR`` does."""
    try:
        if os.stat(path).st_size != 0:
            return None
    except OSError:
        return None  # scan_one reports it
    if not is_weights_name(path.name):
        return None
    return FileReport(str(path), "empty", Verdict.ERROR,
                      error="empty file (0 bytes): nothing to scan (an interrupted download?)")


def scan_one(path: Path, limits: ScanLimits | None = None,
             extra_allowed: Mapping[str, str] | None = None) -> FileReport:
    """Scan one regular file: every assessor that claims it (:mod:`.loaders`:
    the pickle reading and the safetensors check, then each model format
    assessor, GGUF, ONNX, Keras, SavedModel or chat templates, that claims it)."""
    return judge_file(path, limits, extra_allowed)


def _walk(path: Path, follow: bool) -> Iterator[Path | FileReport | Skipped]:
    """Regular files under ``path`` in a stable order; reports for what cannot be read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        missing = not os.path.lexists(path)
        yield FileReport(str(path), "missing", Verdict.ERROR,
                         error="no such file" if missing else f"cannot read: {exc.strerror}")
        return
    if stat.S_ISREG(st.st_mode):
        yield path
    elif stat.S_ISDIR(st.st_mode):
        found = False
        for item in _folder(path, follow, {(st.st_dev, st.st_ino)}):
            found = found or not isinstance(item, FileReport)
            yield item
        if not found:
            yield FileReport(str(path), "folder", Verdict.ERROR, error="folder holds no files")
    else:
        yield Skipped(str(path), _special(st.st_mode))


def _special(mode: int) -> str:
    kind = ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")
    return f"{kind}, not a regular file: not opened (reading one can block forever)"


def _folder(root: Path, follow: bool, seen: set[tuple[int, int]]
            ) -> Iterator[Path | FileReport | Skipped]:
    """Depth first, names sorted: a folder's files, then its sub-folders."""
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:  # a folder that cannot be listed may hide anything
            yield FileReport(str(folder), "folder", Verdict.ERROR,
                             error=f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                link = entry.is_symlink()
                st = os.stat(path) if link else entry.stat(follow_symlinks=False)
            except OSError:
                yield Skipped(str(path), "broken symlink: its target does not exist"
                              if os.path.islink(path) else "vanished while the folder was read")
                continue
            if stat.S_ISREG(st.st_mode):
                yield path  # a symlinked file is read: it is what a loader would open
            elif stat.S_ISDIR(st.st_mode):
                if link and not follow:
                    yield Skipped(str(path), "symlinked folder: not followed "
                                  "(--follow-symlinks scans it)")
                elif (st.st_dev, st.st_ino) not in seen:  # else: scanned under another path
                    seen.add((st.st_dev, st.st_ino))
                    subfolders.append(path)
            else:
                yield Skipped(str(path), _special(st.st_mode))
        pending.extend(reversed(subfolders))
