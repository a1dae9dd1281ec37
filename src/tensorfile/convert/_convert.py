"""Convert torch pickle checkpoints to safetensors without executing them.

``torch.load`` followed by ``save_file`` runs the very pickle a user wants to
get rid of. :func:`convert` never does: it is the scanner's interpreter with a
builder attached (:mod:`._builder`), not a second parser, and it needs neither
torch nor :mod:`pickle`.

For each input file:

1. **Refuse before writing.** The whole file is scanned first
   (:func:`~tensorfile.scan.pickle.containers.scan_file`: every stream, every zip
   entry, payloads after STOP, nested archives). Anything but ``safe`` stops
   the conversion with :class:`~tensorfile.errors.UnsafePickleError` naming the
   global, the stream and the byte offset; an unreadable file raises
   :class:`~tensorfile.errors.MalformedCheckpointError`. Known but
   unconvertible tensor kinds (``_rebuild_qtensor``, sparse) raise
   :class:`~tensorfile.errors.UnsupportedCheckpointError`. With ``key`` an
   ``unknown`` object stream is let through to step 3; ``salvage_tensors``
   skips the scan.
2. **Read.** The object stream is run through the scanner's machine with the
   policy not strict (:class:`~._extract.GraphObserver`): its value graph and
   the nodes the policy flagged. Storages are windows over the records (zip
   entries memory-mapped in place; the legacy format's records found by
   walking its storage section; torch < 0.4's tar members; storages nested by
   ``pickle.dumps(tensor)``), looked up through :class:`~._builder.CheckpointBuilder`.
3. **Build and flatten.** By default the whole graph, which must have no
   flagged node; with ``key`` the selected sub-tree, when
   :func:`~._extract.check_subtree` proves no flagged node could reach it (the
   rest is never built and is listed in the report with why it was left);
   with ``salvage_tensors`` every literal tensor, named by its path
   (:func:`~._extract.salvage`). Every view is bounds-checked, so a malformed
   file is refused before any output exists. Tensors get their dotted
   state-dict names (``model_state.layer.weight``). Names that denote the
   same view of the same storage (tied weights) are written once; the others
   are recorded in ``__metadata__`` as ``{alias: kept}``, the way the
   reference ``save_model`` does, so ``load_model`` restores them. Plain
   values are kept as JSON text in ``__metadata__`` under their dotted name,
   leaf by leaf (:mod:`._metadata`); tensors safetensors cannot hold
   (complex128, complex32) are listed, the rest written.
4. **Write** through :func:`tensorfile._io.writer.save_stream`, atomically,
   one tensor at a time straight from its record: a contiguous little-endian
   tensor (nearly all of them) is copied file to file inside the kernel
   (``os.copy_file_range``, with a buffered fallback where the kernel
   refuses), a non-contiguous or big-endian view is read through the map and
   materialized alone, its pages released after it is written: peak memory
   stays near the largest tensor. The source's SHA-256 is computed on a
   second thread meanwhile, for the report (the only pass that reads the
   source into this process).

Folders in the Hugging Face layout (``pytorch_model.bin``, or shards plus
``pytorch_model.bin.index.json``) become ``model.safetensors`` (or shards plus
``model.safetensors.index.json``, through :mod:`tensorfile.sharded`); every
shard is checked before the first output is written, and the index is
written last. The report says what was done with every other file (a
Trainer checkpoint's ``optimizer.pt`` and ``training_args.bin`` are scanned,
never copied into a new output folder).

The rules of ``key`` and salvage are in spec/SCANNING.md ("Converting").

The work is split by floor: :mod:`._checkpoint` reads a file (steps 1 and 2),
:mod:`._flatten` builds and names what it holds (step 3), and this module
writes, shards, handles folders and fills the report (step 4).

The function is :func:`convert` in this module (``tensorfile.pickles.convert``
is the module's own name, so the package does not re-export the function
under it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfile._format.header import Entry, canonical_order
from tensorfile._io.files import PathLike
from tensorfile._io.sources import ByteSource, open_image
from tensorfile._io.writer import KERNEL_COPY, FileSpan, save_stream
from tensorfile._progress import Progress, ProgressCallback
from tensorfile.convert._builder import TensorView
from tensorfile.convert._checkpoint import (
    Checkpoint,
    Mode,
    Source,
    errors_as,
    hash_in_background,
    load_checkpoint,
    refuse_safetensors,
)
from tensorfile.convert._flatten import DroppedValue, Plan, check_budget, make_plan
from tensorfile.convert._folders import (
    PT_WEIGHTS,
    ST_WEIGHTS,
    FileAction,
    folder_inputs,
    other_files,
)
from tensorfile.errors import (
    ConversionError,
    InputNotFoundError,
    MalformedCheckpointError,
    OutputExistsError,
    SerializationError,
    UnsupportedCheckpointError,
)
from tensorfile.sharded import save_sharded_iter, write_order

# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

@dataclass(slots=True)
class ConversionReport:
    """What :func:`convert` wrote.

    ``tensors`` are the names written (in file order per output), ``aliases``
    maps each tied name that was not written to the name that holds its bytes,
    ``values`` names the plain values kept as JSON in ``__metadata__``,
    ``dropped`` lists everything else (single leaves of a kept value too, as
    ``config.device``). ``tensors_left`` lists tensors safetensors cannot hold
    (or, salvaging, whose storage or view is not determined); ``left`` (with
    ``key``) every value beside the path to it and why it was left;
    ``not_performed`` (salvage) every import, call and effect outside the
    allowlist, ``not_listed`` counting those past the first 10,000; ``files``
    (folders) what was done with each top-level file. ``source_sha256`` is the
    digest of every source file read; ``outputs`` every file written (shards,
    then the index); ``replaced`` every file that existed before and was
    replaced or removed (only with ``overwrite``), the signature included.
    """

    source: str
    format: str
    outputs: list[str] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    dropped: list[DroppedValue] = field(default_factory=list)
    source_sha256: dict[str, str] = field(default_factory=dict)
    bytes_written: int = 0
    signature: str | None = None
    tensors_left: list[DroppedValue] = field(default_factory=list)
    left: list[DroppedValue] = field(default_factory=list)
    salvage: bool = False
    not_performed: list[dict[str, object]] = field(default_factory=list)
    not_listed: int = 0
    files: list[FileAction] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``tensorfile convert --json`` prints)."""
        return {
            "source": self.source,
            "format": self.format,
            "outputs": list(self.outputs),
            "tensors": list(self.tensors),
            "aliases": dict(self.aliases),
            "values": list(self.values),
            "dropped": [d.to_dict() for d in self.dropped],
            "tensors_left": [d.to_dict() for d in self.tensors_left],
            "left": [d.to_dict() for d in self.left],
            "salvage": self.salvage,
            "not_performed": [dict(n) for n in self.not_performed],
            "not_listed": self.not_listed,
            "files": [f.to_dict() for f in self.files],
            "source_sha256": dict(self.source_sha256),
            "bytes_written": self.bytes_written,
            "signature": self.signature,
            "replaced": list(self.replaced),
        }


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

