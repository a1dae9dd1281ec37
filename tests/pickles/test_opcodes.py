"""The opcode reader and the machine agree with CPython's C unpickler.

Round trips: plain data pickled by the standard library at every protocol is
read back by the machine (and materialized) to the same value, with the same
opcodes and offsets ``pickletools`` reports. Where ``genops`` and the C
unpickler differ (FRAME, C number forms), the reader follows the C unpickler;
those samples hold only plain data, so ``pickle.loads`` may check them.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pickle_kit import frame, proto

from tensorfile._picklevm._materialize import materialize
from tensorfile._picklevm.machine import (
    Call,
    Effect,
    GlobalRef,
    PersistentRef,
    run_stream,
)
from tensorfile._picklevm.opcodes import (
    AmbiguousPickleError,
    BigText,
    BytesRef,
    OpcodeReader,
    frame_by_frame,
    looks_like_binary_pickle,
)
from tensorfile._picklevm.policy import StreamPolicy
from tensorfile.errors import MalformedPickleError, PickleError


class PlainBuilder:
    """Rebuilds what the standard library pickles for plain data, nothing else."""

    def on_global(self, ref: GlobalRef) -> object:
        return ref.qualname

    def on_call(self, call: Call, func: object, args: tuple[object, ...], kwargs: object
                ) -> object:
        if func == "builtins.set":
            return set(*args)  # type: ignore[arg-type]
        if func == "builtins.bytes":
            return bytes(*args)  # type: ignore[call-overload]
        if func == "builtins.frozenset":
            return frozenset(*args)  # type: ignore[arg-type]
        if func == "_codecs.encode":
            return str(args[0]).encode("latin-1")
        raise PickleError(f"unexpected call {func}")

    def on_persistent(self, ref: PersistentRef, pid: object) -> object:
        raise PickleError("no persistent ids in plain data")

    def on_effect(self, effect: Effect, target: object, payload: tuple[object, ...]) -> None:
        raise PickleError("no effects in plain data")


def _load(data: bytes) -> Any:
    policy = StreamPolicy()
    result = run_stream(data, 0, policy)
    assert result.error is None, result.error
    assert result.end == len(data)
    value = materialize(result.root, PlainBuilder())
    return _unwrap(value)


def _unwrap(value: Any) -> Any:
    if isinstance(value, BytesRef):
        return value.tobytes()
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=5000),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=4)
    | st.frozensets(st.integers(), max_size=3),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=plain, protocol=st.integers(0, 5))
def test_round_trip_matches_pickle(value: Any, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    assert _load(data) == value
    ours = [(op.name, op.offset) for op in OpcodeReader(data)]
    theirs = [(op.name, pos) for op, _, pos in pickletools.genops(data)]
    assert ours == theirs


def test_large_arguments_are_windows_not_copies() -> None:
    blob = bytes(range(256)) * 100
    data = pickle.dumps((blob, "é" * 10), protocol=4)
    ops = list(OpcodeReader(data, max_text=4))
    big = [op.arg for op in ops if isinstance(op.arg, BytesRef)]
    assert len(big) == 1 and big[0].tobytes() == blob
    assert any(isinstance(op.arg, BigText) for op in ops)


def test_frames_that_do_not_line_up_have_two_readings_and_are_refused() -> None:
    """pickle.loads reads a stream flat; pickle.load from a file reads each frame
    whole and continues after it, so an opcode straddling the frame's end reads
    differently (here: fails). Such a stream is refused, not read one way."""
    straddle = proto(4) + frame(3) + b"\x8c\x05hello\x8c\x02hi\x86."
    assert pickle.loads(straddle) == ("hello", "hi")
    with pytest.raises((pickle.UnpicklingError, UnicodeDecodeError)):
        pickle.load(io.BytesIO(straddle))  # reads "\x8c\x02hi" as the text's length
    nested = proto(4) + frame(12) + frame(3) + b"K\x07."
    assert pickle.loads(nested) == 7
    past_stop = proto(4) + frame(6) + b"K\x07." + b"K\x08."
    stream = io.BytesIO(past_stop + b"K\x09.")
    assert pickle.load(stream) == 7
    assert pickle.load(stream) == 9  # the next pickle starts where the frame ends
    for data, where in ((straddle, 11), (nested, 11), (past_stop, 13)):
        result = run_stream(data, 0, StreamPolicy())
        assert isinstance(result.error, AmbiguousPickleError), (data, result.error)
        assert result.error.offset == where


def test_frames_as_pickle_writes_them_are_read() -> None:
    for obj in ({"a": list(range(30000)), "b": b"x" * 200_000, "c": "y" * 70_000}, [1.5, "z"]):
        for protocol in (4, 5):
            assert _load(pickle.dumps(obj, protocol=protocol)) == obj


@pytest.mark.parametrize("length", [100, (1 << 63) - 1, (1 << 63), (1 << 64) - 1])
def test_frame_longer_than_data_stops_the_stream(length: int) -> None:
    data = proto(4) + b"K\x01" + b"\x95" + struct.pack("<Q", length) + b"K\x02."
    with pytest.raises((pickle.UnpicklingError, OverflowError, ValueError)):
        pickle.loads(data)
    result = run_stream(data, 0, StreamPolicy())
    assert isinstance(result.error, MalformedPickleError)
    assert result.error.offset == 4


@pytest.mark.parametrize("text", [b"0x10", b"010", b"00", b"01", b" 1", b"+7", b"-3",
                                  b"99999999999999999999", b"1_0"])
def test_int_text_follows_c_strtol(text: bytes) -> None:
    data = b"I" + text + b"\n."
    expected = pickle.loads(data)
    got = _load(data)
    assert got == expected and type(got) is type(expected)
    # pickletools.genops rejects the C-only forms, which is why a scanner on it
    # can be made to stop before a payload.
    if text == b"0x10":
        with pytest.raises(ValueError):
            list(pickletools.genops(data))


@pytest.mark.parametrize(("data", "offset"), [
    (b"\x80\x02\xff", 2),                     # invalid opcode
    (b"cos\nsystem\n(", 12),                 # GLOBAL then MARK, ends before STOP
    (b"\x80\x02T\xff\xff\xff\xff.", 2),       # negative BINSTRING length
    (b"\x80\x02\x8b\xff\xff\xff\xff.", 2),    # negative LONG4 length
    (b"\x80\x02X\xff\xff\xff\x7f", 2),        # BINUNICODE past the end
    (b"\x80\x09.", 0),                        # protocol 9
    (b"S'unquoted\n.", 0),                    # STRING needs quotes
    (b"\x80\x02", 2),                         # ends before STOP
])
def test_malformed_input_reports_the_offset(data: bytes, offset: int) -> None:
    result = run_stream(data, 0, StreamPolicy())
    assert isinstance(result.error, MalformedPickleError)
    assert result.error.offset == offset


def test_stack_discipline_matches_c() -> None:
    # POP right after MARK pops the MARK (load_pop), so this is (1,) for C.
    data = b"\x80\x02K\x01(0\x85."
    assert pickle.loads(data) == (1,) == _load(data)
    # Items below a MARK are fenced off: TUPLE1 right after MARK underflows.
    fenced = b"\x80\x02K\x01(\x85."
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(fenced)
    assert isinstance(run_stream(fenced, 0, StreamPolicy()).error, MalformedPickleError)
    # MEMOIZE numbers slots by how many are filled, as _pickle.c does.
    memo = b"\x80\x04K\x05r\x0a\x00\x00\x00K\x06\x94h\x01h\x0a\x86."
    assert pickle.loads(memo) == (6, 5) == _load(memo)


def test_protocol_below_3_renames_py2_modules() -> None:
    policy = StreamPolicy()
    run_stream(b"\x80\x02c__builtin__\nset\n)R.", 0, policy)
    assert list(policy.globals) == ["builtins.set"]
    policy = StreamPolicy()
    run_stream(b"\x80\x03c__builtin__\nset\n)R.", 0, policy)
    assert list(policy.globals) == ["__builtin__.set"]


def test_sniffing_binary_pickles() -> None:
    assert looks_like_binary_pickle(pickle.dumps([1], protocol=2))
    assert not looks_like_binary_pickle(b"\x80\x07K")
    assert not looks_like_binary_pickle(b"PK\x03\x04")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12)


def _outcome(load: Any) -> object:
    try:
        return ("ok", load())
    except Exception as exc:  # the C unpickler's failure, by type
        return ("error", type(exc).__name__)


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.integers(0, 200), st.integers(-3, 40), st.sampled_from([2, 4, 5]))
def test_frame_by_frame_reads_what_pickle_load_reads_from_a_bytesio(
        value: object, cut: int, extra: int, protocol: int) -> None:
    """``frame_by_frame`` replays _pickle.c reading a BytesIO: a FRAME of any length
    placed anywhere gives the opcodes pickle.load(BytesIO) acts on."""
    body = pickle.dumps(value, protocol=protocol)[2:]
    cut = min(cut, len(body))
    length = max(0, len(body) - cut + extra)
    data = b"\x80\x04" + body[:cut] + b"\x95" + struct.pack("<Q", length) + body[cut:]
    flat = frame_by_frame(data, 0, len(data), 1 << 20)
    expected = _outcome(lambda: pickle.load(io.BytesIO(data)))
    got = _outcome(lambda: pickle.loads(flat)) if flat else ("error", "nothing read")
    if expected[0] == "ok":  # where the real unpickler fails, there is nothing to compare
        assert got == expected
