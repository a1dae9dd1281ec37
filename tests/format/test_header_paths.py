"""The msgspec fast path never accepts what the strict path refuses, and agrees when both accept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfile._format import header as hdr
from tensorfile.errors import FormatError

pytest.importorskip("msgspec")

dtypes = st.sampled_from(["F32", "F16", "U8", "BOOL", "F4", "I64", "f32", "X", ""])
ints = st.integers(-2, 40) | st.sampled_from([2**64 - 1, 2**64, -0])
scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text(max_size=4)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, int]:
    n = draw(st.integers(0, 4))
    doc: list[tuple[str, object]] = []
    pos = 0
    for i in range(n):
        dt = draw(dtypes)
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        numel = 1
        for d in shape:
            numel *= d
        size = numel * {"F32": 4, "F16": 2, "I64": 8}.get(dt, 1)
        if dt == "F4":
            size = numel // 2
        entry: dict[str, object] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + size]}
        if draw(st.booleans()):  # corrupt one field
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
            entry[field] = draw(scalars | st.lists(ints, max_size=3))
        doc.append((draw(st.sampled_from(["a", "b", "a:b", "é", f"t{i}"])), entry))
        pos += size
    if draw(st.booleans()):  # JSON order need not be data order
        doc = draw(st.permutations(doc))
    if draw(st.booleans()):
        meta = draw(st.none() | st.dictionaries(st.text(max_size=3), scalars, max_size=2))
        doc.insert(draw(st.integers(0, len(doc))), ("__metadata__", meta))
    body = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in doc) + "}"
    if draw(st.booleans()):
        body = draw(st.sampled_from([" ", "\n", "\t"])) + body + " "
    data_size = pos + draw(st.sampled_from([0, 0, 0, 1, -1]))
    return body.encode(), max(0, data_size)


@settings(max_examples=300, deadline=None)
@given(case=headers())
def test_fast_path_agrees_with_strict_path(case: tuple[bytes, int]) -> None:
    raw, data_size = case
    fast = hdr._fast_validate(raw, data_size, len(raw))
    try:
        strict = hdr.validate(hdr.decode_json(raw), data_size, len(raw))
    except FormatError:
        assert fast is None, f"fast path accepted what the strict path refuses: {raw!r}"
        return
    if fast is not None:
        assert fast == strict
        # Both in data order, as the file lays the tensors out.
        assert list(fast.tensors.items()) == list(strict.tensors.items())


def test_fast_path_builds_tensor_infos_only_when_looked_up() -> None:
    entries = {
        f"t{i}": {"dtype": "F32", "shape": [2], "data_offsets": [8 * (9 - i), 8 * (10 - i)]}
        for i in range(10)
    }
    raw = json.dumps(entries).encode()
    table = hdr.parse_json(raw, 80, len(raw)).tensors
    assert list(table) == [f"t{i}" for i in range(9, -1, -1)]  # sorted by offset
    assert not any(isinstance(row, hdr.TensorInfo) for row in table._rows.values())
    assert table["t3"] == hdr.TensorInfo("t3", hdr.DTYPES["F32"], (2,), 48, 56)
    assert [isinstance(row, hdr.TensorInfo) for row in table._rows.values()].count(True) == 1
    assert [t.start for t in table.values()] == list(range(0, 80, 8))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"a:b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a:b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"__metadata__":{"k":"v","k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
    ],
)
def test_duplicate_keys_never_take_the_fast_path(raw: bytes) -> None:
    assert hdr._fast_validate(raw, 4, len(raw)) is None
    with pytest.raises(FormatError, match="more than once"):
        hdr.validate(hdr.decode_json(raw), 4, len(raw))