class _Copier:
    """Hands the writer one tensor's bytes at a time, straight from the records.

    Called with each name in file order. A tensor whose bytes are one run of a
    source file (:meth:`~._builder.TensorView.raw_span`: contiguous,
    little-endian; almost every tensor ``torch.save`` writes) goes as a
    :class:`~tensorfile._io.writer.FileSpan`, which the writer copies file to
    file in the kernel; any other (a view, a big-endian record, a nested
    stream's bytes, a remote source's) is read with ``pread`` and materialized
    alone (:meth:`~._builder.TensorView.data`), so resident memory stays near
    one tensor and a file cut short under the copy is a typed error, never a
    ``SIGBUS``. Before handing out the next tensor it accounts for the
    previous one (progress); :meth:`finish` does the same for the last one
    once the writer returns.
    """

    def __init__(self, tensors: dict[str, TensorView], sources: list[Source],
                 progress: Progress) -> None:
        self._tensors = tensors
        # Which open local file each image shows (the image starts at the file's byte 0).
        self._files = {id(src.buf): fd for src in sources
                       if (fd := src.fileno()) is not None} if KERNEL_COPY else {}
        self._progress = progress
        self._pending: TensorView | None = None

    def __call__(self, name: str) -> memoryview | FileSpan:
        self.finish()
        view = self._pending = self._tensors[name]
        fd = self._files.get(id(view.storage.buf))
        span = view.raw_span() if fd is not None else None
        if fd is not None and span is not None and span[1]:
            return FileSpan(fd, *span)
        return view.data()

    def finish(self) -> None:
        """Account for the tensor handed out last (it has been written)."""
        view, self._pending = self._pending, None
        if view is None:
            return
        self._progress.add(view.nbytes)


def _entries(tensors: dict[str, TensorView]) -> list[Entry]:
    return [Entry(n, v.dtype, v.header_shape) for n, v in tensors.items()]


