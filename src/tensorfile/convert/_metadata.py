"""Plain values of a checkpoint as JSON text for ``__metadata__``, leaf by leaf.

A training checkpoint's plain values (step counters, a ``config`` dict of 75
entries, ...) go to the output's ``__metadata__`` as JSON text under their
dotted name. A value is kept with whatever of it is plain data: a leaf that is
not (a ``torch.device``, a numpy scalar, bytes, a set) is left out alone and
named in the report (``config.device``), not its whole container. In a dict
the entry goes; in a list or tuple the item becomes ``null``, so that the
other items keep their positions.

Floats that JSON cannot spell (RFC 8259 has no infinity or NaN) are written
as the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"``: Python's
``float()`` reads each back, and they are the tokens Python's own ``json``
module would emit outside the standard. spec/SCANNING.md (converter section)
documents this.

Work is bounded however the pickle memo shares values: a value's JSON length
is first bounded from below by dynamic programming over its distinct
containers (every item costs at least two characters), and only a value whose
bound fits :data:`MAX_VALUE_JSON` is expanded and serialized, until the texts
kept fill :data:`~tensorfile._format.header.MAX_HEADER_SIZE` (where they go).
"""

from __future__ import annotations

import json
import math
from typing import Final

from tensorfile._format.header import MAX_HEADER_SIZE

#: Plain values longer than this as JSON are dropped rather than put in the header.
MAX_VALUE_JSON: Final = 64 << 10
#: How non-finite floats are written (documented in spec/SCANNING.md).
NONFINITE: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}
NAN_TEXT: Final = "NaN"
#: Ints (values and keys) kept in JSON have at most this many bits.
MAX_INT_BITS: Final = 1024

#: An estimate for a leaf that is left out (it still costs its separator).
_LEFT_OUT: Final = 0
_Container = dict[object, object] | list[object] | tuple[object, ...]


def leaf_problem(v: object) -> str | None:
    """Why the non-container ``v`` is not plain JSON data (None when it is).

    Values the converter's builder made but does not keep (``Unbuilt``
    markers) carry their own ``reason()``.
    """
    if v is None or isinstance(v, (bool, float)):
        return None
    if isinstance(v, str):
        if len(v) > MAX_VALUE_JSON:
            return f"text longer than {MAX_VALUE_JSON} characters"
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "text holds lone surrogates (not UTF-8)"
        return None
    if isinstance(v, int):
        return (None if v.bit_length() <= MAX_INT_BITS
                else f"an int of more than {MAX_INT_BITS} bits")
    reason = getattr(v, "reason", None)
    if callable(reason):
        why = reason()
        if isinstance(why, str):
            return why
    named = getattr(v, "qualname", None)  # a global used as a value (a dtype, a class)
    if isinstance(named, str):
        return f"{named} names a Python object, not plain data"
    return f"a {type(v).__name__} value is not plain JSON data"


def _leaf_size(v: object) -> int:
    if isinstance(v, str):
        return len(v) + 2
    if isinstance(v, bool) or v is None:
        return 4
    if isinstance(v, int):
        return v.bit_length() * 3 // 10 + 1  # decimal digits, at least
    if isinstance(v, float):
        return 3
    return _LEFT_OUT


def key_part(k: object, max_bits: int = MAX_INT_BITS) -> str | None:
    """The text a dict key (or list index) gives, as a JSON object key or a
    name part; None when it gives none: not a str or int (bools are not
    keys), or an int of more than ``max_bits`` (its decimal text grows
    without bound). JSON writes an int key as its decimal text.
    """
    if isinstance(k, str):
        return k
    if isinstance(k, int) and not isinstance(k, bool) and k.bit_length() <= max_bits:
        return str(k)
    return None


def _key_size(k: object) -> int:
    if isinstance(k, str):
        return len(k)
    if isinstance(k, int) and not isinstance(k, bool):
        return k.bit_length() * 3 // 10 + 1
    return 0


def _float(v: float) -> float | str:
    if math.isnan(v):
        return NAN_TEXT
    return NONFINITE.get(v, v)


