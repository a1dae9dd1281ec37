"""How the converter names what it flattens, and how it counts names first.

A checkpoint's containers may be shared through the pickle memo, so the
converter counts the names a flattening would give (dynamic programming over
the distinct containers) before making any. These tests hold the count and the
iterative flattening to a naive recursive reference on random graphs with
shared containers, odd keys (empty, int, tuple, huge int) and deep chains,
and check that the bounds on hashing dict keys leave honest oddities alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch_pickle_kit as kit  # on sys.path through conftest.py
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tensorfile._format.dtypes import DTYPES
from tensorfile._format.header import MAX_HEADER_SIZE
from tensorfile.convert._builder import Storage, TensorView, Unbuilt, check_view
from tensorfile.convert._flatten import _KEY_REPR, Plan, _count_names, _flatten, _holders
from tensorfile.convert._metadata import MAX_VALUE_JSON, JsonValues
from tensorfile.errors import MalformedCheckpointError, UnsupportedCheckpointError
from tensorfile.pickles.convert import convert

STORAGE = Storage("0", bytes(64), 0, 64, DTYPES["F32"], False)
TENSORS = [check_view(STORAGE, DTYPES["F32"], i, (2,), (1,), 0) for i in range(3)]


def reference(root: Any) -> tuple[list[tuple[str, object]], list[str]]:
    """The naming rule written recursively: (named leaves, dropped names), in item order."""
    leaves: list[tuple[str, object]] = []
    dropped: list[str] = []

    def holds(v: Any) -> bool:
        if isinstance(v, TensorView):
            return True
        items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else []
        return any(holds(x) for x in items)

    def walk(prefix: str, v: Any) -> None:
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            if isinstance(k, str) or (isinstance(k, int) and k.bit_length() <= 64):
                name = f"{prefix}.{k}" if prefix else str(k)
                if isinstance(x, (dict, list, tuple)) and holds(x):
                    walk(name, x)
                else:
                    leaves.append((name, x))
            else:
                dropped.append(f"{prefix}[{_KEY_REPR.repr(k)}]")

    walk("", root)
    return leaves, dropped


BAD_KEY = "key is not a str or an int of 64 bits"


def flatten(root: Any) -> tuple[list[str], list[str], tuple[int, int]]:
    """The converter's flattening of ``root`` (leaf names, dropped-key names) and its count."""
    holders = _holders(root)
    plan = Plan(checkpoint=None)  # type: ignore[arg-type]  (only its lists are used)
    names: list[tuple[str, TensorView]] = []
    values: dict[str, object] = {}
    _flatten(plan, root, holders, names, values)
    leaves = [n for n, _ in names] + list(values)
    leaves += [d.name for d in plan.dropped if d.reason != BAD_KEY]  # Unbuilt values
    return leaves, [d.name for d in plan.dropped if d.reason == BAD_KEY], _count_names(root, holders)


KEYS = st.one_of(st.sampled_from(["", "a", "b", "layer", ".x"]), st.integers(-3, 12),
                 st.just(2**70), st.just(("tuple", "key")))
LEAVES = st.one_of(st.sampled_from(TENSORS), st.integers(), st.text(max_size=3), st.none(),
                   st.just(Unbuilt("numpy.ndarray", 7)))


@st.composite
def graphs(draw: st.DrawFn) -> Any:
    """A dict at the root over a DAG: later containers may reuse earlier ones (the memo)."""
    pool: list[Any] = []
    for _ in range(draw(st.integers(1, 8))):
        kids = draw(st.lists(st.one_of(LEAVES, st.sampled_from(pool) if pool else LEAVES),
                             max_size=4))
        if draw(st.booleans()):
            keys = draw(st.lists(KEYS, min_size=len(kids), max_size=len(kids), unique=True))
            pool.append(dict(zip(keys, kids, strict=True)))
        else:
            pool.append(kids)
    return {"root": pool[-1], "t": TENSORS[0]}


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_flattening_matches_the_recursive_rule_and_the_count(root: Any) -> None:
    want_leaves, want_bad = reference(root)
    assume(len({n for n, _ in want_leaves}) == len(want_leaves))  # ("": {"x"}) and "x" clash
    leaves, bad_keys, (count, chars) = flatten(root)
    assert sorted(leaves) == sorted(n for n, _ in want_leaves)
    assert bad_keys == want_bad
    # The count is exact in names and bounds the characters from above.
    assert count == len(want_leaves) + len(want_bad)
    assert chars >= sum(len(n) for n, _ in want_leaves)


