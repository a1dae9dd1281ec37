"""Flattening a checkpoint's value graph: tensors by dotted name, plain values as JSON.

The second floor of :func:`tensorfile.pickles.convert.convert`, over
:mod:`._checkpoint`. :func:`make_plan` decides what of a
:class:`~._checkpoint.Checkpoint` is built (the whole graph, the ``key``
sub-tree, or salvaged literal tensors; spec/SCANNING.md "Converting") and
names it: each tensor by its state-dict path (``model_state.layer.weight``),
tied names as aliases of the one kept, plain values as JSON text
(:mod:`._metadata`), everything else listed as dropped with why. The result
is a :class:`Plan`: what one output file will hold.

Names are counted before any is made (:data:`MAX_NAMES`,
:data:`MAX_NAME_TEXT`): the pickle memo lets a small file share one container
under itself many times over.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tensorfile._format.header import MAX_HEADER_SIZE, METADATA_KEY
from tensorfile._report import Verdict
from tensorfile.convert._builder import LeftTensor, TensorView, Unbuilt
from tensorfile.convert._checkpoint import Checkpoint, Mode, build, refuse_unless_safe
from tensorfile.convert._extract import (
    ObjectGraph,
    check_subtree,
    known_kind,
    left_beside,
    name_part,
    salvage,
    select,
    whole,
)
from tensorfile.convert._metadata import JsonValues
from tensorfile.errors import UnsafePickleError, UnsupportedCheckpointError

#: Names one checkpoint may flatten to: tensors, aliases, plain and dropped values.
#: The memo lets a 1 KB pickle share one container under itself 40 times over,
#: which would name a tensor 2**40 ways, so the names are counted (in time
#: linear in the distinct containers) before any is made. Real state dicts hold
#: 10**3 to 10**5 tensors (a 671B mixture-of-experts model about 10**5), a few
#: times that with optimizer state; every name kept lands in the output's
#: header, where 10**6 entries of ~100 bytes already fill most of its 100 MB.
MAX_NAMES = 1_000_000
#: Characters of those names, separators included: the output header's own
#: limit (names longer in total cannot be written). Flattening does work
#: proportional to this, so it also bounds the time of deep nesting.
MAX_NAME_TEXT = MAX_HEADER_SIZE
#: Views that repeat bytes (zero strides, overlaps) may not grow the output past
#: this many times the source size (plus :data:`_EXPANSION_SLACK`).
MAX_EXPANSION = 4
_EXPANSION_SLACK = 1 << 30



@dataclass(frozen=True, slots=True)
class DroppedValue:
    """A value of the checkpoint that is not in the output, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"name": self.name, "reason": self.reason}



@dataclass(slots=True)
class Plan:
    """What one output file will hold, and what of the checkpoint it will not."""

    checkpoint: Checkpoint
    tensors: dict[str, TensorView] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    dropped: list[DroppedValue] = field(default_factory=list)
    tensors_left: list[DroppedValue] = field(default_factory=list)
    left: list[DroppedValue] = field(default_factory=list)
    not_performed: list[dict[str, object]] = field(default_factory=list)
    not_listed: int = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.tensors.values())

    def metadata(self) -> dict[str, str]:
        meta = {"format": "pt"}
        meta.update(self.values)
        meta.update(self.aliases)
        return meta


#: Dropped keys are named by a short repr (a key may be a large, shared tuple).
_KEY_REPR = reprlib.Repr()
_KEY_REPR.maxlevel, _KEY_REPR.maxtuple, _KEY_REPR.maxstring = 3, 4, 40
_KEY_REPR.maxother = _KEY_REPR.maxlong = 40


def _items(container: dict[Any, Any] | list[Any] | tuple[Any, ...]
           ) -> Iterable[tuple[object, object]]:
    return container.items() if isinstance(container, dict) else enumerate(container)


def _holders(root: object) -> set[int]:
    """ids of the containers that hold a tensor somewhere below (iterative, DAG-safe)."""
    holders: set[int] = set()
    done: set[int] = set()
    work: list[tuple[object, bool]] = [(root, False)]
    while work:
        value, expanded = work.pop()
        if not isinstance(value, (dict, list, tuple)) or id(value) in done:
            continue
        kids = list(value.values()) if isinstance(value, dict) else list(value)
        if not expanded:
            work.append((value, True))
            work.extend((k, False) for k in kids)
            continue
        done.add(id(value))
        if any(isinstance(k, (TensorView, LeftTensor)) or id(k) in holders for k in kids):
            holders.add(id(value))
    return holders


