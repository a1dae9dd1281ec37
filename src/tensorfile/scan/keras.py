"""Keras models: ``.keras`` archives (Keras 3) and ``.h5`` files (Keras 2), by their config.

What Keras runs while loading is named in the model's config (JSON):

* a ``Lambda`` layer (``class_name`` ``Lambda``) or a lambda used as an
  activation or any other function (``__lambda__``, ``function_type:
  lambda``) carries Python bytecode (``marshal``) that Keras runs:
  ``dangerous``;
* an object with a ``module`` outside Keras' own packages (``keras``,
  ``keras.*``, ``tf_keras.*``, ``tensorflow.keras.*``): Keras imports that
  module and looks the name up in it (CVE-2025-1550): ``dangerous`` when the
  name is a known gadget (the pickle scanner's tables: ``os.system``,
  ``builtins.eval``...), ``unknown`` otherwise; so is a custom
  ``registered_name`` (``package>Name``) and a ``TFOpLambda`` (calls the
  TensorFlow function its config names).

A file of plain Keras layers is ``safe``. ``.keras`` is a zip read by
:mod:`zipfile` as Keras reads it, its ``config.json`` read whole (at most
:attr:`FormatLimits.max_json` bytes); ``.h5`` needs ``h5py`` to read the
``model_config`` and ``training_config`` attributes of the root group: without
it the file is ``not-assessed``. An HDF5 file without a ``model_config`` holds
weights only (``load_weights``): ``safe``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Final

from tensorfile._format.strict_json import loads_strict
from tensorfile._picklevm.machine import GlobalRef
from tensorfile._picklevm.policy import classify_global
from tensorfile._report import Finding, StreamReport, Verdict
from tensorfile.errors import MalformedModelError, ScanLimitError, TensorfileError
from tensorfile.scan._base import FormatLimits, not_assessed, part

HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
#: Where an HDF5 superblock may start (after a user block of 512 * 2**n bytes).
_HDF5_OFFSETS: Final = (0, 512, 1024, 2048)
_ZIP_MAGIC: Final = b"PK\x03\x04"
#: Members Keras 3 writes first; their names sit in the first local header.
_KERAS_MEMBERS: Final = (b"metadata.json", b"config.json")
_KERAS_MODULES: Final = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
_LAMBDAS: Final = frozenset({"Lambda", "__lambda__"})
_TF_OP_LAMBDAS: Final = frozenset({"TFOpLambda", "SlicingOpLambda"})
_CONFIG_ATTRS: Final = ("model_config", "training_config")


class KerasAssessor:
    """``.keras`` zips (by name, or a zip whose first member is Keras' own) and HDF5 files."""

    format = "keras"

    def detect(self, head: bytes, name: str) -> bool:
        if is_hdf5(head):
            return True
        if not head.startswith(_ZIP_MAGIC):
            return False
        if name.lower().endswith(".keras"):
            return True
        name_len = int.from_bytes(head[26:28], "little")
        return head[30:30 + name_len] in _KERAS_MEMBERS

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        with open(path, "rb") as f:
            head = f.read(4096)
        if is_hdf5(head):
            return _assess_h5(path, limits)
        return _assess_zip(path, limits)


def is_hdf5(head: bytes) -> bool:
    """Whether ``head`` holds an HDF5 superblock signature where HDF5 looks for one."""
    return any(head[at:at + 8] == HDF5_MAGIC for at in _HDF5_OFFSETS)


def _assess_zip(path: Path, limits: FormatLimits) -> list[StreamReport]:
    try:
        with zipfile.ZipFile(path) as z:
            try:
                info = z.getinfo("config.json")
            except KeyError:
                raise MalformedModelError("Keras archive: no config.json (keras.models."
                                          "load_model refuses it)") from None
            if info.file_size > limits.max_json:
                raise ScanLimitError(f"Keras archive: config.json is {info.file_size:,} bytes "
                                     f"(the limit is {limits.max_json:,})")
            with z.open(info) as member:
                data = member.read(limits.max_json + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            EOFError) as exc:
        raise MalformedModelError(f"Keras archive: zipfile cannot read it "
                                  f"({type(exc).__name__})") from None
    if len(data) > limits.max_json:
        raise ScanLimitError(f"Keras archive: config.json inflates past {limits.max_json:,} bytes")
    return [part("config.json", check_config(_json(data, "config.json")))]


def _assess_h5(path: Path, limits: FormatLimits) -> list[StreamReport]:
    try:
        import h5py  # type: ignore[import-untyped]
    except ImportError:
        return [not_assessed("model_config", "an HDF5 file (Keras 2 .h5 models run their Lambda "
                             "layers) and h5py is not installed to read its model_config")]
    texts: dict[str, bytes] = {}
    try:
        with h5py.File(path, "r") as f:
            for attr in _CONFIG_ATTRS:
                if attr in f.attrs:
                    value = f.attrs[attr]
                    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                    if len(raw) > limits.max_json:
                        raise ScanLimitError(f"HDF5: {attr} is over {limits.max_json:,} bytes")
                    texts[attr] = raw
    except TensorfileError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, TypeError... on broken files
        raise MalformedModelError(f"HDF5: h5py cannot read it ({type(exc).__name__})") from None
    return [part(attr, check_config(_json(raw, attr))) for attr, raw in texts.items()] or [
        part("(weights only)", [])]


def _json(data: bytes, what: str) -> Any:
    try:
        return loads_strict(data, what, MalformedModelError)
    except RecursionError:
        raise ScanLimitError(f"{what} nests deeper than the JSON reader goes") from None


def check_config(config: Any) -> list[Finding]:
    """Findings for a Keras config (any JSON value): what loading it would run."""
    findings: list[Finding] = []
    seen: set[str] = set()

    def flag(verdict: Verdict, reason: str, name: str | None = None) -> None:
        if reason not in seen:
            seen.add(reason)
            findings.append(Finding(verdict, reason, global_name=name))

    pending: list[Any] = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        pending.extend(node.values())
        cls = node.get("class_name")
        inner = node.get("config")
        inner = inner if isinstance(inner, dict) else {}
        layer = inner.get("name") or node.get("name")
        label = f"{cls} {layer!r}" if layer else str(cls)
        if cls in _LAMBDAS or node.get("function_type") == "lambda":
            flag(Verdict.DANGEROUS, f"{label}: a lambda, whose Python bytecode (marshal) Keras "
                 "runs when it loads the model")
        elif cls in _TF_OP_LAMBDAS:
            fn = inner.get("function")
            flag(Verdict.UNKNOWN, f"{label}: calls the TensorFlow function {fn!r} its config "
                 "names", str(fn))
        module = node.get("module")
        if isinstance(module, str) and isinstance(cls, str):
            name = node.get("config") if cls == "function" else cls
            if not _keras_module(module):
                qual = f"{module}.{name}" if isinstance(name, str) else module
                verdict, why = classify_global(GlobalRef(module, str(name), "config", 0))
                if verdict is Verdict.SAFE:  # a torch allowlist entry means nothing to Keras
                    verdict, why = Verdict.UNKNOWN, "not on the allowlist"
                flag(Verdict.DANGEROUS if verdict is Verdict.DANGEROUS else Verdict.UNKNOWN,
                     f"{label}: Keras imports {qual} (a module outside Keras' own): {why}", qual)
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered and not (
                isinstance(module, str) and _keras_module(module)):
            flag(Verdict.UNKNOWN, f"{label}: custom object {registered!r}, code Keras looks up "
                 "outside its own registry", registered)
    return findings


def _keras_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in _KERAS_MODULES)

