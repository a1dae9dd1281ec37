"""Drop-in replacement for ``safetensors.torch``.

Same functions and signatures (``save``, ``save_file``, ``load``,
``load_file``, ``save_model``, ``load_model``). Loaded tensors are views of a
private copy-on-write map of the file: writing to one never changes the file.

Tensors that share memory cannot be stored twice without losing the sharing,
so ``save``/``save_file`` refuse them (as the reference does) and
``save_model`` keeps one name per storage and records each dropped alias in
the metadata as ``{alias: kept_name}``; ``load_model`` restores them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tensorfile._io import reader, writer
from tensorfile.errors import SerializationError

if TYPE_CHECKING:
    import torch


def _storage_key(t: torch.Tensor) -> tuple[Any, int, int] | None:
    if t.device.type == "meta":
        return None
    storage = t.untyped_storage()
    if storage.data_ptr() == 0 or storage.nbytes() == 0:
        return None
    return (t.device, storage.data_ptr(), storage.nbytes())


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    if t.numel() == 0:
        return start, start
    # The furthest byte any element reaches, whatever the strides.
    last = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True) if s > 0)
    return start, start + (last + 1) * t.element_size()


def shared_groups(state_dict: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names whose tensors overlap in memory, grouped (groups of one omitted)."""
    by_storage: dict[Any, list[str]] = defaultdict(list)
    for name, t in state_dict.items():
        key = _storage_key(t)
        if key is not None:
            by_storage[key].append(name)
    groups: list[list[str]] = []
    for names in by_storage.values():
        if len(names) < 2:
            continue
        spans = sorted((*_byte_span(state_dict[n]), n) for n in names)
        current = [spans[0][2]]
        reach = spans[0][1]
        for start, stop, name in spans[1:]:
            if start < reach:
                current.append(name)
                reach = max(reach, stop)
            else:
                if len(current) > 1:
                    groups.append(sorted(current))
                current, reach = [name], stop
        if len(current) > 1:
            groups.append(sorted(current))
    return groups


def _covers_storage(t: torch.Tensor) -> bool:
    storage = t.untyped_storage()
    return (
        t.is_contiguous()
        and t.data_ptr() == storage.data_ptr()
        and t.numel() * t.element_size() == storage.nbytes()
    )


def aliases_to_drop(
    state_dict: dict[str, torch.Tensor], preferred: Iterable[str] = ()
) -> dict[str, str]:
    """``{alias: kept}`` for every shared group: keep one name covering the storage.

    The kept name is the first (sorted) that covers the whole storage,
    preferring names in ``preferred`` (the names a file already holds).
    """
    pref = set(preferred)
    drop: dict[str, str] = {}
    for group in shared_groups(state_dict):
        complete = [n for n in group if _covers_storage(state_dict[n])]
        if not complete:
            raise SerializationError(
                f"tensors {group} share memory but none covers the whole storage; "
                "save them with .clone() to store each separately"
            )
        keep = next((n for n in complete if n in pref), complete[0])
        for n in group:
            if n != keep:
                drop[n] = keep
    return drop


def _refuse_shared(tensors: dict[str, torch.Tensor]) -> None:
    groups = shared_groups(tensors)
    if groups:
        raise SerializationError(
            f"some tensors share memory: {groups}; storing them separately would lose the "
            "sharing. Use save_model() to keep one copy, or .clone() them."
        )


def save(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize torch tensors to safetensors bytes."""
    _refuse_shared(tensors)
    return writer.save(tensors, metadata)


def save_file(
    tensors: dict[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write torch tensors to ``filename`` atomically."""
    _refuse_shared(tensors)
    writer.save_file(tensors, filename, metadata)


def load(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (on the cpu)."""
    return reader.load(data, "pt")


def load_file(
    filename: str | os.PathLike[str],
    device: str | int = "cpu",
    *,
    backend: str = "mmap",
) -> dict[str, torch.Tensor]:
    """Tensors from a file, views of a private copy-on-write map (no copy on cpu)."""
    dev = f"cuda:{device}" if isinstance(device, int) else device
    return reader.load_file(filename, "pt", dev, backend=backend)


def save_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    force_contiguous: bool = True,
) -> None:
    """Save a model's state dict, storing tied weights once.

    Each dropped alias is recorded in the metadata as ``{alias: kept_name}``
    (user metadata under the same key wins).
    """
    state_dict = model.state_dict()
    drop = aliases_to_drop(state_dict)
    meta = dict(metadata or {})
    for alias, kept in drop.items():
        meta.setdefault(alias, kept)
        del state_dict[alias]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    writer.save_file(state_dict, filename, meta if (meta or metadata is not None) else None)


def load_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    strict: bool = True,
    device: str | int = "cpu",
    *,
    backend: str = "mmap",
) -> tuple[list[str], list[str]]:
    """Load a file saved by ``save_model`` (or any state dict) into ``model``.

    Returns ``(missing, unexpected)`` names; with ``strict`` either being
    non-empty raises ``RuntimeError`` as ``torch`` and the reference do.
    """
    state_dict = load_file(filename, device, backend=backend)
    drop = aliases_to_drop(model.state_dict(), preferred=state_dict.keys())
    result = model.load_state_dict(state_dict, strict=False)
    missing = set(result.missing_keys)
    unexpected = list(result.unexpected_keys)
    for alias in drop:
        if alias in missing:
            missing.discard(alias)  # tied to a weight that was loaded
        else:
            unexpected.append(alias)
    if strict and (missing or unexpected):
        msg = f"Error(s) in loading state_dict for {type(model).__name__}:"
        if missing:
            msg += "\n    Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(missing))
        if unexpected:
            msg += "\n    Unexpected key(s) in state_dict: " + ", ".join(
                f'"{k}"' for k in sorted(unexpected)
            )
        raise RuntimeError(msg)
    return sorted(missing), unexpected


__all__ = ["load", "load_file", "load_model", "save", "save_file", "save_model"]
