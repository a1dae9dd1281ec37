"""Parts of a checkpoint's value graph: ``--key`` sub-trees and tensor salvage.

The converter runs a checkpoint's object stream through the scanner's machine
with :class:`GraphObserver`: the scanner's policy, not strict, remembering every
node it does not allow (an import, call, effect or persistent id). Nothing is
imported or called either way; what this module decides is which part of the
value graph the output may be built from.

``--key`` (:func:`check_subtree`)
    The selected value is reached from the root through plain dicts and
    ``OrderedDict``\\ s only (:func:`select`). It is built when every node below
    it is allowlisted **and** no node the policy flagged could have touched it
    under ``torch.load``: everything a flagged call receives (its function,
    arguments and the items, appends and ``BUILD`` state later applied to its
    result), the target and payload of a flagged effect, the id handed to a
    flagged persistent load, and everything reachable from those, is
    *exposed*: code outside the allowlist could mutate it. The sub-tree must
    share no mutable node (tuples, frozensets and imported names may be
    shared) and no storage record with the exposed set (a tensor outside that
    shares a storage with one inside could be changed in place). The rule is
    reachability, not stream order, so it also covers an object handed to a
    call before it was filled. The rest of the file is never built; the report
    names each value beside the path with what it is and why it was left.
    torch's quantized-tensor rebuild (:data:`KNOWN_KINDS`) is the one flagged
    call tolerated, inside or out: it calls nothing it is given, and the
    tensor it would make is left out.

Salvage (:func:`salvage`)
    Every ``_rebuild_tensor*`` call whose storage, offset, size, stride (and
    dtype) are literal values of the stream is a tensor, whatever surrounds it;
    each is named by its path in the graph (dict keys, list indices, and
    ``__args__``/``__state__``/``__items__`` under calls that were not
    performed). Everything the policy flagged is listed as not performed.

spec/SCANNING.md (converter section) states these rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from tensorfile._format.header import METADATA_KEY
from tensorfile._picklevm.machine import (
    Call,
    Effect,
    ExtensionRef,
    GlobalRef,
    Node,
    PDict,
    PersistentRef,
    PSet,
    children,
    is_leaf,
)
from tensorfile._picklevm.policy import (
    ORDERED_DICT,
    PARAMETER_REBUILD,
    TENSOR_REBUILDS,
    StreamPolicy,
    call_of,
)
from tensorfile._report import Finding, Verdict
from tensorfile.convert._builder import (
    UNSUPPORTED_REBUILDS,
    CheckpointBuilder,
    LeftTensor,
    TensorView,
)
from tensorfile.convert._metadata import key_part
from tensorfile.errors import (
    ConversionError,
    MalformedCheckpointError,
    UnsafePickleError,
    UnsupportedCheckpointError,
)

#: Int keys give tensor names up to this many bits (a 64-bit index at most).
_NAME_KEY_BITS: Final = 64
#: Entries of the "not performed" list kept in a report (the rest are counted).
MAX_LISTED: Final = 10_000
#: Quantization schemes, the values ``_rebuild_qtensor`` takes (torch.qscheme objects).
QSCHEMES: Final = frozenset(f"torch.{n}" for n in (
    "per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
    "per_tensor_symmetric", "per_channel_symmetric"))
#: torch's rebuild of a quantized tensor (``torch.save`` of a qint8 tensor), and
#: the qscheme values it takes: not on the allowlist (the scanner says
#: ``unknown``), but known code that makes a new tensor from its arguments,
#: compares the qscheme, reads sizes and scales, stores the hooks, and calls
#: none of its arguments or hands them to anything but torch. The converter
#: leaves each such tensor out (listed) and converts the rest, as for a
#: complex128 tensor; nothing is called. Other rebuilds in
#: :data:`~._builder.UNSUPPORTED_REBUILDS` are not in this set:
#: ``_rebuild_from_type_v2`` calls its first argument, for one.
QTENSOR: Final = "torch._utils._rebuild_qtensor"
KNOWN_KINDS: Final = frozenset({QTENSOR}) | QSCHEMES


def known_kind(hit: Flagged) -> bool:
    """Whether ``hit`` is one of :data:`KNOWN_KINDS`: its import, or a literal REDUCE of it."""
    node = hit.node
    if isinstance(node, GlobalRef):
        return node.literal and node.qualname in KNOWN_KINDS
    return isinstance(node, Call) and node.opcode == "REDUCE" and call_of(node, QTENSOR)


@dataclass(frozen=True, slots=True)
class Flagged:
    """A node the policy does not allow, and its finding."""

    node: Node
    finding: Finding

    def describe(self) -> str:
        """``REDUCE argparse.Namespace at byte 120 (unknown: ...)``."""
        f = self.finding
        name = f" {f.global_name}" if f.global_name else ""
        at = f" at byte {f.offset}" if f.offset is not None else ""
        return f"{f.opcode}{name}{at} ({f.verdict.value}: {f.reason})"


#: Flagged nodes kept per stream. A real checkpoint has a few (an omegaconf
#: config: hundreds); a hostile stream can flag one node every 4 bytes, and each
#: kept costs a few hundred bytes. Past this many, ``--key`` refuses (it cannot
#: reason about nodes it did not keep) and salvage only counts them.
MAX_FLAGGED: Final = 100_000


class GraphObserver:
    """The scanner's policy, not strict: every node passes, the disallowed ones are kept
    (up to :data:`MAX_FLAGGED`; ``overflow`` counts the rest)."""

    def __init__(self, *, key_pids: bool = False, limit: int = MAX_FLAGGED) -> None:
        self.policy = StreamPolicy(strict=False, key_pids=key_pids, max_findings=limit)
        self.flagged: dict[int, Flagged] = {}
        self.overflow = 0

    def observe(self, node: Node) -> None:
        """Classify ``node``; remember it when the policy records a finding."""
        policy = self.policy
        kept, dropped = len(policy.findings), policy.dropped
        policy.observe(node)
        if len(policy.findings) != kept:
            self.flagged.setdefault(id(node), Flagged(node, policy.findings[-1]))
        elif policy.dropped != dropped:
            self.overflow += 1


@dataclass(slots=True)
class ObjectGraph:
    """A checkpoint's object stream, run but not built: its value graph and flagged nodes."""

    root: object
    flagged: dict[int, Flagged]
    builder: CheckpointBuilder
    what: str
    overflow: int = 0  # flagged nodes past MAX_FLAGGED, not kept