def _write(plan: Plan, dst: Path, progress: Progress) -> list[str]:
    """Write one output file atomically, tensor by tensor; returns the names in file order."""
    entries = _entries(plan.tensors)
    order = [e.name for e in canonical_order(entries)]
    copier = _Copier(plan.tensors, [plan.checkpoint.source], progress)
    with errors_as(SerializationError, UnsupportedCheckpointError, dst):
        save_stream(entries, ((n, copier(n)) for n in order), dst, plan.metadata())
    copier.finish()
    return order


# ---------------------------------------------------------------------------
# Orchestration: one file or a folder, the report, the signature
# ---------------------------------------------------------------------------

def _default_output(src: Path) -> Path:
    if src.name == PT_WEIGHTS:
        return src.with_name(ST_WEIGHTS)
    return src.with_suffix(".safetensors")


def _report(report: ConversionReport, plans: list[Plan], outputs: list[Path],
            order: list[str]) -> None:
    report.outputs.extend(str(p) for p in outputs)
    report.tensors.extend(order)
    for plan in plans:
        report.aliases.update(plan.aliases)
        report.values.extend(plan.values)
        report.dropped.extend(plan.dropped)
        report.tensors_left.extend(plan.tensors_left)
        report.left.extend(plan.left)
        report.not_performed.extend(plan.not_performed)
        report.not_listed += plan.not_listed
        report.bytes_written += plan.nbytes
        src = plan.checkpoint.source
        report.source_sha256[str(src.path)] = src.sha256()


def _convert_file(src: Path | str, out: Path, mode: Mode,
                  progress: ProgressCallback | None, remote: ByteSource | None = None
                  ) -> ConversionReport:
    if remote is None and out.resolve() == Path(src).resolve():
        raise ConversionError(f"{src}: the output would overwrite the source")
    ck = load_checkpoint(src, mode, remote)
    try:
        plan = make_plan(ck, mode)
        check_budget([plan])
        report = ConversionReport(str(src), ck.format, salvage=mode.salvage)
        out.parent.mkdir(parents=True, exist_ok=True)
        hash_in_background([ck.source])
        order = _write(plan, out, Progress(plan.nbytes, progress))
        _report(report, [plan], [out], order)
        return report
    finally:
        ck.source.close()


def _convert_folder(src: Path, dst: Path | None, mode: Mode,
                    progress: ProgressCallback | None) -> tuple[ConversionReport, list[str]]:
    """Every input shard is checked, then all tensors are written through
    :func:`tensorfile.sharded.save_sharded_iter`: ``model.safetensors``, or
    ``model-0000i-of-0000n.safetensors`` shards no bigger than the largest
    input shard and ``model.safetensors.index.json``, all or nothing (a
    failure or a kill leaves the destination's old model, or none)."""
    shards, index = folder_inputs(src)
    out = dst if dst is not None else src
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out}: a folder converts into a folder, not a file")
    checkpoints: list[Checkpoint] = []
    try:
        for shard in shards:  # every shard is checked before anything is written
            checkpoints.append(load_checkpoint(src / shard, mode))
        plans = [make_plan(ck, mode) for ck in checkpoints]
        check_budget(plans)
        tensors: dict[str, TensorView] = {}
        metadata: dict[str, str] = {}
        for plan in plans:
            for name, view in plan.tensors.items():
                if name in tensors:
                    raise UnsupportedCheckpointError(f"{src}: two shards hold tensor {name!r}")
                tensors[name] = view
            metadata.update(plan.metadata())
        total = sum(p.nbytes for p in plans)
        created = _new_folders(out)
        out.mkdir(parents=True, exist_ok=True)
        report = ConversionReport(str(src), "folder", salvage=mode.salvage)
        hash_in_background([ck.source for ck in checkpoints])
        copier = _Copier(tensors, [ck.source for ck in checkpoints], Progress(total, progress))
        entries = _entries(tensors)
        # Shards no bigger than the largest input shard (so about as many); one file
        # for one input.
        limit = max([p.nbytes for p in plans] if index is not None else [total]) or 1
        # What the writer refuses (a name or header safetensors cannot hold) is
        # unsupported, not malformed.
        try:
            with errors_as(SerializationError, UnsupportedCheckpointError, out):
                written = save_sharded_iter(entries, copier, out, limit, metadata)
        except BaseException:
            # All or nothing: the folders this convert created go too (the
            # writer already removed its temporary files).
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        copier.finish()
        files = [out / f for f in written.shard_files] or [out / ST_WEIGHTS]
        if written.path is not None:
            files.append(written.path)
        _report(report, plans, files, write_order(entries))
    finally:
        for ck in checkpoints:
            ck.source.close()
    converted = [*shards, *([index.name] if index is not None else [])]
    report.files = [FileAction(name, "converted") for name in converted]
    outputs = {Path(p).name for p in report.outputs} if out.resolve() == src.resolve() else set()
    report.files += other_files(src, out, set(converted) | outputs)
    return report, converted


