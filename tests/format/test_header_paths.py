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
    fast_error: FormatError | None = None
    try:
        fast = hdr._fast_validate(raw, data_size, len(raw))
    except FormatError as e:
        fast, fast_error = None, e
    try:
        strict = hdr.validate(hdr.decode_json(raw), data_size, len(raw))
    except FormatError as e:
        assert fast is None, f"fast path accepted what the strict path refuses: {raw!r}"
        if fast_error is not None:  # the fast path may refuse a layout, with the same words
            assert (type(fast_error), str(fast_error)) == (type(e), str(e))
        return
    assert fast_error is None, f"fast path refused what the strict path accepts: {raw!r}"
    if fast is not None:
        assert fast == strict
        # Both in data order, as the file lays the tensors out.
        assert list(fast.tensors.items()) == list(strict.tensors.items())
    # columns() lists what the rows hold, whichever path built them.
    for header in (fast, strict):
        if header is not None:
            _assert_columns_match(header.tensors)


def _assert_columns_match(table: hdr.TensorTable) -> None:
    cols = table.columns()
    rows = list(table.values())
    assert cols.names == [t.name for t in rows]
    assert cols.dtypes == [t.dtype for t in rows]
    assert cols.shapes == [t.shape for t in rows]
    assert cols.starts == [t.start for t in rows]
    assert cols.ends == [t.end for t in rows]


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


def test_columns_build_no_tensor_infos() -> None:
    entries = {
        f"t{i}": {"dtype": "F32" if i % 2 else "BF16", "shape": [2, 2 - i % 2],
                  "data_offsets": [8 * i, 8 * i + 8]}
        for i in range(10)
    }
    raw = json.dumps(entries).encode()
    table = hdr.parse_json(raw, 80, len(raw)).tensors
    cols = table.columns()
    assert not any(isinstance(row, hdr.TensorInfo) for row in table._rows.values())
    assert cols.names == [f"t{i}" for i in range(10)]
    assert cols.dtypes[:2] == [hdr.DTYPES["BF16"], hdr.DTYPES["F32"]]
    assert cols.shapes[:2] == [(2, 2), (2, 1)]
    assert (cols.starts[3], cols.ends[3]) == (24, 32)
    table["t3"]  # one row looked up: the rest are still read right
    _assert_columns_match(table)


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


# Unknown fields: raw JSON text, so that duplicate keys, numbers past a double,
# escapes and deep nesting can all be written.
_texts = st.text(alphabet='ab:"\\[]{},é\n\ud800\udc00 0e', max_size=6)
_numbers = st.sampled_from(
    [b"0", b"-1", b"2.5", b"1e5", b"1E-5", b"-0", b"1e400", b"9" * 308, b"9" * 309, b"9" * 5000, b"0.25",
     b"9" * 199 + b"e99", b"9" * 199 + b".5e+99", b"1" + b"0" * 250 + b"e60", b"1e-400", b"1e307", b"2E+308"]
)


def _json_text(s: str, ascii_only: bool) -> bytes:
    return json.dumps(s, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def _raw_values(draw: st.DrawFn, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["lit", "num", "str", "list", "obj", "deep"] if depth < 3 else ["lit", "num", "str"]))
    if kind == "lit":
        return draw(st.sampled_from([b"true", b"false", b"null", b"[]", b"{}"]))
    if kind == "num":
        return draw(_numbers)
    if kind == "str":
        return _json_text(draw(_texts), draw(st.booleans()))
    if kind == "deep":
        n = draw(st.sampled_from([1, 100, 124, 125, 126, 200]))
        return b"[" * n + b"]" * n
    items = draw(st.lists(_raw_values(depth + 1), max_size=3))
    if kind == "list":
        return b"[" + b",".join(items) + b"]"
    keys = draw(st.lists(st.sampled_from(["k", "k", "a:b", 'q"']), min_size=len(items), max_size=len(items)))
    return b"{" + b",".join(_json_text(k, True) + b":" + v for k, v in zip(keys, items, strict=True)) + b"}"


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(st.tuples(st.sampled_from(["x", "y:z", "x"]), _raw_values()), min_size=1, max_size=3),
    meta=st.none() | st.dictionaries(st.sampled_from(["a", "b:c", 'd"', "[{"]), st.text(alphabet=":\"[{é", max_size=3), max_size=2),
)
def test_unknown_fields_fast_path_agrees_with_strict_path(
    fields: list[tuple[str, bytes]], meta: dict[str, str] | None
) -> None:
    extra = b"".join(b"," + _json_text(k, True) + b":" + v for k, v in fields)
    head = b'{"__metadata__":' + json.dumps(meta).encode() + b"," if meta is not None else b"{"
    raw = head + b'"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]' + extra + b"}}"
    fast_error: FormatError | None = None
    try:
        fast = hdr._fast_validate(raw, 2, len(raw))
    except FormatError as e:
        fast, fast_error = None, e
    assert fast_error is None  # the layout is right, only the fields vary
    try:
        strict = hdr.validate(hdr.decode_json(raw), 2, len(raw))
    except FormatError:
        assert fast is None, f"fast path accepted what the strict path refuses: {raw!r}"
        return
    if fast is not None:
        assert fast == strict


@pytest.mark.parametrize(
    "extra",
    [
        b'"x":[]',
        b'"x":[[],{},[[{}]]]',
        b'"x":{}',
        b'"x":"a:b \\" [{ \\\\",  "y" : [1, -2.5, true, false, null, "\\u00e9"]',
        b'"x":' + b"[" * 125 + b"]" * 125,
        b'"x":[1e5, 2.5E-30, 9e+99, true, false]',
    ],
)
def test_plain_unknown_fields_are_decided_by_the_fast_path(extra: bytes) -> None:
    """Ignored fields of lists, empty objects, strings and plain numbers no
    longer send the header to the strict decoder (a 99 MB one took a minute)."""
    raw = b'{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2],' + extra + b'}}'
    fast = hdr._fast_validate(raw, 2, len(raw))
    assert fast is not None
    assert fast == hdr.validate(hdr.decode_json(raw), 2, len(raw))
