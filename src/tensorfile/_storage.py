"""Which torch tensors share memory: the storage helpers of ``safetensors.torch``.

Below both the torch facade (:mod:`tensorfile.torch`, which re-exports them
under the reference's names) and the sharded writer, which refuses tensors
that share memory as ``save_file`` does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the tensor's storage (0 for a meta tensor)."""
    try:
        return int(tensor.untyped_storage().data_ptr())
    except (NotImplementedError, RuntimeError):
        return 0


def storage_size(tensor: torch.Tensor) -> int:
    """Bytes of the tensor's storage."""
    try:
        return int(tensor.untyped_storage().nbytes())
    except (NotImplementedError, RuntimeError):
        return int(tensor.nelement() * tensor.element_size())


def _end_ptr(tensor: torch.Tensor) -> int:
    """One past the last byte any element reaches, whatever the strides."""
    start = int(tensor.data_ptr())
    if not tensor.nelement():
        return start
    last = sum((s - 1) * st for s, st in zip(tensor.shape, tensor.stride(), strict=True))
    return start + (last + 1) * tensor.element_size()


def _is_complete(tensor: torch.Tensor) -> bool:
    """Whether the tensor starts at its storage and covers all of it."""
    return bool(
        tensor.data_ptr() == storage_ptr(tensor)
        and tensor.nelement() * tensor.element_size() == storage_size(tensor)
    )


def _find_shared_tensors(state_dict: dict[str, torch.Tensor]) -> list[set[str]]:
    """Names grouped by overlapping memory, one set per group (sets of one included).

    Groups come in the order their storage is first seen, then by address;
    meta tensors and empty storages share nothing. Two views of one storage
    are in one group when their byte ranges overlap (directly or through a
    third tensor that overlaps both).
    """
    by_storage: dict[Any, list[str]] = defaultdict(list)
    for name, t in state_dict.items():
        if t.device.type == "meta":
            continue
        ptr, size = storage_ptr(t), storage_size(t)
        if ptr != 0 and size != 0:
            by_storage[(t.device, ptr, size)].append(name)
    groups: list[set[str]] = []
    for names in by_storage.values():
        spans = sorted((int(state_dict[n].data_ptr()), _end_ptr(state_dict[n]), n) for n in names)
        current, reach = {spans[0][2]}, spans[0][1]
        for start, stop, name in spans[1:]:
            if start < reach:
                current.add(name)
                reach = max(reach, stop)
            else:
                groups.append(current)
                current, reach = {name}, stop
        groups.append(current)
    return groups


def shared_groups(state_dict: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names whose tensors overlap in memory, grouped (groups of one omitted)."""
    return [sorted(g) for g in _find_shared_tensors(state_dict) if len(g) > 1]