def _is_folder(dst: PathLike) -> bool:
    """A destination is a folder when it is one, or is spelt as one (``out/``)."""
    text = os.fspath(dst)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def _file_output(src: Path, dst: PathLike | None) -> Path:
    """Where converting the file ``src`` writes (``dst`` a folder: the default name in it)."""
    if dst is None:
        return _default_output(src)
    return Path(dst) / _default_output(src).name if _is_folder(dst) else Path(dst)


#: What a folder conversion may write or remove in its output folder (as the
#: sharded writer names and sweeps them): ``model.safetensors``, its index, shards.
_FOLDER_OUTPUT = re.compile(r"model(-\d{5,}-of-\d{5,})?\.safetensors(\.index\.json)?")


def _existing_outputs(source: Path, target: PathLike | None, signature: Path | None) -> list[Path]:
    """The files a conversion of ``source`` to ``target`` would replace or remove."""
    if source.is_dir():
        out = Path(target) if target is not None else source
        found = sorted(p for p in out.iterdir() if _FOLDER_OUTPUT.fullmatch(p.name)) \
            if out.is_dir() else []
    else:
        out_file = _file_output(source, target)
        if out_file.resolve() == source.resolve():
            raise ConversionError(f"{source}: the output would overwrite the source")
        found = [out_file] if os.path.lexists(out_file) else []
    if signature is not None and os.path.lexists(signature):
        found.append(signature)
    return found


def _check_sources(source: Path) -> None:
    """Refuse, before anything is read, a missing source or a file that is
    already safetensors (saying so, rather than what the unpickler trips on)."""
    if not os.path.lexists(source):
        raise InputNotFoundError(errno.ENOENT, "no such file or folder", str(source))
    if source.is_dir() or not source.exists():
        return
    try:
        with open_image(source) as image:
            refuse_safetensors(image, source)
    except OSError:
        return  # the conversion's own reading says why


def _new_folders(out: Path) -> list[Path]:
    """The folders ``out.mkdir(parents=True)`` would create, deepest first."""
    new = []
    for folder in (out, *out.parents):
        if folder.exists():
            break
        new.append(folder)
    return new