def test_leading_empty_keys_add_nothing_and_inner_ones_add_a_dot() -> None:
    root = {"": {"": {"w": TENSORS[0], "": {"v": TENSORS[1]}}}, "x": {"": TENSORS[2]}}
    leaves, _, (count, _) = flatten(root)
    assert sorted(leaves) == ["v", "w", "x."]
    assert count == 3


def test_shared_containers_are_counted_not_walked() -> None:
    """2**40 paths to one tensor through 40 shared dicts are counted exactly; past
    2**64 the count saturates (numbers stay machine-sized)."""
    node: Any = {"w": TENSORS[0]}
    for depth in range(1, 71):
        node = {"a": node, "b": node}
        if depth == 40:
            count, chars = _count_names(node, _holders(node))
            assert count == 2**40
            assert chars == 2**40 * 82  # "a.b.(...).w" is 81 characters; one more is counted
    assert _count_names(node, _holders(node)) == (2**64, 2**64)


def test_deep_chain_names_cost_their_length() -> None:
    """A 50,000-deep chain holding a tensor at every level flattens without
    rebuilding its prefix per level (the names themselves are 2.5e9 characters
    in total, so this only counts them)."""
    node: Any = {"t": TENSORS[0]}
    for _ in range(50_000):
        node = {"a": node, "t": TENSORS[1]}
    count, chars = _count_names(node, _holders(node))
    assert count == 50_001
    assert chars > 50_000**2


def _checkpoint(tmp_path: Path, extra: bytes) -> Path:
    """{"w": tensor, ...extra SETITEM pairs} as a torch zip, assembled by hand."""
    body = kit.EMPTY_DICT + kit.text("w") + kit.tensor_v2(kit.storage("0"), 0, [4], [1]) + b"s"
    src = tmp_path / "in.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body + extra), {"0": bytes(16)}).zip_bytes())
    return src


def test_tuple_keys_and_a_few_equal_hashes_still_convert(tmp_path: Path) -> None:
    """The hashing bounds leave honest oddities alone: a tuple key is dropped under
    a short repr, and 64 distinct ints with one hash build as a plain value."""
    same = b"".join(kit.integer(i * (2**61 - 1)) + kit.NONE for i in range(1, 65))
    extra = (kit.tup([kit.integer(1), kit.integer(2)]) + kit.integer(3) + b"s"
             + kit.text("x") + kit.EMPTY_DICT + kit.MARK + same + kit.SETITEMS + b"s")
    report = convert(_checkpoint(tmp_path, extra), tmp_path / "out.safetensors")
    assert report.tensors == ["w"]
    assert [d.name for d in report.dropped] == ["[(1, 2)]"]
    assert report.values == ["x"]


ORDERED_DICT = kit.glob("collections", "OrderedDict") + kit.EMPTY_TUPLE + kit.REDUCE


@pytest.mark.parametrize("container", [kit.EMPTY_DICT, ORDERED_DICT], ids=["dict", "OrderedDict"])
def test_a_65th_key_with_the_same_hash_is_refused(tmp_path: Path, container: bytes) -> None:
    same = b"".join(kit.integer(i * (2**61 - 1)) + kit.NONE for i in range(1, 66))
    extra = kit.text("x") + container + kit.MARK + same + kit.SETITEMS + b"s"
    # The scan stops it first now (pickle.load would take quadratic time too).
    with pytest.raises((UnsupportedCheckpointError, MalformedCheckpointError),
                       match="65 keys, not all equal, share one hash"):
        convert(_checkpoint(tmp_path, extra), tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_plain_values_kept_up_to_their_json_length() -> None:
    """The size bound is on the JSON text, never on an estimate above it: 5,000
    short floats (35 KB of JSON) are kept; 30,000 ints (90 KB) are not, nor is a
    value holding a Python object, nor (once the header's budget is used up)
    anything more."""
    values = JsonValues()
    text, why, left = values.text("opt", {"lr": [0.001] * 5000, "betas": (0.9, 0.999),
                                          "name": "adam"})
    assert why == "" and left == [] and text is not None and len(text) > 30_000
    assert values.text("r", list(range(30_000)))[1] == (
        f"JSON text longer than {MAX_VALUE_JSON} bytes")
    text, why, left = values.text("v", [1, Unbuilt("numpy.ndarray", 3)])
    assert text == "[1, null]" and left[0][0] == "v.1" and "numpy.ndarray" in left[0][1]
    assert values.text("n", float("nan"))[0] == '"NaN"'
    values.kept = MAX_HEADER_SIZE - 10
    assert "fill the header" in values.text("s", "x" * 20)[1]