# ---------------------------------------------------------------------------
# Walking the graph by name
# ---------------------------------------------------------------------------

def name_part(k: object) -> str | None:
    """The name part a dict key or list index gives (None: the value gets no name).

    Ints beyond 64 bits give none: a tensor name is text of bounded length.
    """
    return key_part(k, _NAME_KEY_BITS)


def _hashable_literal(k: object) -> bool:
    return k is None or isinstance(k, (str, int, float, bytes))


def _dict_items(pairs: list[tuple[object, object]]) -> list[tuple[object, object]]:
    """Pairs as a dict keeps them: a later literal key replaces an equal earlier one."""
    last: dict[object, int] = {}
    for i, (k, _) in enumerate(pairs):
        if _hashable_literal(k):
            last[k] = i
    return [(k, v) for i, (k, v) in enumerate(pairs)
            if not _hashable_literal(k) or last[k] == i]


def _setitems(call: Call) -> list[tuple[object, object]]:
    return [(k, v) for eff in call.effects if eff.opcode in ("SETITEM", "SETITEMS")
            for k, v in zip(eff.payload[::2], eff.payload[1::2], strict=True)]


def _is_dict(node: object, flagged: dict[int, Flagged]) -> bool:
    """A plain dict, or an allowlisted ``OrderedDict()`` (both hold only what SETITEMS put)."""
    return isinstance(node, PDict) or (
        call_of(node, ORDERED_DICT) and id(node) not in flagged)


def _pairs(node: object) -> list[tuple[object, object]]:
    if isinstance(node, PDict):
        return _dict_items(node.items)
    assert isinstance(node, Call)
    return _dict_items(_setitems(node))


