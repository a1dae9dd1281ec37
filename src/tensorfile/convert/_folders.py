"""The other files of a model folder being converted: what happens to each.

A Hugging Face folder, a Trainer ``checkpoint-N`` folder in particular, holds
more than weights: ``config.json``, tokenizer files, ``trainer_state.json``,
and pickles (``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
``scaler.pt``, ``training_args.bin``). The converter reports, file by file,
what it did with each (:class:`FileAction`); :func:`folder_inputs` says which
files are the weights to convert.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tensorfile._format.header import MAX_HEADER_SIZE
from tensorfile._format.strict_json import loads_strict
from tensorfile._io.atomic import atomic_write
from tensorfile._io.files import read_bounded
from tensorfile.errors import ConversionError, MalformedCheckpointError
from tensorfile.scan.pickle.containers import scan_file, sniff

#: The Hugging Face names the converter reads and writes.
PT_WEIGHTS = "pytorch_model.bin"
PT_INDEX = "pytorch_model.bin.index.json"
ST_WEIGHTS = "model.safetensors"


@dataclass(frozen=True, slots=True)
class FileAction:
    """What converting a folder did with one of its files."""

    name: str
    action: str  # converted, copied, left, not copied
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"name": self.name, "action": self.action, "detail": self.detail}


#: What the other pickles of a Hugging Face Trainer checkpoint folder hold.
_TRAINER_FILES: Final = (
    ("optimizer.", "optimizer state"), ("scheduler.", "learning-rate scheduler state"),
    ("rng_state", "random number generator state"), ("scaler.", "gradient scaler state"),
    ("training_args.", "the Trainer's arguments (a transformers object)"),
)
_PICKLE_SUFFIXES: Final = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


def folder_inputs(folder: Path) -> tuple[list[str], Path | None]:
    """The shard files of a Hugging Face folder (from its index), or the single weights file."""
    index = folder / PT_INDEX
    if index.is_file():
        # Strict: a repeated weight_map key is two readings of which shard
        # holds a tensor, so it is refused, not resolved.
        raw = read_bounded(index, MAX_HEADER_SIZE, MalformedCheckpointError, "weight index")
        doc = loads_strict(raw, str(index), MalformedCheckpointError)
        try:
            weight_map = doc["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedCheckpointError(f"{index}: not a weight index: {exc}") from None
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in (".", ".."):
                raise MalformedCheckpointError(f"{index}: shard name {shard!r} is not a file name")
            if not (folder / shard).is_file():
                raise MalformedCheckpointError(f"{index}: shard {shard!r} is missing")
        return shards, index
    if (folder / PT_WEIGHTS).is_file():
        return [PT_WEIGHTS], None
    raise ConversionError(f"{folder}: no {PT_WEIGHTS} or {PT_INDEX} to convert")


def _looks_pickled(path: Path) -> bool:
    if path.suffix in _PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return sniff(head) in ("zip", "tar") or head[:1] == b"\x80"


def other_files(src: Path, out: Path, skip: set[str]) -> list[FileAction]:
    """What happens to the folder's other top-level files, file by file.

    Plain files (config, tokenizer, trainer_state.json) are copied beside the
    result when it goes to another folder. Pickles (optimizer.pt, scheduler.pt,
    rng_state.pth, training_args.bin, ...) are never copied into it, so that
    the output folder holds no pickle; each is scanned so that the report says
    what it is.
    """
    actions: list[FileAction] = []
    elsewhere = out.resolve() != src.resolve()
    for entry in sorted(src.iterdir()):
        if entry.name in skip:
            continue
        if entry.is_symlink() or not entry.is_file():
            kind = "a symbolic link" if entry.is_symlink() else "not a regular file"
            actions.append(FileAction(entry.name, "left", f"{kind}; not read"))
            continue
        if _looks_pickled(entry):
            role = next((what for prefix, what in _TRAINER_FILES
                         if entry.name.startswith(prefix)), "a pickle")
            verdict = scan_file(entry).verdict.value
            detail = (f"{role}; pickle, scan: {verdict}; not model weights (convert it on "
                      "its own if you need it)")
            actions.append(FileAction(entry.name, "not copied" if elsewhere else "left", detail))
            continue
        if not elsewhere:
            actions.append(FileAction(entry.name, "left"))
            continue
        target = out / entry.name
        if target.exists():
            actions.append(FileAction(entry.name, "left", f"{target} exists; not overwritten"))
        else:
            _copy_atomically(entry, target)
            actions.append(FileAction(entry.name, "copied", str(target)))
    return actions


def _copy_atomically(src: Path, target: Path) -> None:
    """Copy ``src`` (its bytes and times) to ``target`` through a temporary
    file: a kill leaves no torn copy, only a temporary file the next write
    into the folder removes."""
    with atomic_write(target) as f, src.open("rb") as fh:
        shutil.copyfileobj(fh, f)
        st = os.fstat(fh.fileno())
        os.utime(f.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
