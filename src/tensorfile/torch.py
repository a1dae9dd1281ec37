"""Drop-in replacement for ``safetensors.torch``.

Same functions and signatures (``save``, ``save_file``, ``load``,
``load_file``, ``save_model``, ``load_model``) and the module-level helpers
other libraries import from ``safetensors.torch`` (``storage_ptr``,
``storage_size``, ``_find_shared_tensors``, ``_is_complete``,
``_remove_duplicate_names``, ``_end_ptr``, ``_SIZE``, ``_TYPES``,
``_getdtype``). Loaded tensors are views of a private copy-on-write map of the
file: writing to one never changes the file.

Every loading function also takes ``verify=`` (a public key, root
certificates or a :class:`tensorfile.integrity.TrustPolicy`, as
:func:`tensorfile.safe_open` does): each tensor is checked against the
model's signature before it is returned.

Tensors that share memory cannot be stored twice without losing the sharing,
so ``save``/``save_file`` refuse them (``RuntimeError``, as the reference)
and ``save_model`` keeps one name per storage and records each dropped alias
in the metadata as ``{alias: kept_name}``; ``load_model`` restores them.

Differences from the reference, on purpose: a non-contiguous tensor is
written correctly (its values, in C order) instead of refused, and slices
follow numpy's indexing rules (see spec/FORMAT.md, "Drop-in differences").
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorfile import _api
from tensorfile._api import safe_open as safe_open
from tensorfile._format.dtypes import DTYPES
from tensorfile._frameworks import TensorSpec as TensorSpec
from tensorfile._frameworks import import_torch, torch_entry
from tensorfile._io import writer
from tensorfile._raw import deserialize as deserialize
from tensorfile._raw import serialize as serialize
from tensorfile._raw import serialize_file as serialize_file
from tensorfile._storage import _end_ptr as _end_ptr
from tensorfile._storage import _find_shared_tensors as _find_shared_tensors
from tensorfile._storage import _is_complete as _is_complete
from tensorfile._storage import shared_groups as shared_groups
from tensorfile._storage import storage_ptr as storage_ptr
from tensorfile._storage import storage_size as storage_size
from tensorfile.errors import NotATensorError, SerializationError, SharedTensorsError

if TYPE_CHECKING:
    import torch

    from tensorfile.integrity.onload import VerifyWith


# --------------------------------------------------------------------------
# Storage helpers (names and results as safetensors.torch's)
# --------------------------------------------------------------------------


def _remove_duplicate_names(
    state_dict: dict[str, torch.Tensor],
    *,
    preferred_names: Any = None,
    discard_names: Any = None,
) -> defaultdict[str, list[str]]:
    """``{kept: [aliases...]}`` for every group of :func:`_find_shared_tensors`:
    the one name per storage that ``safetensors``' ``save_model`` stores (a
    ``defaultdict(list)``, as the reference's: callers index it by any name).

    The kept name covers the whole storage: the first (sorted) of
    ``preferred_names`` that does, else the first not in ``discard_names``,
    else the first. As the reference, a group with no such name, even a group
    of one tensor that is a view of a larger storage, raises
    :class:`SharedTensorsError` (a ``RuntimeError``).
    """
    groups = _find_shared_tensors(state_dict)
    return defaultdict(list, _kept_names(state_dict, groups, preferred_names, discard_names))


def _kept_names(
    state_dict: dict[str, torch.Tensor],
    groups: list[set[str]],
    preferred_names: Any = None,
    discard_names: Any = None,
) -> dict[str, list[str]]:
    preferred = set(preferred_names or ())
    discard = set(discard_names or ())
    to_remove: dict[str, list[str]] = {}
    for group in groups:
        complete = sorted(n for n in group if _is_complete(state_dict[n]))
        if not complete:
            raise SharedTensorsError(
                f"tensors {sorted(group)}: none covers the whole memory it is a view of, so "
                "keeping one would store more memory than needed or lose the others; "
                ".clone() them to store each separately"
            )
        keep = next((n for n in complete if n in preferred), None)
        if keep is None:
            keep = next((n for n in complete if n not in discard), complete[0])
        to_remove[keep] = sorted(n for n in group if n != keep)
    return {k: v for k, v in to_remove.items() if v}


def _aliases(state_dict: dict[str, torch.Tensor], preferred: Any = None) -> dict[str, list[str]]:
    """:func:`_remove_duplicate_names` over groups of two or more only: tensorfile
    writes a lone view of a larger storage correctly (just its bytes)."""
    groups = [g for g in _find_shared_tensors(state_dict) if len(g) > 1]
    return _kept_names(state_dict, groups, preferred)


def __getattr__(name: str) -> Any:
    # _SIZE and _TYPES are torch dtype tables: built on first use so that
    # importing this module does not import torch.
    if name in ("_SIZE", "_TYPES"):
        torch = import_torch()
        types = {
            d.name: getattr(torch, d.torch_name)
            for d in DTYPES.values()
            if d.torch_name and hasattr(torch, d.torch_name)
        }
        globals()["_TYPES"] = types
        globals()["_SIZE"] = {t: t.itemsize for t in types.values()}
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _getdtype(dtype_str: str) -> torch.dtype:
    """The torch dtype of a header dtype code (``"F32"`` -> ``torch.float32``)."""
    types: dict[str, torch.dtype] = __getattr__("_TYPES")
    return types[dtype_str]


# --------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------


def _check_tensors(tensors: object) -> None:
    """The reference's checks before a write, with its exception types and wording."""
    torch = import_torch()
    if not isinstance(tensors, dict):
        raise SerializationError(
            f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}"
        )
    sparse = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise NotATensorError(
                f"Key `{name}` is invalid, expected torch.Tensor but received {type(t)}"
            )
        if t.layout != torch.strided:
            sparse.append(name)
    if sparse:
        raise SerializationError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not "
            "support. You can make it a dense tensor before saving with `.to_dense()` but be "
            "aware this might make a much larger file than needed."
        )
    groups = shared_groups(tensors)
    if groups:
        raise SharedTensorsError(
            f"some tensors share memory: {groups}; storing them separately would lose the "
            "sharing. Use save_model() to keep one copy, or .clone() them."
        )


