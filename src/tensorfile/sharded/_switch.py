"""Publishing a sharded save all at once: the old model or the new one, never a mix.

A re-save usually keeps the layout, so the new shards have the old ones'
names (``model-00001-of-00005.safetensors``): writing them in place one by one
would leave, after a kill, an old index over shards of two versions, which
loads silently. So the shards are written as temporary files (locked while
the writer lives; see :mod:`tensorfile._io.atomic`) and the index is the
switch:

1. every new shard is written under its temporary name, then synced (once,
   at the end, when durable); the old model is untouched;
2. the index is replaced (one rename) by one that names the temporary files:
   from here the folder holds the new model, complete;
3. each final name is made a hard link to its temporary file (a rename over
   the old shard, which no index names any more; a copy where the file system
   has no hard links);
4. the index is replaced by the final one (or, for a one-file model, removed);
   shards of the old layout and the temporary names are removed.

A kill before step 2 leaves the old model and dead temporary files (removed by
the next write into the folder); a kill between 2 and 4 leaves the new model,
loadable, under temporary names the sweep keeps because the index names them,
until the next save. An exception or a signal turned into one before step 2
removes the temporary files and leaves the old model as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from tensorfile._io.atomic import (
    TempFile,
    atomic_write,
    fsync_dir,
    signals_deferred,
    sweep_temp_files,
    sync_all,
)
from tensorfile.sharded._index import INDEX_SUFFIX, SAFETENSORS_SUFFIX


def write_index(path: Path, weight_map: Mapping[str, str], total: int, *, durable: bool) -> None:
    """Write an index file atomically: ``{"metadata": {"total_size"}, "weight_map"}``."""
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with atomic_write(path, durable=durable) as f:
        f.write((json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def remove_stale(folder: Path, prefix: str, keep: set[str]) -> None:
    """Remove files of an earlier save under ``prefix`` that the new one does not use."""
    pattern = re.compile(re.escape(prefix) + r"-\d{5,}-of-\d{5,}" + re.escape(SAFETENSORS_SUFFIX))
    for p in folder.iterdir():
        stale = pattern.fullmatch(p.name) or p.name in (
            prefix + SAFETENSORS_SUFFIX, prefix + INDEX_SUFFIX
        )
        if stale and p.name not in keep and p.is_file() and not p.is_symlink():
            p.unlink()


class Publisher:
    """Steps 2-4 of the module docstring for shards already written to ``staged``.

    ``live`` is true while an index names the temporary files (from step 2 to
    the final index of step 4): they are then the model on disk and must not
    be removed on failure. ``done`` turns true once nothing is left to undo.
    """

    def __init__(self, folder: Path, prefix: str, staged: Mapping[str, TempFile],
                 weight_map: Mapping[str, str], total: int, *, durable: bool) -> None:
        self.folder = folder
        self.prefix = prefix
        self.staged = staged
        self.weight_map = weight_map
        self.total = total
        self.durable = durable
        self.live = False
        self.done = False

    def publish(self) -> Path | None:
        """Switch to the new model; return the index path (None for one file)."""
        if self.durable:
            # The data before any name that points at it: one pass at the end.
            sync_all(self.staged.values())
            fsync_dir(self.folder)
        # From the first rename to the last removal the switch is not
        # interrupted by Ctrl-C or a handled SIGTERM: they take effect after
        # it (a few renames and small files), so ``live`` always tells the
        # truth and no temporary file is left unnamed. A kill needs no care:
        # see the module docstring.
        with signals_deferred():
            return self._switch()

    def _switch(self) -> Path | None:
        index = self.folder / (self.prefix + INDEX_SUFFIX)
        single = len(self.staged) == 1 and self.prefix + SAFETENSORS_SUFFIX in self.staged
        if single and not index.exists():
            # No index to switch: the one file replaces the old one by a rename.
            (name, tmp), = self.staged.items()
            tmp.commit()
            self.live = True
            remove_stale(self.folder, self.prefix, {name})
            self._finish(sync_folder=True)
            return None
        temporary = {t: self.staged[s].path.name for t, s in self.weight_map.items()}
        write_index(index, temporary, self.total, durable=self.durable)
        self.live = True
        for name, tmp in self.staged.items():
            tmp.link_as(self.folder / name)
        if self.durable:
            fsync_dir(self.folder)
        if single:
            remove_stale(self.folder, self.prefix, {*self.staged, index.name})
            index.unlink()
        else:
            write_index(index, self.weight_map, self.total, durable=self.durable)
            remove_stale(self.folder, self.prefix, {*self.staged, index.name})
        # With a final index, its own write made the switch durable; what
        # follows is clean-up a power cut may undo (the next save's sweep
        # then removes the temporary names again).
        self._finish(sync_folder=single)
        return None if single else index

    def _finish(self, *, sync_folder: bool) -> None:
        # No index names the temporary names any more: they go.
        self.live = False
        self.done = True
        for tmp in self.staged.values():
            tmp.discard()
        # The temporary names of an earlier save interrupted after its switch
        # are no longer named by any index now: remove them too.
        sweep_temp_files(self.folder)
        if self.durable and sync_folder:
            fsync_dir(self.folder)

    def abandon(self) -> None:
        """After a failure: remove the temporary files unless the switch happened
        (then they are the model on disk; the next save removes them)."""
        if self.done:
            return
        for tmp in self.staged.values():
            if self.live:
                tmp.file.close()
            else:
                tmp.discard()