def edges(node: object) -> Iterator[tuple[str | None, object]]:
    """``(name part, child)`` for each value below ``node``; ``None`` parts (dict keys,
    a call's function) give the child no name of its own."""
    if isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield str(i), v
    elif isinstance(node, PDict):
        for k, v in _dict_items(node.items):
            yield None, k
            yield name_part(k), v
    elif isinstance(node, PSet):
        for i, v in enumerate(node.items):
            yield str(i), v
    elif isinstance(node, Call):
        if not isinstance(node.func, GlobalRef):
            yield None, node.func
        if call_of(node, PARAMETER_REBUILD) and isinstance(node.args, tuple) and node.args:
            yield "", node.args[0]  # a parameter is its tensor, under the same name
            yield "__args__", node.args[1:]
        elif node.args != ():
            yield "__args__", node.args
        if node.kwargs is not None:
            yield "__kwargs__", node.kwargs
        for k, v in _dict_items(_setitems(node)):
            yield None, k
            yield name_part(k), v
        appended = 0
        for eff in node.effects:
            if eff.opcode in ("APPEND", "APPENDS", "ADDITEMS"):
                for v in eff.payload:
                    yield f"__items__.{appended}", v
                    appended += 1
            elif eff.opcode == "BUILD":
                yield "__state__", eff.payload[0]
    elif isinstance(node, PersistentRef):
        yield "__pid__", node.pid


def _join(prefix: str, part: str) -> str:
    if not part:
        return prefix
    return f"{prefix}.{part}" if prefix else part


def _reach(starts: list[tuple[object, str]]) -> dict[int, str]:
    """Every node reachable from ``starts`` -> the first name it is reached by (BFS)."""
    seen: dict[int, str] = {}
    queue = deque(starts)
    while queue:
        node, name = queue.popleft()
        if is_leaf(node) or id(node) in seen:
            continue
        seen[id(node)] = name
        for part, child in edges(node):
            if not is_leaf(child) and id(child) not in seen:
                queue.append((child, _join(name, part) if part is not None else name))
    return seen


def _nodes_below(start: object) -> list[object]:
    """``start`` and every node below it, each once (the same traversal as materialize)."""
    out: list[object] = []
    seen: set[int] = set()
    work = [start]
    while work:
        node = work.pop()
        if is_leaf(node) or id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        work.extend(children(node))
    return out


def _storage_key(ref: PersistentRef) -> str | None:
    pid = ref.pid
    if isinstance(pid, tuple) and len(pid) >= 3 and isinstance(pid[2], str):
        return pid[2]
    if isinstance(pid, str):
        return pid
    return None


# ---------------------------------------------------------------------------
# --key: select a sub-tree and prove it independent of the rest
# ---------------------------------------------------------------------------

def top_keys(graph: ObjectGraph) -> list[str]:
    """The root dict's str keys (for messages)."""
    root = graph.root
    if not _is_dict(root, graph.flagged):
        return []
    return sorted(k for k, _ in _pairs(root) if isinstance(k, str))


_MISSING: Final = object()


def _lookup(node: object, part: str, flagged: dict[int, Flagged]) -> object:
    """``node[part]`` when ``node`` is a dict of the graph holding that str key, else
    :data:`_MISSING`."""
    if not _is_dict(node, flagged):
        return _MISSING
    found: object = _MISSING
    for k, v in _pairs(node):
        if isinstance(k, str) and k == part:
            found = v
    return found


@dataclass(slots=True)
class Selection:
    """The value ``key`` names and the containers on the way to it (root first)."""

    node: object
    path: list[tuple[object, str]]  # (container, the key taken in it)
    key: str


def whole(graph: ObjectGraph) -> Selection:
    """The root as a selection (no ``--key``)."""
    return Selection(graph.root, [], "")


