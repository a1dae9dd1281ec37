"""Every ``safetensors`` name real libraries use (used_names.py), checked against
the reference: the name exists (or is absent) in both, its signature takes
what the reference's takes, and on the same calls it returns the same types
and values or raises an error every builtin base of the reference's error
catches (``SafetensorError`` being tensorfile's ``TensorfileError``).

tensorfile is seen as libraries see it: through ``tensorfile.compat.install()``
(``import safetensors`` after it), so a name the import hook fails to copy is
missing here too. Each name has its probes below; a name added to the list
without probes fails ``test_every_used_name_has_probes``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tensorfile import compat

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")
ref_torch = pytest.importorskip("safetensors.torch")


def _load_list() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tensorfile_used_names", Path(__file__).with_name("used_names.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


USED: dict[str, tuple[tuple[str, str, str], ...]] = _load_list().USED
SCANNED: tuple[tuple[str, str], ...] = _load_list().SCANNED
HANDLE = "safetensors.safe_open()."
SLICE = "safetensors.safe_open().get_slice()."


@dataclass
class Env:
    """One implementation as a library sees it, and a folder of its own."""

    st: Any  # ``safetensors``
    pt: Any  # ``safetensors.torch``
    tmp: Path
    path: Path  # a file the reference wrote: a, b, c with metadata
    bare: Path  # one without metadata


def _aliased_modules() -> tuple[Any, Any]:
    was = compat.installed()
    compat.install()
    try:
        return importlib.import_module("safetensors"), importlib.import_module("safetensors.torch")
    finally:
        if not was:
            compat.uninstall()


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, Env]:
    root = tmp_path_factory.mktemp("used")
    tensors = {
        "b": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "a": torch.arange(4, dtype=torch.int64),
        "c": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    }
    path, bare = root / "m.safetensors", root / "bare.safetensors"
    ref_torch.save_file(tensors, path, metadata={"format": "pt"})
    ref_torch.save_file({"w": torch.ones(2, 2)}, bare)
    st, pt = _aliased_modules()
    assert pt.load_file.__module__.startswith("tensorfile"), "the hook did not answer"
    (root / "ref").mkdir()
    (root / "ours").mkdir()
    return (Env(safetensors, ref_torch, root / "ref", path, bare),
            Env(st, pt, root / "ours", path, bare))


# --------------------------------------------------------------------------
# Outcomes: what a call returned (types and values), or what it raised
# --------------------------------------------------------------------------


def _sketch(value: Any) -> Any:
    """A comparable picture of a result: container types, keys and values;
    tensors and arrays by type, dtype, shape, device and bytes."""
    if isinstance(value, torch.Tensor):
        data = value.detach().contiguous()
        raw = b"" if data.device.type == "meta" else data.view(-1).view(torch.uint8).numpy().tobytes()
        return ("Tensor", str(value.dtype), tuple(value.shape), value.device.type, raw)
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, dict):
        return (type(value).__name__, tuple(sorted((k, _sketch(v)) for k, v in value.items())))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(map(repr, map(_sketch, value)))))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_sketch(v) for v in value))
    if isinstance(value, (str, bytes, int, float, bool, type(None), torch.dtype)):
        return (type(value).__name__, value)
    raise AssertionError(f"no sketch for {type(value)}: a probe must return plain values")


@dataclass
class Raised:
    error: BaseException


def _outcome(probe: Callable[[Env], Any], env: Env) -> Any:
    try:
        return _sketch(probe(env))
    except Exception as e:  # compared below
        return Raised(e)


_NOT_BUILTIN = (BaseException, Exception, object)


def _assert_same(name: str, case: int, theirs: Any, ours: Any, env: Env) -> None:
    where = f"{name} probe {case}"
    if isinstance(theirs, Raised):
        assert isinstance(ours, Raised), f"{where}: the reference raised {theirs.error!r}, ours gave {ours}"
        for base in type(theirs.error).__mro__:
            if base.__module__ == "builtins" and base not in _NOT_BUILTIN:
                assert isinstance(ours.error, base), f"{where}: {ours.error!r} is no {base.__name__}"
        if isinstance(theirs.error, safetensors.SafetensorError):
            assert isinstance(ours.error, env.st.SafetensorError), f"{where}: {ours.error!r}"
        return
    assert not isinstance(ours, Raised), f"{where}: ours raised {ours.error!r}, the reference gave {theirs}"
    assert ours == theirs, where


# --------------------------------------------------------------------------
# Probes: for each used name, calls as libraries make them (and wrong ones)
# --------------------------------------------------------------------------

Probe = Callable[[Env], Any]


def _tied() -> Any:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as a language model's head
    return model


def _handle(env: Env, call: Callable[[Any], Any], path: Path | None = None) -> Any:
    with env.st.safe_open(path or env.path, framework="pt") as f:
        return call(f)


def _slice(env: Env, call: Callable[[Any], Any]) -> Any:
    return _handle(env, lambda f: call(f.get_slice("b")))


def _bad_file(env: Env) -> Path:
    bad = env.tmp / "bad.safetensors"
    bad.write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    return bad


def _saved_bytes(env: Env, save: Callable[[Path], Any]) -> tuple[Any, bytes]:
    """What ``save`` returned and the file it wrote, whole (deterministic in
    the reference: at most one metadata key)."""
    out = env.tmp / "saved.safetensors"
    result = save(out)
    return result, out.read_bytes()


def _saved_parts(env: Env, save: Callable[[Path], Any]) -> tuple[Any, Any, bytes]:
    """As :func:`_saved_bytes` for files with two or more metadata keys, whose
    order the reference leaves to a hash map (spec/FORMAT.md W1): the header
    as JSON and the data bytes."""
    result, data = _saved_bytes(env, save)
    n = int.from_bytes(data[:8], "little")
    return result, json.loads(data[8 : 8 + n]), data[8 + n :]


_BASE = torch.arange(12, dtype=torch.float32)
_SHARED = {"x": _BASE, "y": _BASE[:6], "z": torch.zeros(3)}

PROBES: dict[str, list[Probe]] = {
    "safetensors.SafetensorError": [
        lambda e: issubclass(e.st.SafetensorError, Exception),
        lambda e: e.st.safe_open(_bad_file(e), "pt").keys(),
        lambda e: e.pt.load(b"not a safetensors file"),
    ],
    # Libraries compare it with packaging.version: the API version provided.
    "safetensors.__version__": [lambda e: e.st.__version__],
    "safetensors.safe_open": [
        lambda e: _handle(e, lambda f: f.keys()),
        lambda e: e.st.safe_open(e.path, framework="pytorch").keys(),  # text-generation-inference
        lambda e: e.st.safe_open(filename=e.path, framework="pt", device="cpu").keys(),
        lambda e: e.st.safe_open(e.path, framework="pt", device=None).get_tensor("a"),
        lambda e: e.st.safe_open(e.path, "np").get_tensor("b"),
        lambda e: e.st.safe_open(str(e.path), "pt", device=0).get_tensor("a"),
        lambda e: e.st.safe_open(e.tmp / "missing.safetensors", "pt"),
        lambda e: e.st.safe_open(e.path, "not-a-framework"),
        lambda e: e.st.safe_open(e.tmp, "pt"),
        lambda e: e.st.safe_open(_bad_file(e), "pt"),
    ],
    HANDLE + "get_tensor": [
        lambda e: _handle(e, lambda f: [f.get_tensor(k) for k in f.keys()]),
        lambda e: _handle(e, lambda f: f.get_tensor("nope")),
        lambda e: _handle(e, lambda f: f.get_tensor(1)),
    ],
    HANDLE + "get_slice": [
        lambda e: _handle(e, lambda f: f.get_slice("b")[:]),
        lambda e: _handle(e, lambda f: f.get_slice("nope")),
    ],
    HANDLE + "keys": [
        lambda e: _handle(e, lambda f: f.keys()),
        lambda e: _handle(e, lambda f: f.keys(), e.bare),
    ],
    HANDLE + "metadata": [
        lambda e: _handle(e, lambda f: f.metadata()),
        lambda e: _handle(e, lambda f: f.metadata(), e.bare),  # None
    ],
    # A scan false positive (diffusers reuses ``f`` for a text file): absent in both.
    HANDLE + "read": [lambda e: _handle(e, lambda f: hasattr(f, "read"))],
    SLICE + "get_shape": [lambda e: _slice(e, lambda s: s.get_shape())],
    SLICE + "get_dtype": [
        lambda e: _slice(e, lambda s: s.get_dtype()),
        lambda e: _handle(e, lambda f: f.get_slice("c").get_dtype()),
    ],
    SLICE + "__getitem__": [
        lambda e: _slice(e, lambda s: s[0:1]),
        lambda e: _slice(e, lambda s: s[:, 1:]),
        lambda e: _slice(e, lambda s: s[1]),
        lambda e: _slice(e, lambda s: s[...]),
        lambda e: _slice(e, lambda s: s[:, 0:2]),  # TP shards as transformers cuts them
        lambda e: _slice(e, lambda s: s[5]),
        lambda e: _slice(e, lambda s: s[0:1, 0:1, 0:1]),
    ],
    "safetensors.torch._TYPES": [
        # vllm maps header dtypes through it: every reference entry is the same here.
        lambda e: {k: v for k, v in e.pt._TYPES.items() if k in ref_torch._TYPES},
        lambda e: type(e.pt._TYPES).__name__,
    ],
    "safetensors.torch._getdtype": [
        lambda e: [e.pt._getdtype(k) for k in ("F32", "BF16", "I64", "U8", "BOOL", "F8_E4M3")],
        lambda e: e.pt._getdtype("NOPE"),
    ],
    "safetensors.torch._find_shared_tensors": [
        lambda e: e.pt._find_shared_tensors(_SHARED),
        lambda e: e.pt._find_shared_tensors(_tied().state_dict()),
        lambda e: e.pt._find_shared_tensors({"m": torch.zeros(2, device="meta")}),
    ],
    "safetensors.torch._is_complete": [
        lambda e: [e.pt._is_complete(t) for t in _SHARED.values()],
    ],
    "safetensors.torch._to_ndarray": [
        lambda e: e.pt._to_ndarray(torch.arange(6, dtype=torch.float16).reshape(2, 3)),
        lambda e: e.pt._to_ndarray(torch.zeros(0)),
        # The array is memory the tensor owns: keep the pair while reading it.
        lambda e: (lambda pair: pair[0].tobytes())(e.pt._to_ndarray(torch.tensor(3))),
    ],
    "safetensors.torch.load": [
        lambda e: e.pt.load(e.path.read_bytes()),
        lambda e: e.pt.load(data=e.bare.read_bytes()),
        lambda e: e.pt.load(b"\x08\0\0\0\0\0\0\0{}      "),
    ],
    "safetensors.torch.load_file": [
        lambda e: e.pt.load_file(e.path),
        lambda e: e.pt.load_file(str(e.path), device="cpu"),
        lambda e: e.pt.load_file(e.path, device=None),  # huggingface_hub <= 1.28
        lambda e: e.pt.load_file(e.path, backend="pread"),
        lambda e: e.pt.load_file(e.tmp / "missing.safetensors"),
        lambda e: e.pt.load_file(_bad_file(e)),
    ],
    "safetensors.torch.safe_open": [
        lambda e: e.pt.safe_open is e.st.safe_open,
        lambda e: e.pt.safe_open(e.path, framework="pt", device="cpu").get_tensor("c"),
    ],
    "safetensors.torch.save": [
        lambda e: e.pt.save({"w": torch.ones(2, 3), "i": torch.arange(3)}),
        lambda e: e.pt.save({"w": torch.ones(1)}, metadata={"format": "pt"}),
        lambda e: e.pt.save({"w": torch.ones(1)}, metadata={"format": 1}),
        lambda e: e.pt.save([torch.ones(1)]),
        lambda e: e.pt.save({"w": [1.0]}),
        lambda e: e.pt.save(_SHARED),
        lambda e: e.pt.save({"w": torch.ones(2).to_sparse()}),
    ],
    "safetensors.torch.save_file": [
        lambda e: _saved_bytes(e, lambda p: e.pt.save_file({"w": torch.ones(2)}, p)),
        lambda e: _saved_bytes(
            e, lambda p: e.pt.save_file({"w": torch.ones(2)}, str(p), metadata={"format": "pt"})
        ),
        lambda e: e.pt.save_file({"w": torch.ones(1)}, e.tmp / "x.safetensors", {"k": None}),
        lambda e: e.pt.save_file(_SHARED, e.tmp / "shared.safetensors"),
        lambda e: e.pt.save_file({"w": torch.ones(1)}, e.tmp / "no" / "such" / "dir.safetensors"),
    ],
    "safetensors.torch.save_model": [
        lambda e: _saved_bytes(e, lambda p: e.pt.save_model(_tied(), str(p))),
        lambda e: _saved_parts(e, lambda p: e.pt.save_model(_tied(), p, {"format": "pt"})),
    ],
    "safetensors.torch.load_model": [
        lambda e: _load_model(e, strict=True),
        lambda e: _load_model(e, strict=False, extra=True),
        lambda e: _load_model(e, strict=True, extra=True),
        lambda e: _load_model(e, strict=True, device=None),
    ],
    "safetensors.torch.storage_ptr": [
        lambda e: [e.pt.storage_ptr(t) == _BASE.untyped_storage().data_ptr() for t in _SHARED.values()],
        lambda e: e.pt.storage_ptr(torch.zeros(2, device="meta")),
    ],
    "safetensors.torch.storage_size": [
        lambda e: [e.pt.storage_size(t) for t in _SHARED.values()],
        lambda e: e.pt.storage_size(torch.zeros(2, device="meta")),
    ],
}


def _load_model(e: Env, strict: bool, extra: bool = False, device: str | None = "cpu") -> Any:
    path = e.tmp / "model.safetensors"
    ref_torch.save_model(_tied(), str(path))  # the reference writes it for both
    if extra:
        with safetensors.safe_open(path, "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        state["unused"] = torch.zeros(1)
        ref_torch.save_file(state, path, metadata={"1.weight": "0.weight"})
    model = _tied()
    torch.nn.init.zeros_(model[0].weight)
    result = e.pt.load_model(model, path, strict=strict, device=device)
    return result, model.state_dict(), model[0].weight.data_ptr() == model[1].weight.data_ptr()


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


def test_the_list_covers_every_library_the_issue_names() -> None:
    libraries = {lib for lib, _ in SCANNED}
    assert libraries >= {"transformers", "diffusers", "accelerate", "peft", "timm",
                         "huggingface_hub", "sentence-transformers", "torch", "vllm",
                         "text-generation-inference", "mlx-lm"}
    for name, sources in USED.items():
        assert sources, name
        assert all((lib, version) in SCANNED for lib, version, _ in sources), name
    assert "safetensors.torch._to_ndarray" in USED  # diffusers' remote VAE helpers


#: (name, probe) where tensorfile differs on purpose -> why (spec/FORMAT.md
#: section 5). Each must still differ: one that starts matching fails.
DEVIATIONS = {
    ("safetensors.torch.save_file", 4): (
        "P9: a write into a folder that does not exist raises Python's "
        "FileNotFoundError (an OSError), where the reference wraps the I/O error "
        "in SafetensorError"
    ),
}


def test_every_used_name_has_probes() -> None:
    assert sorted(USED) == sorted(PROBES)


def _resolve(env: Env, name: str) -> tuple[bool, Any]:
    """(present, value) of a used name in one implementation."""
    if name.startswith(SLICE):
        attr = name.removeprefix(SLICE)
        return _slice(env, lambda s: (hasattr(s, attr), getattr(s, attr, None)))
    if name.startswith(HANDLE):
        attr = name.removeprefix(HANDLE)
        return _handle(env, lambda f: (hasattr(f, attr), getattr(f, attr, None)))
    module_name, _, attr = name.rpartition(".")
    module = env.st if module_name == "safetensors" else env.pt
    assert module_name in ("safetensors", "safetensors.torch"), name
    return hasattr(module, attr), getattr(module, attr, None)


def _parameters(value: Any) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(value).parameters.values())
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("name", sorted(USED))
def test_used_name_exists_with_a_compatible_signature(name: str, envs: tuple[Env, Env]) -> None:
    ref, ours = envs
    present, theirs = _resolve(ref, name)
    mine_present, mine = _resolve(ours, name)
    assert mine_present == present, name
    if not present or not callable(theirs) or (isinstance(theirs, type) and theirs is not ref.st.safe_open):
        return
    want, have = _parameters(theirs), _parameters(mine)
    assert want is not None and have is not None, name
    # Every call the reference's signature accepts binds here the same way:
    # same names in the same order and kinds, the reference's real defaults
    # (the Rust ones show as ``...``); tensorfile may add keyword-only ones.
    assert len(have) >= len(want), name
    for p, q in zip(want, have[: len(want)], strict=True):
        if p.kind != inspect.Parameter.POSITIONAL_ONLY:  # callers cannot name those
            assert q.name == p.name, (name, p.name)
        assert q.kind == p.kind or (
            p.kind == inspect.Parameter.POSITIONAL_ONLY
            and q.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
        ), (name, p.name)
        if p.default is not inspect.Parameter.empty and p.default is not Ellipsis:
            assert q.default == p.default, (name, p.name)
    for q in have[len(want):]:
        assert q.kind == inspect.Parameter.KEYWORD_ONLY or q.default is not q.empty, (name, q.name)


@pytest.mark.parametrize("name", sorted(USED))
def test_used_name_returns_and_raises_as_the_reference(name: str, envs: tuple[Env, Env]) -> None:
    ref, ours = envs
    for case, probe in enumerate(PROBES[name]):
        theirs, mine = _outcome(probe, ref), _outcome(probe, ours)
        if (name, case) in DEVIATIONS:
            with pytest.raises(AssertionError):
                _assert_same(name, case, theirs, mine, ours)
            continue
        _assert_same(name, case, theirs, mine, ours)
