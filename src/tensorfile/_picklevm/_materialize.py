"""Real Python values from a policy-checked value graph (``materialize``).

:func:`~tensorfile._picklevm.machine.run_stream` leaves a graph of nodes and
literals; the converter builds real values from it through a :class:`Builder`
(``pickles/_builder.py``) once the policy has approved every node. Nothing
is imported or called here: the builder decides what each node becomes.
"""

from __future__ import annotations

from typing import Protocol

from tensorfile._picklevm.machine import (
    Call,
    Effect,
    GlobalRef,
    PDict,
    PersistentRef,
    PSet,
    children,
    is_leaf,
)
from tensorfile.errors import PickleError


class Builder(Protocol):
    """Turns the nodes of a policy-checked value graph into real objects (see :func:`materialize`)."""

    def on_global(self, ref: GlobalRef) -> object:
        """The object a GLOBAL stands for (e.g. a marker for ``OrderedDict``)."""

    def on_call(self, call: Call, func: object, args: tuple[object, ...], kwargs: object) -> object:
        """The object a call returns, given its already built function and arguments."""

    def on_persistent(self, ref: PersistentRef, pid: object) -> object:
        """The object a persistent id stands for (torch: a storage description)."""

    def on_effect(self, effect: Effect, target: object, payload: tuple[object, ...]) -> None:
        """Apply SETITEMS / APPENDS / BUILD to an object ``on_call`` returned."""


def materialize(root: object, builder: Builder) -> object:
    """Build real Python values from a stream's value graph, iteratively.

    Literals are returned as they are (``BytesRef`` and ``Opaque`` included:
    the builder's calls decide what to accept). ``PDict`` becomes ``dict``
    (later keys win, as in ``pickle``), ``PSet`` ``set``/``frozenset``. Each node
    is built once however often it is referenced. A cycle (say, a list that
    contains itself: ``pickle`` can build one, no checkpoint holds one) raises
    :class:`PickleError`.
    """
    built: dict[int, object] = {}
    in_progress: set[int] = set()
    work: list[tuple[object, bool]] = [(root, False)]
    while work:
        value, expanded = work.pop()
        key = id(value)
        if key in built or is_leaf(value):
            continue
        if not expanded:
            if key in in_progress:
                raise PickleError("the value graph has a cycle materialize cannot build")
            in_progress.add(key)
            work.append((value, True))
            work.extend((child, False) for child in children(value))
            continue
        built[key] = _build_one(value, built, builder)
        in_progress.discard(key)
    return _get(root, built)


def _get(value: object, built: dict[int, object]) -> object:
    return value if is_leaf(value) else built[id(value)]


def _build_one(value: object, built: dict[int, object], builder: Builder) -> object:
    if isinstance(value, list):
        return [_get(x, built) for x in value]
    if isinstance(value, tuple):
        return tuple(_get(x, built) for x in value)
    if isinstance(value, PDict):
        try:
            return {_get(k, built): _get(v, built) for k, v in value.items}
        except TypeError as exc:
            raise PickleError(f"unhashable dict key: {exc}") from None
    if isinstance(value, PSet):
        try:
            items = [_get(x, built) for x in value.items]
            return frozenset(items) if value.frozen else set(items)
        except TypeError as exc:
            raise PickleError(f"unhashable set item: {exc}") from None
    if isinstance(value, GlobalRef):
        return builder.on_global(value)
    if isinstance(value, PersistentRef):
        return builder.on_persistent(value, _get(value.pid, built))
    if isinstance(value, Call):
        args = _get(value.args, built)
        if not isinstance(args, tuple):
            raise PickleError(f"{value.opcode} at byte {value.offset}: arguments are not a tuple")
        obj = builder.on_call(value, _get(value.func, built), args, _get(value.kwargs, built))
        for eff in value.effects:
            builder.on_effect(eff, obj, tuple(_get(x, built) for x in eff.payload))
        return obj
    raise PickleError(f"cannot build {type(value).__name__}")