def select(graph: ObjectGraph, key: str, where: str) -> Selection:
    """The value ``key`` names: an exact top-level key first, then a dotted path.

    Only plain dicts and allowlisted ``OrderedDict``\\ s are looked into, and
    only when every key they hold is a literal: a key made by a call could
    compare equal to the name and replace its value under ``torch.load``.
    """
    flagged = graph.flagged
    exact = _lookup(graph.root, key, flagged)
    steps = [key] if exact is not _MISSING else key.split(".")
    node, path = graph.root, []
    for part in steps:
        found = _lookup(node, part, flagged)
        if found is _MISSING:
            keys = top_keys(graph)
            raise ConversionError(f"{where}: no key {key!r} in the checkpoint (top-level keys: "
                                  f"{', '.join(keys[:20]) or 'none'})")
        odd = [k for k, _ in _pairs(node) if not (is_leaf(k) or isinstance(k, tuple))]
        if odd:
            raise UnsafePickleError(
                f"{where}: the dict holding {part!r} has a key built by a call, which could "
                f"replace that entry under torch.load: {_what(odd[0], flagged)}")
        path.append((node, part))
        node = found
    return Selection(node, path, key)


def _what(node: object, flagged: dict[int, Flagged]) -> str:
    """Short description: the flagged node's finding, or what the value is."""
    hit = flagged.get(id(node))
    if hit is not None:
        return hit.describe()
    return held(node)


def held(node: object) -> str:
    """What a value is, in a few words (``argparse.Namespace``, ``dict``, ``tensor``)."""
    if isinstance(node, Call):
        func = node.func
        if call_of(node, *TENSOR_REBUILDS, PARAMETER_REBUILD):
            return "tensor"
        return func.qualname if isinstance(func, GlobalRef) else "a computed call"
    if isinstance(node, PDict):
        return "dict"
    if isinstance(node, PSet):
        return "frozenset" if node.frozen else "set"
    if isinstance(node, GlobalRef):
        return node.qualname
    if isinstance(node, PersistentRef):
        return "persistent id"
    if isinstance(node, ExtensionRef):
        return "copyreg extension"
    return type(node).__name__


def _exposed(graph: ObjectGraph) -> tuple[dict[int, Flagged], dict[str, Flagged]]:
    """Nodes and storage keys a flagged node could reach -> the flagged node (first found)."""
    nodes: dict[int, Flagged] = {}
    keys: dict[str, Flagged] = {}
    for hit in graph.flagged.values():
        if known_kind(hit):
            continue  # torch's own rebuild: changes nothing it is given
        node = hit.node
        if isinstance(node, Call):
            starts = list(children(node))
        elif isinstance(node, Effect):
            starts = [node.target, *node.payload]
        elif isinstance(node, PersistentRef):
            starts = [node.pid]
        else:  # an import or a copyreg lookup receives no value of the stream
            continue
        work = [s for s in starts if not is_leaf(s)]
        while work:
            value = work.pop()
            if id(value) in nodes:
                continue
            nodes[id(value)] = hit
            if isinstance(value, PersistentRef):
                key = _storage_key(value)
                if key is not None:
                    keys.setdefault(key, hit)
            work.extend(c for c in children(value) if not is_leaf(c) and id(c) not in nodes)
    return nodes, keys


def _mutable(node: object) -> bool:
    """Whether code holding ``node`` could change it (tuples, frozensets and imported
    names cannot; a storage is compared by its key)."""
    if isinstance(node, (tuple, GlobalRef, ExtensionRef)):
        return False
    return not (isinstance(node, PSet) and node.frozen)


