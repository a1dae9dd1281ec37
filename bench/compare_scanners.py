"""Scanner comparison: ``tensorfile scan`` beside modelaudit, modelscan, picklescan and fickling.

    python bench/compare_scanners.py [--anchors DIR] [--json OUT] [--timeout 120]

Builds one corpus in a temporary folder, one file (or model folder) per case
of issue 27's classes, hostile and benign, with the same builders the tests
use (tests/pickles, tests/scan and fuzz/: one definition of each vector), and runs
every scanner's own command line on each case as a fresh process:

    tensorfile scan PATH          exit 0: safe
    picklescan -p PATH            exit 0: no dangerous import found
    modelscan -p PATH             exit 0: no issue found
    fickling --check-safety PATH  exit 0: not known to be unsafe
    modelaudit scan PATH          exit 0: no issue found

A hostile case is *caught* when the tool exits non-zero (for tools that report
scan errors with their own exit code, an error is shown as ``error``); it is
*missed* when the tool exits 0. A benign case is ``ok`` on exit 0 and a
``false alarm`` otherwise. The anchors are looked up in ``--anchors``
(a venv's ``bin``; they pull dependencies, such as gcsfs for modelaudit,
that conflict with tensorfile's own test environment) and then on PATH;
a tool that is not installed is shown as ``absent``. The corpus never runs:
nothing here loads a file.
"""

from __future__ import annotations

import argparse
import bz2
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "pickles"), str(REPO / "tests" / "scan"), str(REPO / "fuzz")]

import numpy as np  # noqa: E402
import pickle_kit as pk  # noqa: E402
from fuzz_loaders import safetensors_polyglot  # noqa: E402

CANARY = Path("/tmp/tensorfile-compare-canary")  # never created: nothing is loaded