class JsonValues:
    """Turns the plain values of one checkpoint into ``__metadata__`` texts (see module doc)."""

    def __init__(self) -> None:
        # id -> JSON length bound; _held keeps each measured container alive so
        # that its id cannot be reused by another while the memo holds it.
        self._sizes: dict[int, int] = {}
        self._held: list[object] = []
        self.kept = 0

    def _size(self, value: object) -> int:
        if not isinstance(value, (dict, list, tuple)):
            return _leaf_size(value) if leaf_problem(value) is None else _LEFT_OUT
        cap = MAX_VALUE_JSON + 1
        work: list[tuple[object, bool]] = [(value, False)]
        while work:
            node, expanded = work.pop()
            if id(node) in self._sizes:
                continue
            assert isinstance(node, (dict, list, tuple))
            kids = list(node.values()) if isinstance(node, dict) else list(node)
            if not expanded:
                work.append((node, True))
                work.extend((k, False) for k in kids
                            if isinstance(k, (dict, list, tuple)) and id(k) not in self._sizes)
                continue
            size = 2
            if isinstance(node, dict):
                size += sum(_key_size(k) for k in node) + 4 * len(node)
            for k in kids:
                n = self._sizes[id(k)] if isinstance(k, (dict, list, tuple)) else (
                    _leaf_size(k) if leaf_problem(k) is None else _LEFT_OUT)
                size = min(size + n + 2, cap)
            self._sizes[id(node)] = size
            self._held.append(node)
        return self._sizes[id(value)]

    def text(self, name: str, value: object) -> tuple[str | None, str, list[tuple[str, str]]]:
        """``(JSON text, '', leaves left out)``, or ``(None, why, [])`` when nothing is kept.

        Each leaf left out is ``(dotted name, why)``.
        """
        if not isinstance(value, (dict, list, tuple)):
            why = leaf_problem(value)
            if why is not None:
                return None, why, []
        size = self._size(value)
        if size > MAX_VALUE_JSON:
            return None, f"JSON text longer than {MAX_VALUE_JSON} bytes", []
        if self.kept + size > MAX_HEADER_SIZE:
            return None, f"the values kept already fill the header's {MAX_HEADER_SIZE} bytes", []
        left: list[tuple[str, str]] = []
        plain = _plain(name, value, left)
        try:
            text = json.dumps(plain, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            return None, f"not plain JSON data ({exc})", []
        if len(text) > MAX_VALUE_JSON:
            return None, f"JSON text longer than {MAX_VALUE_JSON} bytes", []
        self.kept += len(text)
        return text, "", left


def _plain(name: str, value: object, left: list[tuple[str, str]]) -> object:
    """A JSON-ready copy of ``value`` without its non-plain leaves (listed in ``left``).

    Iterative: the caller bounded the expanded size, not its depth.
    """
    if not isinstance(value, (dict, list, tuple)):
        return _float(value) if isinstance(value, float) else value
    root: list[object] = [None]
    # (container, its name, where to store the copy: (holder, index or key))
    work: list[tuple[_Container, str, list[object] | dict[str, object], object]] = [
        (value, name, root, 0)]
    while work:
        node, where, holder, slot = work.pop()
        out: list[object] | dict[str, object]
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                part = key_part(k)
                sub = f"{where}.{part}" if part is not None else f"{where}[{type(k).__name__} key]"
                if part is None:
                    left.append((sub, "key is not a str or an int"))
                elif part in out:
                    left.append((sub, "key collides with another key of this dict as JSON text"))
                else:
                    _put(v, sub, out, part, work, left, dict_entry=True)
        else:
            out = [None] * len(node)
            for i, v in enumerate(node):
                _put(v, f"{where}.{i}", out, i, work, left, dict_entry=False)
        if isinstance(holder, dict):
            assert isinstance(slot, str)
            holder[slot] = out
        else:
            assert isinstance(slot, int)
            holder[slot] = out
    return root[0]


def _put(v: object, sub: str, out: list[object] | dict[str, object], slot: object,
         work: list[tuple[_Container, str, list[object] | dict[str, object], object]],
         left: list[tuple[str, str]], *, dict_entry: bool) -> None:
    if isinstance(v, (dict, list, tuple)):
        if isinstance(out, dict):
            out[str(slot)] = None  # placeholder keeps the key order
        work.append((v, sub, out, slot))
        return
    why = leaf_problem(v)
    if why is not None:
        left.append((sub, why))
        if not dict_entry:
            assert isinstance(out, list) and isinstance(slot, int)
            out[slot] = None
        return
    value = _float(v) if isinstance(v, float) else v
    if isinstance(out, dict):
        out[str(slot)] = value
    else:
        assert isinstance(slot, int)
        out[slot] = value
