"""The allowlist as data, strict mode (the converter's), and building values from a checked stream."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
from pickle_kit import glob, os_system, proto, state_dict, text, tup

from tensorfile._picklevm._materialize import materialize
from tensorfile._picklevm.machine import (
    Call,
    Effect,
    GlobalRef,
    PersistentRef,
    run_stream,
)
from tensorfile._picklevm.policy import (
    ALLOWED_CALLS,
    STORAGE_TYPES,
    StreamPolicy,
    classify_global,
)
from tensorfile._report import Verdict
from tensorfile.errors import UnsafePickleError

SPEC = Path(__file__).resolve().parents[2] / "spec" / "SCANNING.md"


def test_every_allowlisted_call_is_documented() -> None:
    spec = SPEC.read_text()
    missing = [name for name in ALLOWED_CALLS
               if f"`{name}`" not in spec and name.split(".")[-1] not in spec]
    assert not missing


@pytest.mark.parametrize(("module", "name", "verdict"), [
    ("torch._utils", "_rebuild_tensor_v2", Verdict.SAFE),
    ("torch", "FloatStorage", Verdict.SAFE),
    ("os", "system", Verdict.DANGEROUS),
    ("asyncio.unix_events", "_UnixSelectorEventLoop", Verdict.DANGEROUS),
    ("pathlib", "os.system", Verdict.DANGEROUS),
    ("collections", "__builtins__", Verdict.DANGEROUS),
    ("torch._utils", "_rebuild_tensor_v2.__globals__", Verdict.DANGEROUS),
    ("my_project.models", "Net", Verdict.UNKNOWN),
    ("builtins", "print", Verdict.UNKNOWN),
    # words that are true: dangerous only for a named gadget
    ("pathlib", "PosixPath", Verdict.UNKNOWN),
    ("pathlib", "Path.write_text", Verdict.DANGEROUS),
    ("torch.serialization", "_get_layout", Verdict.UNKNOWN),
    ("torch.serialization", "load", Verdict.DANGEROUS),
    ("torch._utils", "_rebuild_sparse_tensor", Verdict.UNKNOWN),
    ("__main__", "TrainingConfig", Verdict.UNKNOWN),
    ("builtins", "eval.__call__", Verdict.DANGEROUS),
    ("some_pkg", "helpers.os.system", Verdict.DANGEROUS),
    ("torch.utils._config_module", "ConfigModule.load_config", Verdict.DANGEROUS),
])
def test_classify_global(module: str, name: str, verdict: Verdict) -> None:
    assert classify_global(GlobalRef(module, name, "GLOBAL", 0))[0] is verdict


@pytest.mark.parametrize(("module", "name", "verdict", "says"), [
    ("torch._utils", "_rebuild_sparse_tensor", Verdict.UNKNOWN, "sparse"),
    ("torch.serialization", "_get_layout", Verdict.UNKNOWN, "unsupported layout"),
    ("pathlib", "PosixPath", Verdict.UNKNOWN, "not on the allowlist"),
    ("pathlib", "os.system", Verdict.DANGEROUS, "os (reached as pathlib.os.system)"),
    ("builtins", "eval.__call__", Verdict.DANGEROUS, "builtins.eval (as builtins.eval.__call__)"),
])
def test_reasons_say_what_was_found(module: str, name: str, verdict: Verdict, says: str) -> None:
    got, reason = classify_global(GlobalRef(module, name, "GLOBAL", 0))
    assert got is verdict and says in reason
    assert "torch.load" not in reason


@pytest.mark.parametrize(("module", "name", "verdict"), [
    ("collections", "OrderedDict", Verdict.UNKNOWN),  # allowlisted, but not as torch writes it
    ("os", "system", Verdict.DANGEROUS),  # Python 2 STRING operands still name os.system
    ("<computed>", "system", Verdict.UNKNOWN),  # cannot be determined: not a named gadget
])
def test_non_literal_names_are_never_safe(module: str, name: str, verdict: Verdict) -> None:
    ref = GlobalRef(module, name, "STACK_GLOBAL", 0, literal=False)
    assert classify_global(ref)[0] is verdict


def test_strict_mode_stops_before_anything_is_built(tmp_path: Path) -> None:
    data = os_system(tmp_path / "c")
    with pytest.raises(UnsafePickleError, match=r"os\.system.*byte 2"):
        run_stream(data, 0, StreamPolicy(strict=True))
    result = run_stream(state_dict("w"), 0, StreamPolicy(strict=True))
    assert result.error is None


class TensorDescriptions:
    """A minimal converter-style builder: OrderedDicts and tensor descriptions."""

    def on_global(self, ref: GlobalRef) -> object:
        return ref.qualname

    def on_call(self, call: Call, func: object, args: tuple[object, ...], kwargs: object
                ) -> object:
        if func == "collections.OrderedDict":
            return OrderedDict()
        if func == "torch._utils._rebuild_tensor_v2":
            storage, offset, size, stride = args[:4]
            return {"storage": storage, "offset": offset, "shape": size, "stride": stride}
        raise AssertionError(func)

    def on_persistent(self, ref: PersistentRef, pid: object) -> object:
        assert isinstance(pid, tuple)
        return {"key": pid[2], "dtype": pid[1], "location": pid[3], "numel": pid[4]}

    def on_effect(self, effect: Effect, target: object, payload: tuple[object, ...]) -> None:
        assert isinstance(target, OrderedDict) and effect.opcode == "SETITEMS"
        target.update(zip(payload[::2], payload[1::2], strict=True))


def test_materialize_a_checked_state_dict() -> None:
    result = run_stream(state_dict("a", "b"), 0, StreamPolicy(strict=True))
    value = materialize(result.root, TensorDescriptions())
    assert isinstance(value, OrderedDict) and list(value) == ["a", "b"]
    assert value["b"] == {"storage": {"key": "1", "dtype": "torch.FloatStorage",
                                      "location": "cpu", "numel": 4},
                          "offset": 0, "shape": (4,), "stride": (1,)}


def test_shared_storage_tuple_is_built_once() -> None:
    data = (proto(2) + b"]" + b"(" + glob("torch", "FloatStorage") + b"q\x00" + text("x")
            + b"h\x00" + b"e" + b".")
    result = run_stream(data, 0, StreamPolicy())
    first, _, third = result.root  # type: ignore[misc]
    assert first is third
    built = materialize(result.root, TensorDescriptions())
    assert built[0] is built[2]  # type: ignore[index]


def test_storage_types_have_element_sizes() -> None:
    assert STORAGE_TYPES["torch.BFloat16Storage"] == 2
    assert STORAGE_TYPES["torch.storage.UntypedStorage"] == 1
    assert STORAGE_TYPES["torch.cuda.DoubleStorage"] == 8


def test_wrong_call_shapes_are_unknown() -> None:
    data = proto(2) + glob("collections", "OrderedDict") + tup(text("x")) + b"R."
    policy = StreamPolicy()
    run_stream(data, 0, policy)
    assert policy.verdict is Verdict.UNKNOWN