def _count_names(root: object, holders: set[int]) -> tuple[int, int]:
    """(names, characters) flattening ``root`` gives, without making any name.

    Dynamic programming over the distinct containers (by identity; the graph is
    acyclic, :func:`~tensorfile._picklevm._materialize.materialize` refuses cycles):
    a container's count is the sum of its children's, a leaf counts one name.
    Time is linear in the containers and their items however often the memo
    shares them; counts saturate at 2**64 so that numbers stay small.
    """
    cap = 1 << 64
    counts: dict[int, tuple[int, int]] = {}
    work: list[tuple[object, bool]] = [(root, False)]
    while work:
        node, expanded = work.pop()
        if id(node) in counts:
            continue
        assert isinstance(node, (dict, list, tuple))
        if not expanded:
            work.append((node, True))
            work.extend((v, False) for _, v in _items(node)
                        if id(v) in holders and id(v) not in counts)
            continue
        names = text = 0
        for k, v in _items(node):
            part = name_part(k)
            if part is None:  # dropped under its parent's name plus [repr]
                names, text = names + 1, text + len(_KEY_REPR.repr(k)) + 2
                continue
            n, t = counts[id(v)] if id(v) in holders else (1, 0)
            names, text = names + n, text + t + n * (len(part) + 1)
        counts[id(node)] = (min(names, cap), min(text, cap))
    return counts[id(root)]


def _refuse_flagged(graph: ObjectGraph) -> None:
    """The scanner called the file safe (or flagged only known tensor kinds), so the
    object stream has no other flagged node; if the two ever disagree, the stricter
    answer wins."""
    for hit in graph.flagged.values():
        if not known_kind(hit):
            raise UnsafePickleError(f"{graph.what}: {hit.describe()}")


def make_plan(ck: Checkpoint, mode: Mode) -> Plan:
    plan = Plan(ck)
    where = str(ck.source.path)
    graph = ck.graph
    if mode.salvage:
        return _salvage_plan(plan, graph, mode.key, where)
    if ck.scan is not None and ck.scan.verdict is not Verdict.SAFE and not graph.flagged:
        refuse_unless_safe(ck.scan)  # the unknown stream is not the object stream
    if mode.key is None:
        if not all(known_kind(hit) for hit in graph.flagged.values()):
            _refuse_flagged(graph)
        sel = whole(graph)
    else:
        sel = select(graph, mode.key, where)
    if graph.flagged:
        check_subtree(graph, sel, where)
    plan.left = [DroppedValue(n, why) for n, why in left_beside(graph, sel)]
    root = build(sel.node, graph.builder, graph.what)
    _flatten_root(plan, root)
    if not plan.tensors and plan.tensors_left:
        raise UnsupportedCheckpointError(
            f"{where}: nothing to convert: " + "; ".join(
                f"{d.name}: {d.reason}" for d in plan.tensors_left[:5]))
    return plan


def _salvage_plan(plan: Plan, graph: ObjectGraph, key: str | None, where: str) -> Plan:
    start = graph.root if key is None else select(graph, key, where).node
    found = salvage(graph, start, "")
    plan.tensors_left = [DroppedValue(n, why) for n, why in found.left]
    plan.not_performed, plan.not_listed = found.not_performed, found.not_listed
    if len(found.tensors) > MAX_NAMES:
        raise UnsupportedCheckpointError(
            f"{where}: {len(found.tensors):,} tensor names, over the limit of {MAX_NAMES:,}")
    _group_tensors(plan, found.tensors)
    if not plan.tensors:
        raise UnsupportedCheckpointError(f"{where}: no tensor whose storage and view are "
                                         "literal values of the pickle was found to salvage")
    return plan


def _flatten_root(plan: Plan, root: object) -> None:
    """Name the built value's tensors and plain values (see the module docstring)."""
    where = plan.checkpoint.source.path
    holders = _holders(root)
    names: list[tuple[str, TensorView]] = []
    values: dict[str, object] = {}
    if id(root) not in holders:
        # torch.save(tensor) has one name; any other root is one plain value.
        leaf = "tensor" if isinstance(root, (TensorView, LeftTensor)) else "value"
        _place(plan, names, values, leaf, root)
    else:
        count, chars = _count_names(root, holders)
        if count > MAX_NAMES or chars > MAX_NAME_TEXT:
            def shown(n: int) -> str:
                return f"{n:,}" if n < 1 << 64 else "more than 2**64"
            raise UnsupportedCheckpointError(
                f"{where}: flattening would give {shown(count)} names ({shown(chars)} characters); "
                f"the converter's limits are {MAX_NAMES:,} names and {MAX_NAME_TEXT:,} characters "
                "(containers shared through the pickle memo name their tensors once per path)")
        assert isinstance(root, (dict, list, tuple))
        _flatten(plan, root, holders, names, values)
    _group_tensors(plan, names)
    texts = JsonValues()
    for name, value in values.items():
        if name in plan.tensors or name in plan.aliases:
            raise UnsupportedCheckpointError(f"{where}: two values are named {name!r}")
        if name in ("format", ""):
            plan.dropped.append(DroppedValue(name, "name is reserved in __metadata__"))
            continue
        text, why, leaves = texts.text(name, value)
        if text is None:
            plan.dropped.append(DroppedValue(name, why))
            continue
        plan.values[name] = text
        plan.dropped.extend(DroppedValue(n, w) for n, w in leaves)


