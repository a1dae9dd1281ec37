"""TensorFlow SavedModels (``saved_model.pb``): the ops a loaded graph can run.

A SavedModel is a protobuf ``SavedModel`` (``saved_model_schema_version``,
then ``meta_graphs``), read with the bounded wire reader
(:mod:`._protobuf`). Its graph's ``NodeDef`` s and the ``NodeDef`` s of its
function library name the ops that run when a signature or restored
function is called:

* Python ops (``PyFunc``, ``PyFuncStateless``, ``EagerPyFunc``) call a
  Python function of the loading process: ``dangerous``;
* file-system ops (``ReadFile``, ``WriteFile``, ``MatchingFiles``,
  ``ImmutableConst``, summary file writers) read, write or list any path:
  ``dangerous``; ops that read or write files named by their inputs
  (dataset readers, ``PrintV2`` to a file, ``Save``/``Restore`` variants)
  are ``unknown`` unless, for ``Save``/``Restore``, the path comes from the
  caller (a placeholder or a function argument, as in the saver every
  SavedModel has): one fixed in a ``Const`` node names a file the model
  chooses: ``dangerous``.

The text form (``saved_model.pbtxt``) is ``not-assessed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tensorfile._report import Finding, StreamReport, Verdict
from tensorfile.errors import MalformedModelError
from tensorfile.scan._base import Buf, FormatLimits, mapped, not_assessed, part
from tensorfile.scan._protobuf import (
    LEN,
    VARINT,
    Budget,
    Field,
    fields,
    message,
    prefix_fields,
    text,
)

PYTHON_OPS: Final = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
FILE_OPS: Final = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "CreateSummaryFileWriter",
    "CreateSummaryDbWriter", "WriteAudioSummary", "LoadAndRemapMatrix",
})
#: Ops that touch files named by their inputs; harmless when a caller feeds the name.
FILE_INPUT_OPS: Final = frozenset({
    "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "LoadDataset", "SaveDataset",
    "SaveDatasetV2", "SnapshotDataset", "SnapshotDatasetV2", "PrintV2", "WholeFileReader",
    "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "ReaderReadV2", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "DebugIdentityV2", "DebugIdentityV3",
})
SAVER_OPS: Final = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2",
                              "RestoreSlice", "MergeV2Checkpoints"})
_NAME = "saved_model.pb"
_TEXT_NAME = "saved_model.pbtxt"
# Field numbers (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto,
# framework/graph.proto, node_def.proto, function.proto).
_SM_META_GRAPHS = 2
_MG_GRAPH_DEF = 2
_GRAPH_NODE, _GRAPH_LIBRARY = 1, 2
_LIBRARY_FUNCTION = 1
_FUNCTION_SIGNATURE, _FUNCTION_NODE_DEF = 1, 3
_NODE_NAME, _NODE_OP, _NODE_INPUT = 1, 2, 3
_OPDEF_NAME = 1


class SavedModelAssessor:
    """``saved_model.pb`` (by name, or a protobuf that starts like a SavedModel) and its text form."""

    format = "savedmodel"

    def detect(self, head: bytes, name: str) -> bool:
        if name in (_NAME, _TEXT_NAME):
            return True
        found = prefix_fields(head, 2)
        # schema version (a small varint), then a MetaGraphDef that opens with
        # its meta_info_def (1) or graph_def (2).
        return (len(found) == 2 and found[0].number == 1 and found[0].wire == VARINT
                and found[0].value < 16 and found[1].number == _SM_META_GRAPHS
                and found[1].wire == LEN and found[1].end > found[1].start
                and head[found[1].start] in (0x0A, 0x12))

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        if path.name == _TEXT_NAME:
            return [not_assessed("saved_model.pbtxt", "a SavedModel in protobuf text form: "
                                 "its ops are not read")]
        with mapped(path) as buf:
            return _read(buf, limits)


def _read(buf: Buf, limits: FormatLimits) -> list[StreamReport]:
    budget = Budget(limits.max_fields)
    parts: list[StreamReport] = []
    graphs = 0
    for f in fields(buf, 0, len(buf), budget):
        if f.number != _SM_META_GRAPHS:
            continue
        graphs += 1
        start, end = message(f, "a MetaGraphDef")
        findings: list[Finding] = []
        for g in fields(buf, start, end, budget):
            if g.number == _MG_GRAPH_DEF:
                _graph(buf, g, budget, findings)
        parts.append(part(f"meta_graph #{graphs}", findings))
    if not parts:
        raise MalformedModelError("SavedModel: no meta graph (tf.saved_model.load refuses it)")
    return parts


def _graph(buf: Buf, f: Field, budget: Budget, findings: list[Finding]) -> None:
    start, end = message(f, "a GraphDef")
    nodes: list[tuple[str, str, list[str]]] = []
    for g in fields(buf, start, end, budget):
        if g.number == _GRAPH_NODE:
            nodes.append(_node(buf, g, budget))
        elif g.number == _GRAPH_LIBRARY:
            s, e = message(g, "a function library")
            for h in fields(buf, s, e, budget):
                if h.number == _LIBRARY_FUNCTION:
                    _function(buf, h, budget, findings)
    _judge("graph", nodes, findings)


def _function(buf: Buf, f: Field, budget: Budget, findings: list[Finding]) -> None:
    start, end = message(f, "a FunctionDef")
    name = "function"
    nodes: list[tuple[str, str, list[str]]] = []
    for g in fields(buf, start, end, budget):
        if g.number == _FUNCTION_SIGNATURE:
            s, e = message(g, "an OpDef")
            for h in fields(buf, s, e, budget):
                if h.number == _OPDEF_NAME:
                    name = f"function {text(buf, h, 'a function name')}"
        elif g.number == _FUNCTION_NODE_DEF:
            nodes.append(_node(buf, g, budget))
    _judge(name, nodes, findings)


def _node(buf: Buf, f: Field, budget: Budget) -> tuple[str, str, list[str]]:
    start, end = message(f, "a NodeDef")
    name = op = ""
    inputs: list[str] = []
    for g in fields(buf, start, end, budget):
        if g.number == _NODE_NAME:
            name = text(buf, g, "a node name")
        elif g.number == _NODE_OP:
            op = text(buf, g, "a node's op")
        elif g.number == _NODE_INPUT and len(inputs) < 4:
            inputs.append(text(buf, g, "a node input"))
    return name, op, inputs


def _judge(scope: str, nodes: list[tuple[str, str, list[str]]], findings: list[Finding]) -> None:
    """Findings for the nodes of one graph or function (inputs name nodes of the same scope)."""
    ops = {name: op for name, op, _ in nodes}
    for name, op, inputs in nodes:
        where = f"{scope}: node {name!r} ({op})"
        if op in PYTHON_OPS:
            findings.append(Finding(Verdict.DANGEROUS, f"{where} calls a Python function of the "
                                    "loading process", global_name=op))
        elif op in FILE_OPS:
            findings.append(Finding(Verdict.DANGEROUS, f"{where} reads, writes or lists files "
                                    "at a path the graph computes", global_name=op))
        elif op in FILE_INPUT_OPS:
            findings.append(Finding(Verdict.UNKNOWN, f"{where} touches files named by its "
                                    "inputs", global_name=op))
        elif op in SAVER_OPS:
            source = inputs[0].lstrip("^").split(":")[0] if inputs else ""
            if ops.get(source) == "Const":
                findings.append(Finding(Verdict.DANGEROUS, f"{where} reads or writes the fixed "
                                        f"path in Const node {source!r}", global_name=op))
