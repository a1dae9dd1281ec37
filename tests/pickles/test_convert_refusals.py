"""What the converter refuses: hostile pickles, malformed and unsupported checkpoints.

Every refusal must leave no output file and no temporary file behind, and a
canary must prove that nothing in the input ran: for crafted samples a file
the payload would create, for the shared corpus an audit hook that records
every import lookup and process/exec event while converting in a subprocess.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile.errors import (
    ConversionError,
    MalformedCheckpointError,
    UnsafePickleError,
    UnsupportedCheckpointError,
)
from tensorfile.pickles.convert import convert

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / ".." / "shared" / "corpus" / "picklescan"


import torch_pickle_kit as kit  # noqa: E402  (on sys.path through conftest.py)


def assert_refused(src: Path, tmp: Path, error: type[ConversionError], *fragments: str) -> str:
    """Conversion raises ``error`` mentioning ``fragments`` and leaves ``tmp`` as it was."""
    before = sorted(p.name for p in tmp.iterdir())
    with pytest.raises(error) as info:
        convert(src, tmp / "out.safetensors")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert sorted(p.name for p in tmp.iterdir()) == before  # no output, no temp file
    return message


# ---------------------------------------------------------------------------
# Hostile: crafted with a file canary
# ---------------------------------------------------------------------------

def _payload(canary: Path) -> bytes:
    """A protocol-2 REDUCE of os.system that would create ``canary``."""
    return kit.glob("posix", "system") + kit.tup([kit.text(f"touch {canary}")]) + kit.REDUCE


def _weights() -> dict[str, bytes]:
    return {"0": np.arange(4, dtype="<f4").tobytes()}


def _state_dict(extra: bytes = b"") -> bytes:
    """{'w': tensor[4]} (plus an ``extra`` value pickled *before* the tensor)."""
    pairs = [("x", extra)] if extra else []
    pairs.append(("w", kit.tensor_v2(kit.storage("0"), 0, (4,), (1,))))
    return kit.stream(kit.dict_of(pairs))


def _hostile_samples(canary: Path) -> dict[str, bytes]:
    bad = _payload(canary)
    good = kit.Checkpoint(_state_dict(), _weights())
    legacy_sizes = {"0": 4}
    legacy_pid = kit.storage("0", legacy_view=kit.NONE)
    legacy_good = kit.stream(kit.dict_of([("w", kit.tensor_v2(legacy_pid, 0, (4,), (1,)))]))
    samples = {
        "zip-object-pickle": kit.Checkpoint(_state_dict(bad), _weights()).zip_bytes(),
        "zip-after-stop": kit.Checkpoint(_state_dict() + kit.stream(bad), _weights()).zip_bytes(),
        "legacy-object-pickle": kit.Checkpoint(
            kit.stream(kit.dict_of([("x", bad)])), {}).legacy_bytes({}),
        "legacy-after-records": kit.Checkpoint(legacy_good, _weights()).legacy_bytes(legacy_sizes)
        + kit.stream(bad),
        "raw-pickle": kit.stream(bad),
        "stack-global-exec": kit.stream(
            kit.text("builtins") + kit.text("exec") + b"\x93"
            + kit.tup([kit.text(f"open({str(canary)!r}, 'w')")]) + kit.REDUCE),
        "build-on-ordered-dict": kit.stream(
            kit.glob("collections", "OrderedDict") + kit.EMPTY_TUPLE + kit.REDUCE
            + kit.dict_of([("update", bad)]) + b"b"),
    }
    # pickle.dumps(tensor) style: the payload inside the nested storage stream.
    nested = kit.glob("torch.storage", "_load_from_bytes") + kit.tup(
        [kit.binbytes(kit.stream(bad))]) + kit.REDUCE
    samples["nested-load-from-bytes"] = kit.stream(kit.dict_of([("w", kit.tensor_v2(
        nested, 0, (1,), (1,)))]))
    # A second pickle entry in the zip, beside a benign data.pkl.
    samples["zip-second-pkl"] = _with_entry(good.zip_bytes(), "archive/extra.pkl",
                                            kit.stream(bad))
    # A storage record that is itself a pickle (payload in the weights' place).
    samples["zip-record-is-pickle"] = kit.Checkpoint(
        _state_dict(), {"0": kit.stream(bad) + b"\0" * 16}).zip_bytes()
    return samples


def _with_entry(raw: bytes, name: str, data: bytes) -> bytes:
    """``raw`` zip bytes with one more stored entry."""
    buf = io.BytesIO(raw)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return buf.getvalue()


HOSTILE = ["zip-object-pickle", "zip-after-stop", "legacy-object-pickle", "legacy-after-records",
           "raw-pickle", "stack-global-exec", "build-on-ordered-dict", "zip-second-pkl",
           "zip-record-is-pickle", "nested-load-from-bytes"]


@pytest.mark.parametrize("name", HOSTILE)
def test_crafted_hostile_refused_and_canary_untouched(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    src = tmp_path / f"{name}.pt"
    src.write_bytes(_hostile_samples(canary)[name])
    message = assert_refused(src, tmp_path, UnsafePickleError)
    assert "byte" in message  # names where the offending opcode sits
    assert not canary.exists()


def test_canary_is_live(tmp_path: Path) -> None:
    """The crafted payload really runs under pickle (so its absence above means something)."""
    canary = tmp_path / "canary"
    data = kit.stream(_payload(canary))
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=data, check=True, timeout=60)
    assert canary.exists()


def test_unsafe_error_names_global_and_offset(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    src = tmp_path / "evil.pt"
    src.write_bytes(_hostile_samples(canary)["zip-object-pickle"])
    message = assert_refused(src, tmp_path, UnsafePickleError, "posix.system", "archive/data.pkl")
    assert "at byte" in message


# ---------------------------------------------------------------------------
# Hostile: the shared corpus, converted in a subprocess under an audit hook
# ---------------------------------------------------------------------------

_AUDIT = r"""
import json, sys
from pathlib import Path
from tensorfile.errors import ConversionError
from tensorfile.pickles.convert import convert