def _place(plan: Plan, names: list[tuple[str, TensorView]], values: dict[str, object],
           name: str, value: object) -> None:
    """Sort one named leaf: a tensor, a dropped value, or a plain value."""
    if isinstance(value, TensorView):
        names.append((name, value))
    elif isinstance(value, LeftTensor):
        plan.tensors_left.append(DroppedValue(name, value.reason()))
    elif isinstance(value, Unbuilt):
        plan.dropped.append(DroppedValue(name, value.reason()))
    else:
        values[name] = value


def _flatten(plan: Plan, root: dict[Any, Any] | list[Any] | tuple[Any, ...],
             holders: set[int], names: list[tuple[str, TensorView]],
             values: dict[str, object]) -> None:
    """Name every leaf below ``root`` by its dotted path, depth first in item order.

    The path is a stack of key parts, joined once per container into the
    prefix its leaves share (and only when it has a leaf), so the work and the
    memory are those of the names themselves, which :func:`_count_names`
    bounded: nothing is rebuilt per level of a deep chain. Leading empty keys
    add nothing (``{"": {"w": t}}`` names ``w``).
    """
    parts: list[str] = []
    lead = 0  # parts[:lead] are all empty
    frames: list[tuple[Iterator[tuple[object, object]], list[str]]] = [(iter(_items(root)), [])]
    while frames:
        items, prefix = frames[-1]  # prefix: [the joined path], once a leaf needs it
        for k, v in items:
            part = name_part(k)
            if part is not None and id(v) in holders:
                if part == "" and lead == len(parts):
                    lead += 1
                parts.append(part)
                assert isinstance(v, (dict, list, tuple))
                frames.append((iter(_items(v)), []))
                break
            if not prefix:
                prefix.append(".".join(parts[lead:]))
            if part is None:
                plan.dropped.append(DroppedValue(f"{prefix[0]}[{_KEY_REPR.repr(k)}]",
                                                 "key is not a str or an int of 64 bits"))
            else:
                _place(plan, names, values, f"{prefix[0]}.{part}" if prefix[0] else part, v)
        else:
            frames.pop()
            if parts:
                parts.pop()
                lead = min(lead, len(parts))


def _group_tensors(plan: Plan, names: list[tuple[str, TensorView]]) -> None:
    """Write each distinct view once; other names of the same view become aliases."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    views: dict[str, TensorView] = {}
    identities: dict[int, tuple[Any, ...]] = {}  # per view object: the memo shares them
    for name, view in names:
        if name in views:
            raise UnsupportedCheckpointError(
                f"{plan.checkpoint.source.path}: two tensors are named {name!r}")
        if name == METADATA_KEY:
            raise UnsupportedCheckpointError(f"a tensor is named {METADATA_KEY!r}, which "
                                             "safetensors reserves")
        views[name] = view
        identity = identities.get(id(view))
        if identity is None:
            identity = identities[id(view)] = view.identity
        groups.setdefault(identity, []).append(name)
    for group in groups.values():
        kept = min(group)  # the reference save_model keeps the first name in sorted order
        plan.tensors[kept] = views[kept]
        for alias in group:
            if alias != kept:
                plan.aliases[alias] = kept
    plan.tensors = dict(sorted(plan.tensors.items()))


def check_budget(plans: list[Plan]) -> None:
    source = sum(p.checkpoint.source.size for p in plans)
    total = sum(p.nbytes for p in plans)
    if total > MAX_EXPANSION * source + _EXPANSION_SLACK:
        raise UnsupportedCheckpointError(
            f"the tensors would take {total} bytes from a {source}-byte checkpoint: views with "
            "zero or overlapping strides repeat data beyond the converter's bound")