def _to_ndarray(tensor: torch.Tensor) -> tuple[np.ndarray[Any, Any], Any]:
    """``(bytes, owner)``: the tensor's little-endian C-order bytes as a uint8
    array and the cpu tensor that owns them (keep it alive while the array is
    used), as ``safetensors.torch._to_ndarray``; diffusers' remote-VAE helpers
    send ``_to_ndarray(t)[0].tobytes()``.

    A cpu tensor that is already contiguous is viewed, not copied. Unlike the
    reference (which reads ``numel`` bytes from the first element's address),
    a non-contiguous tensor gives its values in C order (spec/FORMAT.md P1).
    An empty tensor gives ``(np.empty(0), 0)`` and a ``meta`` one torch's
    ``NotImplementedError`` (it has no bytes to copy), as in the reference.
    """
    if tensor.device.type != "cpu":
        tensor = tensor.to("cpu")
    if tensor.data_ptr() == 0:
        return np.empty(0), 0
    tensor = tensor.detach().contiguous()
    _, raw = torch_entry("tensor", tensor)
    return np.frombuffer(raw, dtype=np.uint8), tensor


def save(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize torch tensors to safetensors bytes."""
    _check_tensors(tensors)
    return writer.save(tensors, metadata)


def save_file(
    tensors: dict[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write torch tensors to ``filename`` atomically; ``durable=False`` skips the syncs (see
    :func:`tensorfile.save_file`)."""
    _check_tensors(tensors)
    writer.save_file(tensors, filename, metadata, durable=durable)


def load(data: bytes, *, verify: VerifyWith | None = None) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (on the cpu, copies).

    With ``verify`` the bytes are checked as the file a single-file signature
    covers; ``verify`` must then be a ``TrustPolicy`` naming its ``signature``
    (bytes have no folder to find ``model.sig`` in).
    """
    return _api.load(data, "pt", verify=verify)


def load_file(
    filename: str | os.PathLike[str],
    device: str | int | None = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors from a file, views of a private copy-on-write map (no copy on cpu).

    ``device``: an int is that cuda index and ``None`` the cpu, as the
    reference. With ``verify`` each tensor is read into private memory and
    checked against the signature first (see :func:`tensorfile.safe_open`).
    ``filename`` may be a URL (``s3://``, ``https://``, any fsspec scheme; an
    index or folder URL is a sharded model), read with fsspec's
    ``storage_options``.
    """
    return _api.load_file(filename, "pt", device, backend=backend, verify=verify,
                          storage_options=storage_options)


def save_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    force_contiguous: bool = True,
    *,
    durable: bool = True,
) -> None:
    """Save a model's state dict, storing tied weights once (``durable``: see
    :func:`save_file`).

    Each dropped alias is recorded in the metadata as ``{alias: kept_name}``
    (user metadata under the same key wins). ``force_contiguous`` is accepted
    for compatibility: tensorfile writes non-contiguous tensors correctly
    either way.
    """
    state_dict = model.state_dict()
    meta = dict(metadata or {})
    for kept, aliases in _aliases(state_dict).items():
        for alias in aliases:
            meta.setdefault(alias, kept)
            del state_dict[alias]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    writer.save_file(state_dict, filename, meta if (meta or metadata is not None) else None,
                     durable=durable)


def load_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    strict: bool = True,
    device: str | int | None = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
) -> tuple[set[str], list[str]]:
    """Load a file saved by ``save_model`` (or any state dict) into ``model``.

    Returns ``(missing, unexpected)`` names, a set and a list as the
    reference returns them (whatever its annotation says); with ``strict``
    either being non-empty raises ``RuntimeError`` as ``torch`` and the
    reference do.
    """
    state_dict = load_file(filename, device, backend=backend, verify=verify)
    drop = _aliases(model.state_dict(), preferred=state_dict.keys())
    result = model.load_state_dict(state_dict, strict=False)
    missing = set(result.missing_keys)
    unexpected = list(result.unexpected_keys)
    for aliases in drop.values():
        for alias in aliases:
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
    return missing, unexpected


__all__ = [
    "load",
    "load_file",
    "load_model",
    "save",
    "save_file",
    "save_model",
    "storage_ptr",
    "storage_size",
]