WATCH = ("pickle.find_class", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
         "os.spawn", "os.fork", "exec", "webbrowser.open", "socket.connect", "ctypes.dlopen",
         "os.startfile", "shutil.rmtree", "os.remove", "urllib.Request")
events = []


def hook(ev, args):
    if not ev.startswith(WATCH):
        return
    code = args[0] if ev == "exec" and args else None
    where = getattr(code, "co_filename", "")
    if ev == "exec" and where.endswith(".py") and Path(where).is_file():
        return  # a lazy import of an installed module runs its module code: not input
    events.append(f"{ev} {where}".strip())


sys.addaudithook(hook)
if sys.argv[1] == "--control":  # the hook does see an unpickler resolving a global
    import collections, pickle
    pickle.loads(pickle.dumps(collections.OrderedDict()))
    print(json.dumps({"events": events}))
    raise SystemExit(0)
out, mode = Path(sys.argv[1]), sys.argv[2]


def keys(src):
    # Every top-level key of the object stream (read, never built), for --key.
    from tensorfile.convert._checkpoint import Mode, load_checkpoint
    from tensorfile.convert._extract import top_keys
    # Names Lightning and Trainer checkpoints use are tried too, present or not.
    common = ["state_dict", "model", "model_state_dict"]
    try:
        ck = load_checkpoint(Path(src), Mode(salvage=True))
    except ConversionError:
        return common
    ck.source.close()
    return sorted(set(top_keys(ck.graph)) | set(common))


results = {}
for src in sys.argv[3:]:
    runs = {"plain": [{}], "salvage": [{"salvage_tensors": True}],
            "keys": [{"key": k} for k in keys(src)]}[mode]
    outcome = []
    for kw in runs:
        try:
            convert(src, out / "out.safetensors", **kw)
            outcome.append("converted")
            (out / "out.safetensors").unlink()
        except ConversionError as exc:
            outcome.append(type(exc).__name__)
    results[src] = outcome
