"""ONNX models: every tensor's external data must stay inside the model's folder.

An ONNX model is a protobuf ``ModelProto``, read here with the bounded wire
reader (:mod:`._protobuf`; the ``onnx`` package is not needed). A tensor
(``TensorProto``) may keep its bytes in another file: ``data_location =
EXTERNAL`` and ``external_data`` entries ``location``, ``offset``,
``length``. ``onnx.load`` and onnxruntime open ``location`` relative to the
model's folder, so a location that leaves it reads any file the loading
process can (CVE-2022-25882: ``..``; CVE-2024-27318: the check bypassed;
symbolic and hard links to files outside).

Tensors are found wherever ONNX keeps them: graph initializers and sparse
initializers, node attributes (``t``, ``tensors``, ``sparse_tensor(s)``), and
the graphs inside attributes (``If``/``Loop``/``Scan`` bodies), local
functions and training graphs, to a nesting depth of
:attr:`FormatLimits.max_depth`. Nodes of a domain other than ONNX's and
onnxruntime's own are noted (custom operators need a library the user
registers; the model cannot load one).

A location is ``dangerous`` when it is absolute (``/x``, ``\\x``, ``C:``),
has a ``..`` part, or resolves (through symbolic links) outside the folder;
``unknown`` when it is a hard link (another name for the same file may lie
anywhere) or not a regular file; ``error`` when it is missing, empty, holds a
NUL byte, or ``offset + length`` runs past the file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tensorfile._report import Finding, StreamReport, Verdict
from tensorfile.errors import MalformedModelError, ScanLimitError
from tensorfile.scan._base import Buf, FormatLimits, mapped, part
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

#: Operator domains of ONNX itself and of onnxruntime's built-in kernels.
STANDARD_DOMAINS: Final = frozenset({
    "", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
    "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
    "com.ms.internal.nhwc", "org.pytorch.aten",
})
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_DRIVE = re.compile(r"^[A-Za-z]:")

# Field numbers (onnx/onnx.proto3), by message.
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_OP, _NODE_ATTR, _NODE_DOMAIN = 4, 5, 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_FUNCTION_NODE = 7
_TRAINING_INIT, _TRAINING_ALGO = 1, 2
#: Fields a ModelProto has before its graph (ir_version, producer name and
#: version, domain, model version, doc string), for :meth:`OnnxAssessor.detect`.
_BEFORE_GRAPH: Final = frozenset({2, 3, 4, 5, 6})


class OnnxAssessor:
    """ONNX models: ``.onnx`` by name, or a protobuf that starts like a ModelProto."""

    format = "onnx"

    def detect(self, head: bytes, name: str) -> bool:
        if name.lower().endswith(".onnx"):
            return True
        found = prefix_fields(head)
        if len(found) < 2 or found[0].number != 1 or found[0].wire != VARINT:
            return False
        for f in found[1:]:
            if f.number == _MODEL_GRAPH:
                return f.wire == LEN
            if f.number not in _BEFORE_GRAPH:
                return False
        return False

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        with mapped(path) as buf:
            model = _Model(buf, limits, path.parent)
            model.read()
        return [part("graph", model.findings, notes=sorted(model.custom))]


class _Model:
    def __init__(self, buf: Buf, limits: FormatLimits, folder: Path) -> None:
        self.buf = buf
        self.limits = limits
        self.budget = Budget(limits.max_fields)
        self.folder = folder
        self.findings: list[Finding] = []
        self.custom: set[str] = set()
        self.checked: dict[str, list[Finding]] = {}

    def read(self) -> None:
        for f in fields(self.buf, 0, len(self.buf), self.budget):
            if f.number == _MODEL_GRAPH:
                self.graph(f, 1)
            elif f.number == _MODEL_FUNCTIONS:
                self.each(f, _FUNCTION_NODE, self.node, 1, "a function")
            elif f.number == _MODEL_TRAINING:
                start, end = message(f, "training info")
                for g in fields(self.buf, start, end, self.budget):
                    if g.number in (_TRAINING_INIT, _TRAINING_ALGO):
                        self.graph(g, 2)

    def deeper(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise ScanLimitError(f"ONNX: graphs nest deeper than {self.limits.max_depth}")

    def each(self, f: Field, number: int, visit: Callable[[Field, int], None], depth: int,
             what: str) -> None:
        self.deeper(depth)
        start, end = message(f, what)
        for g in fields(self.buf, start, end, self.budget):
            if g.number == number:
                visit(g, depth + 1)

    def graph(self, f: Field, depth: int) -> None:
        self.deeper(depth)
        start, end = message(f, "a graph")
        for g in fields(self.buf, start, end, self.budget):
            if g.number == _GRAPH_NODE:
                self.node(g, depth + 1)
            elif g.number == _GRAPH_INIT:
                self.tensor(g)
            elif g.number == _GRAPH_SPARSE_INIT:
                self.sparse(g)

    def node(self, f: Field, depth: int) -> None:
        self.deeper(depth)
        start, end = message(f, "a node")
        op = domain = ""
        for g in fields(self.buf, start, end, self.budget):
            if g.number == _NODE_OP:
                op = text(self.buf, g, "a node's op_type")
            elif g.number == _NODE_DOMAIN:
                domain = text(self.buf, g, "a node's domain")
            elif g.number == _NODE_ATTR:
                self.attribute(g, depth + 1)
        if domain not in STANDARD_DOMAINS and len(self.custom) < 1000:
            self.custom.add(f"{domain}.{op}")

    def attribute(self, f: Field, depth: int) -> None:
        self.deeper(depth)
        start, end = message(f, "an attribute")
        for g in fields(self.buf, start, end, self.budget):
            if g.number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(g)
            elif g.number in (_ATTR_SPARSE, _ATTR_SPARSES):
                self.sparse(g)
            elif g.number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(g, depth + 1)

    def sparse(self, f: Field) -> None:
        start, end = message(f, "a sparse tensor")
        for g in fields(self.buf, start, end, self.budget):
            if g.number in (_SPARSE_VALUES, _SPARSE_INDICES):
                self.tensor(g)

    def tensor(self, f: Field) -> None:
        start, end = message(f, "a tensor")
        name, external, entries = "", False, {}
        for g in fields(self.buf, start, end, self.budget):
            if g.number == _TENSOR_NAME:
                name = text(self.buf, g, "a tensor's name")
            elif g.number == _TENSOR_LOCATION and g.wire == VARINT:
                external = g.value == _EXTERNAL
            elif g.number == _TENSOR_EXTERNAL:
                key = value = ""
                s, e = message(g, "an external_data entry")
                for h in fields(self.buf, s, e, self.budget):
                    if h.number == 1:
                        key = text(self.buf, h, "an external_data key")
                    elif h.number == 2:
                        value = text(self.buf, h, "an external_data value")
                entries[key] = value
        if not external and not entries:
            return
        location = entries.get("location")
        if location is None:
            raise MalformedModelError(f"ONNX: tensor {name!r} keeps its data outside the model "
                                      "but names no location")
        offset, length = _number(entries, "offset", name), _number(entries, "length", name)
        key = f"{location}\0{offset}\0{length}"
        if key not in self.checked:
            if len(self.checked) >= self.limits.max_external:
                raise MalformedModelError(f"ONNX: more than {self.limits.max_external:,} "
                                          "external data entries")
            self.checked[key] = check_location(self.folder, location, offset, length, name)
            self.findings.extend(self.checked[key])


def _number(entries: dict[str, str], key: str, tensor: str) -> int | None:
    value = entries.get(key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise MalformedModelError(f"ONNX: tensor {tensor!r}: external data {key} {value!r} is "
                                  "not a number")
    return int(value)


def check_location(folder: Path, location: str, offset: int | None, length: int | None,
                   tensor: str) -> list[Finding]:
    """Findings for one external data location (none: a regular file inside ``folder``)."""
    def found(verdict: Verdict, why: str) -> list[Finding]:
        return [Finding(verdict, f"tensor {tensor!r}: external data {location!r} {why}",
                        global_name=location)]

    if not location or "\0" in location:
        return found(Verdict.ERROR, "is empty or holds a NUL byte")
    parts = re.split(r"[/\\]", location)
    if location[0] in "/\\" or _DRIVE.match(location):
        return found(Verdict.DANGEROUS, "is an absolute path: the loader reads any file")
    if ".." in parts:
        return found(Verdict.DANGEROUS, "climbs out of the model's folder with '..'")
    target = folder / location
    try:
        real = target.resolve(strict=True)
        root = folder.resolve(strict=True)
        st = os.stat(real)
    except (OSError, RuntimeError):
        return found(Verdict.ERROR, "does not exist (or cannot be resolved): the model "
                     "does not load")
    if not real.is_relative_to(root):
        return found(Verdict.DANGEROUS, f"resolves (through a symbolic link) to {real}, "
                     "outside the model's folder")
    if not stat.S_ISREG(st.st_mode):
        return found(Verdict.UNKNOWN, "is not a regular file (a folder, FIFO or device)")
    if st.st_nlink > 1:
        return found(Verdict.UNKNOWN, f"is a hard link ({st.st_nlink} names): another name "
                     "of the same file may lie outside the model's folder")
    end = (offset or 0) + (length or 0)
    if end > st.st_size:
        return found(Verdict.ERROR, f"is {st.st_size:,} bytes, but the tensor reads up to "
                     f"byte {end:,}")
    return []