def _write(data: bytes, name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path
    return build


def _payload() -> bytes:
    return pk.os_system(CANARY)


def _zf(data: bytes) -> bytes:  # joblib < 0.10: 'ZF', a hex length, zlib data
    return b"ZF" + f"{len(data):#x}".ljust(19).encode() + zlib.compress(data)


def _frame_past_eof() -> bytes:
    import struct
    body = (pk.proto(2)[2:] + pk.call(pk.glob("os", "system"), pk.text(pk.command(CANARY)))
            + pk.STOP)
    return b"\x80\x04\x95" + struct.pack("<Q", len(body) + 1000) + body


def _inst_at_eof() -> bytes:
    return b"(" + pk.string0(pk.command(CANARY)) + b"ios\nsystemX"


def _hash_bomb() -> bytes:
    data = pk.proto(2) + b"N" + pk.put(0)
    for i in range(40):
        data += pk.get(i) + pk.get(i) + b"\x86" + pk.put(i + 1)
    return data + b"0}" + pk.get(40) + b"N" + b"s" + pk.STOP


def _npy_header_bomb() -> bytes:
    import struct
    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': ("
              + "1, " * ((16 << 20) // 3) + "), }\n").encode()
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header


RECONSTRUCT_BOMB = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                    b"\x8a\x05\x00\x00\x00\x00\x04\x85C\x01b\x87R.")


def _joblib(obj_factory: Callable[[], object], compress: object) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        import joblib
        path = folder / "model.joblib"
        joblib.dump(obj_factory(), path, compress=compress)
        return path
    return build


def _gguf(template: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from test_gguf import write_gguf
        return write_gguf(folder / "model.gguf", template)
    return build


def _onnx(location: str | None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        import onnx
        from test_onnx import model, save
        if location is None:
            m = model()
            onnx.save_model(m, str(folder / "model.onnx"), save_as_external_data=True,
                            location="weights.bin", size_threshold=0)
            return folder
        return save(model(location=location), folder / "model.onnx")
    return build


def _keras(hostile: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from format_kit import dense, keras_archive, sequential
        from test_keras import lambda_layer
        layers = [dense("a"), lambda_layer()] if hostile else [dense("a"), dense("b")]
        return keras_archive(folder / "model.keras", sequential(*layers))  # type: ignore[arg-type]
    return build


def _savedmodel(hostile: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from format_kit import PLAIN_GRAPH, node_def, saved_model
        nodes = [*PLAIN_GRAPH, *([node_def("r", "ReadFile", "p")] if hostile else [])]
        (folder / "sm").mkdir()
        (folder / "sm" / "saved_model.pb").write_bytes(saved_model(nodes))
        return folder / "sm"
    return build


def _tokenizer(template: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / "tokenizer_config.json"
        path.write_text(json.dumps({"bos_token": "<s>", "chat_template": template}))
        return path
    return build


def _torch_state_dict(folder: Path) -> Path:
    import torch
    path = folder / "pytorch_model.bin"
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}, path)
    return path


def _npz(folder: Path) -> Path:
    path = folder / "arrays.npz"
    np.savez(path, a=np.arange(5), b=np.ones((2, 2), dtype=np.float32))
    return path


def _safetensors(folder: Path) -> Path:
    import tensorfile
    path = folder / "model.safetensors"
    tensorfile.save_file({"w": np.arange(6, dtype=np.float32)}, path)
    return path


RCE_TEMPLATE = ("{{ self.__init__.__globals__.__builtins__.__import__('os')"
                ".system('touch CANARY') }}")
PLAIN_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n'"
                  " + message['content'] | trim + '<|im_end|>\\n' }}{%- endfor %}")


def _arrays() -> object:
    return {"w": np.arange(6, dtype="<f4").reshape(2, 3), "n": [1, "x", None]}


#: (class, case) -> (hostile, builder)
CASES: dict[tuple[str, str], tuple[bool, Callable[[Path], Path]]] = {
    ("1 joblib compression", "zlib"): (True, _write(zlib.compress(_payload()), "m.pkl")),
    ("1 joblib compression", "lzma alone"):
        (True, _write(lzma.compress(_payload(), format=lzma.FORMAT_ALONE), "m.pkl")),
    ("1 joblib compression", "xz"): (True, _write(lzma.compress(_payload()), "m.pkl")),
    ("1 joblib compression", "bz2"): (True, _write(bz2.compress(_payload()), "m.pkl")),
    ("1 joblib compression", "ZF (joblib < 0.10)"): (True, _write(_zf(_payload()), "m.pkl")),
    ("2 pure-Python unpickler", "FRAME past the end"):
        (True, _write(_frame_past_eof(), "model.bin")),
    ("2 pure-Python unpickler", "INST at the end"): (True, _write(_inst_at_eof(), "model.bin")),
    ("3 safetensors polyglot", "os.system in a tensor"):
        (True, _write(safetensors_polyglot(_payload()), "model.safetensors")),
    ("4 resource bomb", "shared tuples as dict keys"): (True, _write(_hash_bomb(), "m.pkl")),
    ("4 resource bomb", "_reconstruct 16 GiB shape"): (True, _write(RECONSTRUCT_BOMB, "m.pkl")),
    ("4 resource bomb", ".npy 16 MiB header"): (True, _write(_npy_header_bomb(), "m.npy")),
    ("5 other formats", "GGUF template RCE"): (True, _gguf(RCE_TEMPLATE)),
    ("5 other formats", "ONNX external ../"): (True, _onnx("../../etc/passwd")),
    ("5 other formats", "ONNX external /abs"): (True, _onnx("/etc/passwd")),
    ("5 other formats", "Keras 3 Lambda"): (True, _keras(True)),
    ("5 other formats", "SavedModel ReadFile"): (True, _savedmodel(True)),
    ("5 other formats", "tokenizer template"): (True, _tokenizer(RCE_TEMPLATE)),
    ("benign", "joblib.dump arrays"): (False, _joblib(_arrays, 0)),
    ("benign", "joblib.dump arrays zlib"): (False, _joblib(_arrays, "zlib")),
    ("benign", "npz"): (False, _npz),
    ("benign", "torch.save state dict"): (False, _torch_state_dict),
    ("benign", "safetensors"): (False, _safetensors),
    ("benign", "GGUF ChatML"): (False, _gguf(PLAIN_TEMPLATE)),
    ("benign", "ONNX external data"): (False, _onnx(None)),
    ("benign", "Keras 3 Dense"): (False, _keras(False)),
    ("benign", "SavedModel plain"): (False, _savedmodel(False)),
    ("benign", "tokenizer template"): (False, _tokenizer(PLAIN_TEMPLATE)),
}

#: tool -> (command before the path, exit codes that mean "scan error", not a finding)
TOOLS: dict[str, tuple[list[str], set[int]]] = {
    "tensorfile": ([sys.executable, "-m", "tensorfile_cli", "scan"], set()),
    "modelaudit": (["modelaudit", "scan"], {2}),
    "modelscan": (["modelscan", "-p"], {2, 3, 4}),
    "picklescan": (["picklescan", "-p"], {2}),
    "fickling": (["fickling", "--check-safety"], set()),
}


def _resolve(cmd: list[str], anchors: Path | None) -> list[str] | None:
    if cmd[0] == sys.executable:
        return cmd
    for folder in ([anchors] if anchors else []):
        if (folder / cmd[0]).exists():
            return [str(folder / cmd[0]), *cmd[1:]]
    found = shutil.which(cmd[0])
    return [found, *cmd[1:]] if found else None


def _judge(hostile: bool, rc: int | None, errors: set[int]) -> str:
    if rc is None:
        return "timeout"
    if rc in errors:
        return "error"
    if hostile:
        return "caught" if rc else "MISSED"
    return "false alarm" if rc else "ok"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=Path, help="a bin folder holding the anchor tools")
    ap.add_argument("--json", type=Path, help="write the table here as JSON")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    tools = {name: _resolve(cmd, args.anchors) for name, (cmd, _) in TOOLS.items()}
    rows: list[dict[str, object]] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO / "cli"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        for i, ((klass, case), (hostile, build)) in enumerate(CASES.items()):
            folder = Path(tmp) / f"case{i}"
            folder.mkdir()
            target = build(folder)
            row: dict[str, object] = {"class": klass, "case": case, "hostile": hostile}
            for name, cmd in tools.items():
                if cmd is None:
                    row[name] = "absent"
                    continue
                t = time.monotonic()
                try:
                    rc: int | None = subprocess.run(
                        [*cmd, str(target)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, timeout=args.timeout, env=env,
                        cwd=folder).returncode
                except subprocess.TimeoutExpired:
                    rc = None
                row[name] = _judge(hostile, rc, TOOLS[name][1])
                row[f"{name}_s"] = round(time.monotonic() - t, 2)
            rows.append(row)
            print(f"{klass:26} {case:28} " + " ".join(
                f"{row[n]!s:>11}" for n in tools), flush=True)
    print()
    for name in tools:
        hostile_rows = [r for r in rows if r["hostile"]]
        caught = sum(r[name] == "caught" for r in hostile_rows)
        alarms = sum(r[name] == "false alarm" for r in rows if not r["hostile"])
        print(f"{name:11} caught {caught}/{len(hostile_rows)} hostile, "
              f"{alarms}/{len(rows) - len(hostile_rows)} false alarms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