print(json.dumps({"events": events, "results": results}))
"""


def _corpus(label: str) -> list[Path]:
    labels = CORPUS / "LABELS.tsv"
    if not labels.is_file():
        pytest.skip("shared corpus not present")
    with open(labels, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [CORPUS / r["path"] for r in rows if r["label"] == label]


def _audited(tmp_path: Path, mode: str, files: list[Path]) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", _AUDIT, str(tmp_path), mode, *map(str, files)],
                          capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(proc.stdout)
    assert result["events"] == []  # no global was resolved, nothing was spawned or executed
    assert list(tmp_path.iterdir()) == []
    outcomes: dict[str, list[str]] = result["results"]
    assert set(outcomes) == {str(p) for p in files}
    return outcomes


@pytest.mark.corpus
def test_corpus_hostile_refused_nothing_runs(tmp_path: Path) -> None:
    hostile = _corpus("hostile")
    assert len(hostile) > 50
    outcomes = {p: r[0] for p, r in _audited(tmp_path, "plain", hostile).items()}
    assert "converted" not in outcomes.values()
    unsafe = [p for p, r in outcomes.items() if r == "UnsafePickleError"]
    # Only archives the scanner cannot read (7z) are refused as unreadable instead.
    assert all(p.endswith(".7z") for p, r in outcomes.items() if r != "UnsafePickleError")
    assert len(unsafe) >= len(hostile) - 1


@pytest.mark.corpus
def test_corpus_hostile_no_key_yields_output(tmp_path: Path) -> None:
    """--key with every top-level key of every hostile file: nothing is written."""
    hostile = _corpus("hostile")
    outcomes = _audited(tmp_path, "keys", hostile)
    assert all(len(r) >= 3 for r in outcomes.values())
    assert not any("converted" in r for r in outcomes.values())


@pytest.mark.corpus
def test_corpus_hostile_salvage_runs_nothing(tmp_path: Path) -> None:
    """Salvage reads every hostile file without resolving a single global."""
    hostile = _corpus("hostile")
    outcomes = _audited(tmp_path, "salvage", hostile)
    assert all(r[0] in ("converted", "UnsupportedCheckpointError", "MalformedCheckpointError")
               for r in outcomes.values()), outcomes


def test_audit_hook_control() -> None:
    proc = subprocess.run([sys.executable, "-c", _AUDIT, "--control", "plain"],
                          capture_output=True,
                          text=True, timeout=120, check=True)
    assert json.loads(proc.stdout)["events"] == ["pickle.find_class"]


@pytest.mark.corpus
def test_corpus_benign_torch_files_convert(tmp_path: Path) -> None:
    """Real checkpoints from the corpus convert, tensors equal to torch's weights-only load."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    checked = 0
    for src in _corpus("benign"):
        if src.suffix not in (".bin", ".pkl"):
            continue
        out = tmp_path / (src.name + ".safetensors")
        report = convert(src, out)
        assert report.outputs == [str(out)]
        if src.suffix == ".bin":
            want = torch.load(src, weights_only=True)
            if isinstance(want, torch.Tensor):  # torch.save(tensor): one unnamed tensor
                want = {"tensor": want}
            got = load_file(out)
            assert set(want) == set(got) | set(report.aliases)
            for name, tensor in want.items():
                assert torch.equal(got[report.aliases.get(name, name)], tensor), name
            checked += 1
    assert checked >= 2


# ---------------------------------------------------------------------------
# Malformed checkpoints: clear errors, nothing written
# ---------------------------------------------------------------------------

def _zip(tmp: Path, pickle: bytes, records: dict[str, bytes], **kw: Any) -> Path:
    src = tmp / "bad.pt"
    src.write_bytes(kit.Checkpoint(pickle, records).zip_bytes(**kw))
    return src


def test_view_past_its_storage(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 2, (3,), (1,)))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, MalformedCheckpointError,
                   "reaches element 4", "storage '0'", "holds 4")


def test_strided_view_past_its_storage(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, (2, 2), (3, 1)))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, MalformedCheckpointError,
                   "reaches element 4")


def test_more_dimensions_than_numpy_refused(tmp_path: Path) -> None:
    """64 dimensions convert; 65 are refused by the scan that runs first (a
    shape shared through the memo by many tensors would otherwise cost
    tensors x dimensions), before any size is read."""
    ones = (1,) * 64
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, ones, ones))]))
    report = convert(_zip(tmp_path, body, _weights()), tmp_path / "ok.safetensors")
    assert report.tensors == ["w"]
    (tmp_path / "ok.safetensors").unlink()
    more = (*ones, 1)
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, more, more))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, UnsafePickleError,
                   "_rebuild_tensor_v2", "at most 64 entries")


def test_negative_stride_refused(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 3, (4,), (-1,)))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, MalformedCheckpointError,
                   "negative")


def test_short_record(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0", numel=8), 0, (8,),
                                                       (1,)))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, MalformedCheckpointError,
                   "holds 16 bytes", "8 elements")


def test_missing_record(tmp_path: Path) -> None:
    body = _state_dict()
    assert_refused(_zip(tmp_path, body, _weights(), omit=["0"]), tmp_path,
                   MalformedCheckpointError, "archive/data/0", "missing")


def test_unknown_persistent_id(tmp_path: Path) -> None:
    pid = kit.tup([kit.text("module"), kit.text("x")]) + kit.BINPERSID
    body = kit.stream(kit.dict_of([("w", pid)]))
    assert_refused(_zip(tmp_path, body, {}), tmp_path, UnsafePickleError,
                   "persistent id is not a torch storage tuple")


