"""Plain values as ``__metadata__`` JSON, leaf by leaf (pickles/_metadata.py).

A property test holds :class:`JsonValues` to a recursive reference on random
nested values mixing plain leaves, non-finite floats and values that are not
plain data: the text parses back to the reference's pruned value, and exactly
the non-plain leaves are named, by dotted path.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfile.convert._builder import Unbuilt
from tensorfile.convert._metadata import JsonValues

NOT_PLAIN = st.sampled_from([Unbuilt("torch.device", 7), b"\x00", frozenset({1}), 1j,
                             Unbuilt("numpy.ndarray", 9)])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                   NOT_PLAIN)
KEYS = st.one_of(st.text(max_size=6), st.integers(-5, 5))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25)


def reference(name: str, v: Any, left: list[str]) -> Any:
    """The rule, recursively: dict entries go, list items become None."""
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        for k, x in v.items():
            sub = f"{name}.{k}"
            if str(k) in out:  # 1 and "1" are one JSON key
                left.append(sub)
                continue
            if not _plain_leaf(x) and not isinstance(x, (dict, list, tuple)):
                left.append(sub)
                continue
            out[str(k)] = reference(sub, x, left)
        return out
    if isinstance(v, (list, tuple)):
        items = []
        for i, x in enumerate(v):
            if not _plain_leaf(x) and not isinstance(x, (dict, list, tuple)):
                left.append(f"{name}.{i}")
                items.append(None)
            else:
                items.append(reference(f"{name}.{i}", x, left))
        return items
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _plain_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (bool, int, float, str))


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_each_non_plain_leaf_is_left_out_alone(value: Any) -> None:
    left: list[str] = []
    expected = reference("v", value, left)
    text, why, dropped = JsonValues().text("v", value)
    if not isinstance(value, (dict, list, tuple)) and not _plain_leaf(value):
        assert text is None and why and dropped == []
        return
    assert text is not None, why
    assert json.loads(text) == expected
    assert sorted(n for n, _ in dropped) == sorted(left)
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict


def test_reasons_name_what_was_left() -> None:
    text, _, dropped = JsonValues().text("config", {"device": Unbuilt("torch.device", 12),
                                                    "lr": 0.1, "blob": b"x"})
    assert json.loads(text or "") == {"lr": 0.1}
    reasons = dict(dropped)
    assert "torch.device" in reasons["config.device"]
    assert "bytes" in reasons["config.blob"]
