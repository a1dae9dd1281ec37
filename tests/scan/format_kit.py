"""Builders for the format tests: protobuf fields by hand, Keras archives, scans."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from tensorfile.pickles import FileReport, scan


def scan_file(path: Path) -> FileReport:
    """The report of one file (the library call the CLI makes)."""
    (report,) = scan(path).files
    return report


def reasons(report: FileReport) -> list[str]:
    """Every finding's reason and every part's error, for assertions."""
    out = [f.reason for s in report.streams for f in s.findings]
    return out + [s.error for s in report.streams if s.error]


# -- protobuf wire format (what protoc-generated code writes) -------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_int(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def pb_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def node_def(name: str, op: str, *inputs: str) -> bytes:
    """A TensorFlow NodeDef (name 1, op 2, input 3)."""
    return pb_bytes(1, name) + pb_bytes(2, op) + b"".join(pb_bytes(3, i) for i in inputs)


def function_def(name: str, *nodes: bytes) -> bytes:
    """A FunctionDef: signature (OpDef name 1) 1, node_def 3."""
    return pb_bytes(1, pb_bytes(1, name)) + b"".join(pb_bytes(3, n) for n in nodes)


def saved_model(nodes: list[bytes], functions: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    """A SavedModel: schema version 1, one MetaGraphDef whose graph_def holds ``nodes``
    and a function library with ``functions``; a meta_info_def first, as TF writes it."""
    library = b"".join(pb_bytes(1, f) for f in functions)
    graph = b"".join(pb_bytes(1, n) for n in nodes) + (pb_bytes(2, library) if library else b"")
    meta_info = pb_bytes(1, pb_bytes(4, "serve"))  # tags
    meta_graph = pb_bytes(1, meta_info) + pb_bytes(2, graph)
    return pb_int(1, 1) + pb_bytes(2, meta_graph)


#: A SavedModel graph like tf.saved_model.save writes: serving ops and the saver,
#: whose file name comes from a placeholder.
PLAIN_GRAPH = [
    node_def("x", "Placeholder"),
    node_def("w", "VarHandleOp"),
    node_def("read", "ReadVariableOp", "w"),
    node_def("y", "MatMul", "x", "read"),
    node_def("saver_filename", "Placeholder"),
    node_def("StatefulPartitionedCall", "StatefulPartitionedCall", "saver_filename", "w"),
]
TRACED_SAVE = function_def(
    "__inference__traced_save_42",
    node_def("StringJoin", "StringJoin", "file_prefix", "Const"),
    node_def("ShardedFilename", "ShardedFilename", "StringJoin:output:0"),
    node_def("SaveV2", "SaveV2", "ShardedFilename:filename:0", "tensor_names", "slices"),
    node_def("MergeV2Checkpoints", "MergeV2Checkpoints", "Pack:output:0", "file_prefix"),
)


# -- Keras 3 archives ---------------------------------------------------------------

def _weights_h5() -> bytes:
    """A small real HDF5 weights file (h5py), as Keras keeps in the archive."""
    import io

    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.ones((2, 4), dtype=np.float32))
    return buf.getvalue()


def dense(name: str, activation: Any = "relu") -> dict[str, Any]:
    """A Dense layer as Keras 3 serializes it."""
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": name, "units": 4, "activation": activation,
                       "kernel_initializer": {"module": "keras.initializers",
                                              "class_name": "GlorotUniform",
                                              "config": {"seed": None},
                                              "registered_name": None}}}


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "layers": list(layers)}}


def keras_archive(path: Path, config: dict[str, Any], *, extra: dict[str, bytes] | None = None
                  ) -> Path:
    """A ``.keras`` file as Keras 3 writes it: metadata.json, config.json, weights."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1",
                                                "date_saved": "2026-12-07@06:00:00"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", _weights_h5())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path