def test_truncated_zip(tmp_path: Path) -> None:
    raw = kit.Checkpoint(_state_dict(), _weights()).zip_bytes()
    src = tmp_path / "cut.pt"
    src.write_bytes(raw[: len(raw) // 2])
    assert_refused(src, tmp_path, ConversionError)


def test_truncated_legacy_record(tmp_path: Path) -> None:
    pid = kit.storage("0", legacy_view=kit.NONE)
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(pid, 0, (4,), (1,)))]))
    raw = kit.Checkpoint(body, _weights()).legacy_bytes({"0": 4})
    src = tmp_path / "cut.pt"
    src.write_bytes(raw[:-3])
    assert_refused(src, tmp_path, ConversionError, "storage record '0'")


def test_size_and_stride_lengths_differ(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, (2, 2), (1,)))]))
    assert_refused(_zip(tmp_path, body, _weights()), tmp_path, MalformedCheckpointError,
                   "differ in length")


def test_bad_byteorder_record(tmp_path: Path) -> None:
    ck = kit.Checkpoint(_state_dict(), _weights(), byteorder="middle")
    src = tmp_path / "bo.pt"
    src.write_bytes(ck.zip_bytes())
    assert_refused(src, tmp_path, MalformedCheckpointError, "byteorder")


def test_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "empty.pt"
    src.write_bytes(b"")
    assert_refused(src, tmp_path, ConversionError)