def convert(
    src: PathLike,
    dst: PathLike | None = None,
    *,
    key: str | None = None,
    salvage_tensors: bool = False,
    sign: Any = None,
    password: str | bytes | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Convert a torch checkpoint file or Hugging Face folder to safetensors, never running it.

    ``src`` is a ``.bin``/``.pt``/``.pth`` file (zip, legacy or tar format) or a
    folder with ``pytorch_model.bin`` or shards plus ``pytorch_model.bin.index.json``.
    ``dst`` defaults to ``model.safetensors`` (for ``pytorch_model.bin``) or the
    source name with a ``.safetensors`` suffix; for a folder, to the folder
    itself (other files are left alone; with a different ``dst`` they are
    copied there, pickles excepted). ``key`` selects one sub-tree of a training
    checkpoint (``"state_dict"``, dotted paths allowed): it converts when
    allowlisted operations rebuild all of it and nothing outside the
    allowlist could reach it, whatever else the file holds (``report.left``
    says what was left and why); a file with a dangerous finding is still
    refused. ``salvage_tensors`` takes every tensor whose storage and view are
    literal values of the pickle out of any file, dangerous ones included,
    executing nothing: the output holds numbers only, and
    ``report.not_performed`` lists every call that was not made. ``sign`` is a private key (path,
    PEM bytes or key object, see :func:`tensorfile.integrity.sign`) to sign the
    result with; ``progress(done, total)`` is called as tensor bytes are written.

    A ``dst`` that is a folder, or ends with ``/``, is a folder: the output
    goes inside it. Nothing that exists is replaced or removed unless
    ``overwrite``: an existing output file (for a folder, a ``model.safetensors``,
    its index or shards there) or signature raises
    :class:`~tensorfile.errors.OutputExistsError` before anything is read;
    with ``overwrite``, ``report.replaced`` lists each. The signing key (and
    its password) is loaded before the conversion starts.

    Raises :class:`~tensorfile.errors.UnsafePickleError` when any pickle in the
    input is not provably safe (beyond what ``key`` and ``salvage_tensors`` allow), :class:`~tensorfile.errors.MalformedCheckpointError`
    or :class:`~tensorfile.errors.UnsupportedCheckpointError` when it cannot be
    converted, :class:`~tensorfile.errors.InputNotFoundError` when ``src`` does
    not exist; in every such case nothing is written.

    ``src`` may be a URL (``https://``, ``s3://``, any fsspec scheme; with
    ``storage_options`` as fsspec takes them) of one checkpoint file, converted
    into the local ``dst`` (required) without downloading it first: the scan
    fetches the container's directory and the pickles by range requests, the
    tensors are fetched as they are written, and an object that changes
    meanwhile (ETag, size) raises :class:`~tensorfile.errors.RemoteChangedError`
    with nothing written. The source's SHA-256 in the report reads the object
    once more. Remote folders are not converted.
    """
    if isinstance(src, str) and "://" in src:
        from tensorfile._io.remote import is_url

        if is_url(src):
            return _convert_url(src, dst, Mode(key, salvage_tensors), sign, password, progress,
                                overwrite, storage_options)
    source = Path(src)
    target = Path(dst) if dst is not None else None
    mode = Mode(key, salvage_tensors)
    _check_sources(source)
    signing_key, signature = None, None
    if sign is not None:
        # Where sign's default puts it: in the output folder, or beside the file.
        folder = (target if target is not None else source) if source.is_dir() \
            else _file_output(source, dst).parent
        signing_key, signature = _signing(sign, password, folder)
    existing = _existing_outputs(source, dst, signature)
    _refuse_existing(existing, overwrite)
    if source.is_dir():
        report, converted = _convert_folder(source, target, mode, progress)
        model = target if target is not None else source
        ignore = converted if model.resolve() == source.resolve() else []
    elif source.is_file():
        report = _convert_file(source, _file_output(source, dst), mode, progress)
        model, ignore = Path(report.outputs[0]), []
    else:
        raise MalformedCheckpointError(f"{source}: not a regular file or folder (FIFO, socket or device)")
    _finish(report, model, signing_key, ignore, overwrite, existing)
    return report


def _signing(sign: Any, password: str | bytes | None, folder: Path) -> tuple[Any, Path]:
    """The signing key and where the signature goes (``folder``, as sign's default)."""
    # Loaded (password checked) first: a bad key must not cost a conversion.
    # Lazy for cost: cryptography and the integrity package load only here.
    from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME
    from tensorfile.integrity.keys import load_private_key

    return load_private_key(sign, password), folder / DEFAULT_SIGNATURE_NAME


def _refuse_existing(existing: list[Path], overwrite: bool) -> None:
    if existing and not overwrite:
        also = f" (as do {', '.join(str(p) for p in existing[1:])})" if existing[1:] else ""
        raise OutputExistsError(errno.EEXIST, f"already exists{also}; nothing was written",
                                str(existing[0]))


def _finish(report: ConversionReport, model: Path, signing_key: Any, ignore: list[str],
            overwrite: bool, existing: list[Path]) -> None:
    """Sign the written model if asked, and list what was replaced."""
    if signing_key is not None:
        from tensorfile.integrity import sign as sign_model

        report.signature = str(sign_model(model, signing_key, ignore_paths=ignore,
                                          overwrite=overwrite))
    report.replaced = [str(p) for p in existing]


def _convert_url(url: str, dst: PathLike | None, mode: Mode, sign: Any,
                 password: str | bytes | None, progress: ProgressCallback | None,
                 overwrite: bool, storage_options: Mapping[str, Any] | None
                 ) -> ConversionReport:
    """:func:`convert` of one remote checkpoint file into a local file."""
    from tensorfile._io.remote import RemoteFile, RemoteOptions, is_url

    path = url.split("?", 1)[0].split("#", 1)[0]
    if path.endswith("/"):
        raise ConversionError(f"{url}: a remote folder (prefix) is not converted: give the URL "
                              "of the checkpoint file")
    if dst is None or is_url(os.fspath(dst)):
        raise ConversionError(f"{url}: give a local output path (DST): a remote checkpoint "
                              "converts into a local file")
    out = _file_output(Path(path.rsplit("/", 1)[-1] or "model.bin"), dst)
    signing_key, signature = (None, None) if sign is None else _signing(sign, password, out.parent)
    existing = [p for p in (out, signature) if p is not None and os.path.lexists(p)]
    _refuse_existing(existing, overwrite)
    remote = RemoteFile(url, RemoteOptions(dict(storage_options or {})))
    report = _convert_file(url, out, mode, progress, remote)
    _finish(report, out, signing_key, [], overwrite, existing)
    return report



__all__ = ["ConversionReport", "DroppedValue", "FileAction", "ProgressCallback", "convert"]
