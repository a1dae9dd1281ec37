"""TensorFlow SavedModels, built field by field as TensorFlow's protobuf code writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_kit import (
    PLAIN_GRAPH,
    TRACED_SAVE,
    function_def,
    node_def,
    reasons,
    saved_model,
    scan_file,
)

from tensorfile.errors import ScanError
from tensorfile.pickles import Verdict
from tensorfile.scan import FormatLimits
from tensorfile.scan.savedmodel import SavedModelAssessor


def write(folder: Path, data: bytes, name: str = "saved_model.pb") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_a_plain_graph_with_its_saver_is_safe(tmp_path: Path) -> None:
    report = scan_file(write(tmp_path, saved_model(PLAIN_GRAPH, [TRACED_SAVE])))
    assert report.format == "savedmodel" and report.verdict is Verdict.SAFE, reasons(report)


@pytest.mark.parametrize(("node", "verdict"), [
    (node_def("r", "ReadFile", "path"), Verdict.DANGEROUS),
    (node_def("w", "WriteFile", "path", "contents"), Verdict.DANGEROUS),
    (node_def("m", "MatchingFiles", "pattern"), Verdict.DANGEROUS),
    (node_def("p", "PyFunc", "x"), Verdict.DANGEROUS),
    (node_def("e", "EagerPyFunc", "x"), Verdict.DANGEROUS),
    (node_def("d", "TextLineDataset", "names"), Verdict.UNKNOWN),
    (node_def("pr", "PrintV2", "x"), Verdict.UNKNOWN),
])
def test_file_and_python_ops(tmp_path: Path, node: bytes, verdict: Verdict) -> None:
    report = scan_file(write(tmp_path, saved_model([*PLAIN_GRAPH, node])))
    assert report.verdict is verdict, reasons(report)


def test_ops_inside_library_functions(tmp_path: Path) -> None:
    fn = function_def("__inference_serve_7", node_def("p", "PyFunc", "x"))
    report = scan_file(write(tmp_path, saved_model(PLAIN_GRAPH, [TRACED_SAVE, fn])))
    assert report.verdict is Verdict.DANGEROUS
    assert "function __inference_serve_7: node 'p' (PyFunc)" in reasons(report)[0]


def test_a_restore_from_a_fixed_path_is_dangerous(tmp_path: Path) -> None:
    nodes = [*PLAIN_GRAPH, node_def("prefix", "Const"),
             node_def("restore", "RestoreV2", "prefix:0", "names", "slices")]
    report = scan_file(write(tmp_path, saved_model(nodes)))
    assert report.verdict is Verdict.DANGEROUS and "fixed path" in reasons(report)[0]


def test_by_content_under_another_name(tmp_path: Path) -> None:
    data = saved_model([*PLAIN_GRAPH, node_def("r", "ReadFile", "p")])
    report = scan_file(write(tmp_path, data, "graph.bin"))
    assert report.format == "savedmodel" and report.verdict is Verdict.DANGEROUS


def test_the_text_form_is_not_assessed(tmp_path: Path) -> None:
    report = scan_file(write(tmp_path, b"saved_model_schema_version: 1\n", "saved_model.pbtxt"))
    assert report.verdict is Verdict.NOT_ASSESSED


def test_truncations_are_errors_or_smaller_models(tmp_path: Path) -> None:
    data = saved_model([*PLAIN_GRAPH, node_def("r", "ReadFile", "p")], [TRACED_SAVE])
    path = tmp_path / "saved_model.pb"
    for n in range(0, len(data)):
        path.write_bytes(data[:n])
        try:
            parts = SavedModelAssessor().assess(path, FormatLimits())
        except ScanError:
            continue
        # Only a cut between top-level fields parses; no meta graph is an error.
        assert n == len(data) or parts, n
    path.write_bytes(data[:-3])
    assert scan_file(path).verdict is Verdict.ERROR
    path.write_bytes(b"\x08\x01")  # a schema version and no meta graph
    assert "no meta graph" in reasons(scan_file(path))[0]