def test_expanded_views_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero strides can repeat a 4-byte storage without bound: the output size is capped."""
    import tensorfile.convert._flatten as flatten_module

    monkeypatch.setattr(flatten_module, "_EXPANSION_SLACK", 1 << 10)
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(kit.storage("0", numel=1), 0,
                                                       (1 << 20,), (0,)))]))
    assert_refused(_zip(tmp_path, body, {"0": b"\0" * 4}), tmp_path,
                   UnsupportedCheckpointError, "repeat data")


# ---------------------------------------------------------------------------
# Unsupported: well-formed, but nothing safetensors can hold
# ---------------------------------------------------------------------------

def test_quantized_refused_clearly(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("q", kit.tensor_v2(kit.storage("0", "QInt8Storage"), 0,
                                                       (4,), (1,)))]))
    assert_refused(_zip(tmp_path, body, {"0": b"\0" * 4}), tmp_path,
                   UnsupportedCheckpointError, "quantized")


def test_torch_quantized_tensor_refused_clearly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():  # torch warns once per process: quantize_* is deprecated
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)
    src = tmp_path / "q.pt"
    torch.save({"q": q}, src)
    assert_refused(src, tmp_path, UnsupportedCheckpointError, "_rebuild_qtensor", "quantized")


def test_complex128_refused(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("c", kit.tensor_v2(kit.storage("0", "ComplexDoubleStorage",
                                                                   numel=1), 0, (1,), (1,)))]))
    assert_refused(_zip(tmp_path, body, {"0": b"\0" * 16}), tmp_path,
                   UnsupportedCheckpointError, "ComplexDoubleStorage")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "arrays.npz"
    np.savez(src, a=np.arange(3))
    assert_refused(src, tmp_path, UnsupportedCheckpointError, "not a torch checkpoint")


# ---------------------------------------------------------------------------
# Mutated checkpoints: converted or refused with a ConversionError, nothing else
# ---------------------------------------------------------------------------

def _mutation_seeds() -> dict[str, bytes]:
    view = kit.tensor_v2(kit.storage("0", numel=6), 1, (2, 2), (1, 2))  # non-contiguous
    body = kit.stream(kit.dict_of([("w", view), ("n", kit.integer(3))]))
    records = {"0": np.arange(6, dtype="<f4").tobytes()}
    legacy_pid = kit.storage("0", numel=6, legacy_view=kit.NONE)
    legacy = kit.stream(kit.dict_of([("w", kit.tensor_v2(legacy_pid, 0, (6,), (1,)))]))
    return {"zip": kit.Checkpoint(body, records).zip_bytes(),
            "legacy": kit.Checkpoint(legacy, records).legacy_bytes({"0": 4}),
            "tar": kit.tar_checkpoint({"a": [1.0, 2.0]})}


_SEEDS = _mutation_seeds()


@pytest.mark.parametrize("kind", sorted(_SEEDS))
def test_mutated_checkpoints_fail_cleanly(tmp_path_factory: pytest.TempPathFactory,
                                          kind: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seed = _SEEDS[kind]
    folder = tmp_path_factory.mktemp(kind)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)),
                    min_size=1, max_size=4),
           st.integers(1, len(seed)))
    def check(edits: list[tuple[int, int]], keep: int) -> None:
        data = bytearray(seed[:keep])
        for at, value in edits:
            if at < len(data):
                data[at] = value
        src = folder / "m.pt"
        src.write_bytes(bytes(data))
        out = folder / "m.safetensors"
        for kw in ({}, {"salvage_tensors": True}, {"key": "w"}):
            try:
                convert(src, out, **kw)  # type: ignore[arg-type]
            except ConversionError:
                assert not out.exists()
            else:
                out.unlink()
            assert sorted(p.name for p in folder.iterdir()) == ["m.pt"]

    check()


# ---------------------------------------------------------------------------
# Every storage class and dtype the allowlist admits: converted, or refused by name
# ---------------------------------------------------------------------------

def _v3(dtype: str, nbytes: int) -> bytes:
    module, name = dtype.rsplit(".", 1)
    hooks = kit.glob("collections", "OrderedDict") + kit.EMPTY_TUPLE + kit.REDUCE
    pid = kit.storage("0", "UntypedStorage", numel=nbytes, module="torch.storage")
    return kit.glob("torch._utils", "_rebuild_tensor_v3") + kit.tup(
        [pid, kit.integer(0), kit.ints((1,)), kit.ints((1,)), kit.NEWFALSE, hooks,
         kit.glob(module, name)]) + kit.REDUCE


def test_every_allowlisted_storage_type_and_dtype_maps_or_is_refused_by_name(
        tmp_path: Path) -> None:
    from tensorfile._picklevm.policy import STORAGE_TYPES, TORCH_DTYPES

    outcomes: dict[str, str] = {}
    cases = [(s, kit.tensor_v2(kit.storage("0", s.rsplit(".", 1)[1], numel=1,
                                           module=s.rsplit(".", 1)[0]), 0, (1,), (1,)))
             for s in STORAGE_TYPES if "Untyped" not in s]
    cases += [(d, _v3(d, 16)) for d in sorted(TORCH_DTYPES)]
    for name, tensor in cases:
        src = _zip(tmp_path, kit.stream(kit.dict_of([("t", tensor)])), {"0": bytes(range(16))})
        try:
            convert(src, tmp_path / "out.safetensors")
            outcomes[name] = "converted"
            (tmp_path / "out.safetensors").unlink()
        except UnsupportedCheckpointError as exc:
            assert name.rsplit(".", 1)[1] in str(exc) or "quantized" in str(exc), str(exc)
            outcomes[name] = "refused"
    converted = {n for n, o in outcomes.items() if o == "converted"}
    for must in ("torch.FloatStorage", "torch.cuda.HalfStorage", "torch.BFloat16Storage",
                 "torch.BoolStorage", "torch.ComplexFloatStorage", "torch.float8_e4m3fn",
                 "torch.float8_e5m2", "torch.float8_e8m0fnu", "torch.uint16", "torch.uint32",
                 "torch.uint64", "torch.bfloat16", "torch.complex64", "torch.bool"):
        assert must in converted, must
    for refused in ("torch.QInt8Storage", "torch.ComplexDoubleStorage", "torch.complex128",
                    "torch.qint8", "torch.bits8", "torch.int4"):
        assert outcomes[refused] == "refused", refused


def test_scanner_hostile_samples_are_refused(tmp_path: Path) -> None:
    """The scanner's own hostile samples (tests/pickles/pickle_kit.py): none converts,
    none writes anything, none creates its canary."""
    scanner_kit = pytest.importorskip("pickle_kit")  # put on sys.path by the scanner's conftest
    canary = tmp_path / "canary"
    work = tmp_path / "work"
    work.mkdir()
    assert len(scanner_kit.HOSTILE) > 20
    from tensorfile.convert._checkpoint import Mode, load_checkpoint
    from tensorfile.convert._extract import top_keys

    tried = 0
    for name, (build, _expected) in sorted(scanner_kit.HOSTILE.items()):
        src = work / "sample.bin"
        src.write_bytes(build(canary))
        with pytest.raises(ConversionError):
            convert(src, work / "out.safetensors")
        try:  # and --key with each top-level key the object stream has
            ck = load_checkpoint(src, Mode(salvage=True))
            ck.source.close()
            keys = top_keys(ck.graph)
        except ConversionError:
            keys = []
        for key in keys:
            tried += 1
            with pytest.raises(ConversionError):
                convert(src, work / "out.safetensors", key=key)
        assert sorted(p.name for p in work.iterdir()) == ["sample.bin"], name
    assert tried > 0
    assert not canary.exists()
