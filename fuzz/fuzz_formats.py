"""Fuzz the format assessors' parsers: GGUF, the protobuf reader (ONNX, SavedModel), Keras
configs and the chat template check.

The input's first byte picks the parser, the rest is the file. Contract
checked on every input:

1. Only :class:`~tensorfile.errors.ScanError` escapes a parser (``read_gguf``
   never raises: a break is an ``error`` part), and ``tensorfile.pickles.scan``
   of the same bytes named like the format never raises and never unpickles.
2. Parts are well formed: a known verdict, ``safe`` only without findings
   or error; ``to_dict()`` is JSON.
3. The same bytes give the same result.
"""

from __future__ import annotations

import json

import fuzzlib

with fuzzlib.instrumented(__name__ == "__main__"):
    from tensorfile.errors import ScanError
    from tensorfile.pickles import StreamReport, Verdict, scan
    from tensorfile.scan import FormatLimits
    from tensorfile.scan._jinja import check_template
    from tensorfile.scan.gguf import read_gguf
    from tensorfile.scan.keras import check_config
    from tensorfile.scan.onnx import OnnxAssessor
    from tensorfile.scan.savedmodel import SavedModelAssessor

#: Small limits so the fuzzer reaches them.
LIMITS = FormatLimits(max_kv=64, max_tensors=64, max_array=256, max_name=256,
                      max_template=4096, max_json=1 << 16, max_depth=8, max_fields=4096)
NAMES = ("model.gguf", "model.onnx", "saved_model.pb", "config.json", "chat_template.jinja")
_scratch: dict[str, fuzzlib.Scratch] = {}


def _file(data: bytes, name: str) -> str:
    if name not in _scratch:
        _scratch[name] = fuzzlib.Scratch(name)
    return str(_scratch[name].write(data))


def _check(parts: list[StreamReport]) -> str:
    for p in parts:
        assert isinstance(p.verdict, Verdict), p.verdict
        if p.verdict is Verdict.SAFE:
            assert not p.findings and p.error is None, p
    return json.dumps([p.to_dict() for p in parts])


def run(data: bytes) -> str:
    if not data:
        return ""
    which, body = data[0] % len(NAMES), data[1:]
    name = NAMES[which]
    from pathlib import Path

    path = Path(_file(body, name))
    result = ""
    try:
        if which == 0:
            result = _check(read_gguf(body, LIMITS))
        elif which == 1:
            result = _check(OnnxAssessor().assess(path, LIMITS))
        elif which == 2:
            result = _check(SavedModelAssessor().assess(path, LIMITS))
        elif which == 3:
            try:
                config = json.loads(body)
            except (ValueError, RecursionError):
                config = None
            result = repr(check_config(config))
        else:
            result = repr(check_template(body.decode("utf-8", "replace"), name))
    except ScanError as exc:
        result = f"error: {exc}"
    with fuzzlib.no_unpickling():
        report = scan(path)
    json.dumps(report.to_dict())
    return result


def TestOneInput(data: bytes) -> None:
    first = run(data)
    assert run(data) == first, "the same bytes gave different results"


if __name__ == "__main__":
    fuzzlib.main(TestOneInput, "formats")