def check_subtree(graph: ObjectGraph, sel: Selection, where: str) -> None:
    """Refuse unless the selected value is rebuilt by allowlisted operations only (or
    :data:`KNOWN_KINDS`, left out when built) and nothing outside the allowlist
    could have changed it (see the module docstring)."""
    flagged = graph.flagged
    if graph.overflow:
        raise UnsupportedCheckpointError(
            f"{where}: more than {MAX_FLAGGED:,} imports and calls outside the allowlist; "
            "the converter keeps no more, so it cannot show that none reaches the value")
    below = _nodes_below(sel.node)
    inside = [n for n in below if id(n) in flagged and not known_kind(flagged[id(n)])]
    if inside:
        names = _reach([(sel.node, sel.key)])
        hit = flagged[id(inside[0])]
        name = names.get(id(hit.node), sel.key)
        why = UNSUPPORTED_REBUILDS.get(hit.finding.global_name or "")
        message = (f"{where}: {name}: {hit.describe()}; --key converts a value only when "
                   "allowlisted operations rebuild all of it")
        if why is not None and hit.finding.verdict is Verdict.UNKNOWN:
            raise UnsupportedCheckpointError(f"{message} ({why})")
        raise UnsafePickleError(message)
    if not flagged:
        return
    nodes, keys = _exposed(graph)
    for node in below:
        if not _mutable(node):
            continue  # an immutable node (tuple, name) may be shared; its items are checked
        culprit = nodes.get(id(node))
        if culprit is None and isinstance(node, PersistentRef):
            key = _storage_key(node)
            culprit = keys.get(key) if key is not None else None
        if culprit is not None:
            raise UnsafePickleError(
                f"{where}: {sel.key!r} shares a value or a storage with what "
                f"{culprit.describe()} receives; under torch.load that code could change it, so "
                "it is not converted")


def left_beside(graph: ObjectGraph, sel: Selection) -> list[tuple[str, str]]:
    """``(name, what and why)`` for every value beside the path to the selection."""
    flagged = graph.flagged
    below: dict[int, Flagged | None] = {}
    out: list[tuple[str, str]] = []
    prefix = ""
    for container, taken in sel.path:
        for k, v in _pairs(container):
            part = name_part(k)
            if isinstance(k, str) and k == taken:
                continue
            name = _join(prefix, part) if part is not None else f"{prefix}[{held(k)} key]"
            out.append((name, _why_left(v, flagged, below, sel.key)))
        prefix = _join(prefix, taken)
    return out


def _why_left(value: object, flagged: dict[int, Flagged], below: dict[int, Flagged | None],
              key: str) -> str:
    what = held(value)
    if is_leaf(value):
        return f"{what} (outside --key {key})"
    hit = flagged.get(id(value))
    if hit is not None:
        return f"{what} ({hit.finding.verdict.value}: {hit.finding.reason})"
    inner = _flagged_below(value, flagged, below)
    if inner is not None:
        return f"{what} (holds {inner.describe()})"
    return f"{what} (outside --key {key})"


def _flagged_below(start: object, flagged: dict[int, Flagged],
                   memo: dict[int, Flagged | None]) -> Flagged | None:
    """The first flagged node at or below ``start`` (dynamic programming over the
    graph, ``memo`` shared between calls, so each node is visited once in all)."""
    work: list[tuple[object, bool]] = [(start, False)]
    active: set[int] = set()  # on the current path: a cycle (BUILD state holding its
    while work:               # own object) is not followed twice
        node, expanded = work.pop()
        if is_leaf(node) or id(node) in memo:
            continue
        kids = [c for c in children(node) if not is_leaf(c)]
        if not expanded:
            if id(node) in active:
                continue
            active.add(id(node))
            work.append((node, True))
            work.extend((c, False) for c in kids if id(c) not in memo)
            continue
        hit: Flagged | None = flagged.get(id(node))
        for c in kids:
            if hit is not None:
                break
            hit = memo.get(id(c))
        memo[id(node)] = hit
    return None if is_leaf(start) else memo.get(id(start))


# ---------------------------------------------------------------------------
# Salvage: every fully determined tensor, from any graph
# ---------------------------------------------------------------------------

@dataclass(slots=True)
class Salvaged:
    """What :func:`salvage` found."""

    tensors: list[tuple[str, TensorView]]
    left: list[tuple[str, str]]  # tensors that could not be determined, and why
    not_performed: list[dict[str, object]]
    not_listed: int = 0


def _literal(value: object, builder: CheckpointBuilder, depth: int = 0) -> object:
    """A persistent id's or a view's parts: literals, globals (storage types, dtypes)
    and tuples of them, two levels at most (torch's legacy pid nests one tuple)."""
    if isinstance(value, GlobalRef):
        if not value.literal:
            raise MalformedCheckpointError(f"computed global at byte {value.offset}")
        return builder.on_global(value)
    if isinstance(value, tuple):
        if depth >= 2:
            raise MalformedCheckpointError("tuples nested deeper than a torch storage id")
        return tuple(_literal(v, builder, depth + 1) for v in value)
    if not is_leaf(value):
        raise MalformedCheckpointError(f"{held(value)} where a literal value is expected")
    return value


def _salvage_tensor(call: Call, builder: CheckpointBuilder, flagged: dict[int, Flagged]
                    ) -> TensorView | LeftTensor:
    args = call.args
    func = call.func
    assert isinstance(func, GlobalRef)
    if not (isinstance(args, tuple) and len(args) >= 4):
        raise MalformedCheckpointError("arguments are not (storage, offset, size, stride, ...)")
    ref = args[0]
    if not isinstance(ref, PersistentRef) or id(ref) in flagged:
        raise MalformedCheckpointError(
            f"its storage is {held(ref)}, not a torch storage persistent id")
    storage = builder.on_persistent(ref, _literal(ref.pid, builder))
    rest = [_literal(a, builder) for a in args[1:4]]
    dtype = None
    if func.name.endswith("_v3"):
        dtype = _literal(args[6], builder) if len(args) > 6 else None
    return builder.tensor(func.qualname, (storage, *rest, None, None, dtype), call.offset)


def salvage(graph: ObjectGraph, start: object, prefix: str) -> Salvaged:
    """Every tensor below ``start`` whose storage and view are literal (see module docstring)."""
    flagged, builder = graph.flagged, graph.builder
    result = Salvaged([], [], [])
    used: set[str] = {METADATA_KEY}  # safetensors reserves it: such a tensor gets #2
    suffix: dict[str, int] = {}  # next #n to try per repeated name
    seen: set[int] = set()
    names: dict[int, str] = {}
    queue: deque[tuple[object, str]] = deque([(start, prefix)])

    def unique(name: str) -> str:
        base = name = name or "tensor"
        while name in used:
            n = suffix.get(base, 1) + 1
            suffix[base] = n
            name = f"{base}#{n}"
        used.add(name)
        return name

    while queue:
        node, name = queue.popleft()
        if is_leaf(node):
            continue
        tensor: TensorView | LeftTensor | None = None
        if isinstance(node, Call) and call_of(node, *TENSOR_REBUILDS):
            try:
                tensor = _salvage_tensor(node, builder, flagged)
            except (MalformedCheckpointError, UnsupportedCheckpointError) as exc:
                tensor = LeftTensor(f"not determined: {exc}", node.offset)
        elif isinstance(node, PersistentRef) and isinstance(node.pid, str):
            try:  # torch < 0.4's tar format names rebuilt tensors by key
                found = builder.on_persistent(node, node.pid)
            except (MalformedCheckpointError, UnsupportedCheckpointError):
                found = None
            if isinstance(found, TensorView):
                tensor = found
        if tensor is not None:
            # One name per place the tensor sits (tied weights become aliases);
            # its other arguments (hooks, metadata) are walked like any value.
            if isinstance(tensor, TensorView):
                result.tensors.append((unique(name), tensor))
            else:
                result.left.append((unique(name), tensor.reason()))
        if id(node) in seen:
            continue
        seen.add(id(node))
        names[id(node)] = name
        for part, child in edges(node):
            if not is_leaf(child):
                queue.append((child, _join(name, part) if part is not None else name))
    result.not_listed = graph.overflow
    for hit in graph.flagged.values():
        if len(result.not_performed) >= MAX_LISTED:
            result.not_listed += 1
            continue
        f = hit.finding
        result.not_performed.append({
            "opcode": f.opcode, "global": f.global_name, "offset": f.offset,
            "verdict": f.verdict.value, "reason": f.reason, "at": names.get(id(hit.node)),
        })
    return result
