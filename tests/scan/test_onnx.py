"""ONNX: real models from the onnx package; external data must stay in the model's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from format_kit import pb_bytes, pb_int, reasons, scan_file

from tensorfile.errors import ScanError
from tensorfile.pickles import Verdict
from tensorfile.scan import FormatLimits
from tensorfile.scan.onnx import OnnxAssessor

onnx = pytest.importorskip("onnx")
np = pytest.importorskip("numpy")
from onnx import helper, numpy_helper  # noqa: E402


def model(*, location: str | None = None, domain: str = "", subgraph: bool = False
          ) -> onnx.ModelProto:
    """y = x + w (w an initializer, external at ``location``), optionally inside an If."""
    w = numpy_helper.from_array(np.arange(256, dtype=np.float32), "w")
    add = helper.make_node("Add", ["x", "w"], ["y"], domain=domain)
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [256])]
    out = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [256])]
    if subgraph:
        body = helper.make_graph([add], "then", [], out, [w])
        node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
        graph = helper.make_graph(
            [node], "g", [*inputs, helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
            out)
    else:
        graph = helper.make_graph([add], "g", inputs, out, [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(graph, opset_imports=opsets)
    # make_graph and make_model copy their parts: change the tensor where it ended up.
    target = (m.graph.node[0].attribute[0].g.initializer[0] if subgraph
              else m.graph.initializer[0])
    if location is not None:
        target.ClearField("raw_data")
        target.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "1024")):
            entry = target.external_data.add()
            entry.key, entry.value = key, value
    return m


def save(m: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path


def test_real_models_with_and_without_external_data_are_safe(tmp_path: Path) -> None:
    inline = save(model(), tmp_path / "inline" / "model.onnx")
    assert scan_file(inline).verdict is Verdict.SAFE
    # onnx's own writer puts the initializer in a file beside the model.
    (tmp_path / "ext").mkdir()
    onnx.save_model(model(), str(tmp_path / "ext" / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    report = scan_file(tmp_path / "ext" / "model.onnx")
    assert report.format == "onnx" and report.verdict is Verdict.SAFE, reasons(report)
    onnx.load(str(tmp_path / "ext" / "model.onnx"))  # the reference loader reads it too


def test_by_content_under_another_name(tmp_path: Path) -> None:
    report = scan_file(save(model(location="../secret"), tmp_path / "m" / "graph.bin"))
    assert report.format == "onnx" and report.verdict is Verdict.DANGEROUS


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin",
                                      "/etc/passwd", "\\\\server\\share\\x", "C:\\x.bin",
                                      "..\\secret.bin"])
def test_locations_out_of_the_folder_are_dangerous(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(1024))
    report = scan_file(save(model(location=location), tmp_path / "m" / "model.onnx"))
    assert report.verdict is Verdict.DANGEROUS, reasons(report)
    assert repr(location) in reasons(report)[0]


def test_a_symlink_out_is_dangerous_one_inside_is_not(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(1024))
    folder = tmp_path / "m"
    path = save(model(location="w.bin"), folder / "model.onnx")
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    report = scan_file(path)
    assert report.verdict is Verdict.DANGEROUS and "outside" in reasons(report)[0]
    (folder / "w.bin").unlink()
    (folder / "real.bin").write_bytes(bytes(1024))
    os.symlink("real.bin", folder / "w.bin")
    assert scan_file(path).verdict is Verdict.SAFE
    # A symlinked folder on the way out counts too.
    (folder / "w.bin").unlink()
    os.symlink(tmp_path, folder / "up")
    assert scan_file(save(model(location="up/secret.bin"), folder / "model.onnx")
                     ).verdict is Verdict.DANGEROUS


def test_a_hard_link_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(1024))
    path = save(model(location="w.bin"), tmp_path / "m" / "model.onnx")
    os.link(tmp_path / "secret.bin", tmp_path / "m" / "w.bin")
    report = scan_file(path)
    assert report.verdict is Verdict.UNKNOWN and "hard link" in reasons(report)[0]


def test_missing_or_short_external_data_is_an_error(tmp_path: Path) -> None:
    path = save(model(location="w.bin"), tmp_path / "m" / "model.onnx")
    assert scan_file(path).verdict is Verdict.ERROR
    (tmp_path / "m" / "w.bin").write_bytes(bytes(100))
    report = scan_file(path)
    assert report.verdict is Verdict.ERROR and "1,024" in reasons(report)[0]


def test_tensors_inside_subgraphs_are_found(tmp_path: Path) -> None:
    path = save(model(location="../x.bin", subgraph=True), tmp_path / "m" / "model.onnx")
    assert scan_file(path).verdict is Verdict.DANGEROUS


def test_custom_domains_are_noted(tmp_path: Path) -> None:
    report = scan_file(save(model(domain="com.example.ops"), tmp_path / "model.onnx"))
    assert report.verdict is Verdict.SAFE
    assert report.streams[0].globals == ["com.example.ops.Add"]


def test_truncations_and_broken_lengths_are_errors(tmp_path: Path) -> None:
    data = model(location="../x.bin").SerializeToString()
    path = tmp_path / "model.onnx"
    for n in range(1, len(data), 3):
        path.write_bytes(data[:n])
        try:
            OnnxAssessor().assess(path, FormatLimits())
        except ScanError:
            continue
        # A cut between two fields leaves a valid, smaller message.
        assert _is_prefix_model(data[:n]), n
    assert scan_file(path).verdict is Verdict.ERROR


def _is_prefix_model(data: bytes) -> bool:
    """A cut between two top-level fields leaves a valid (smaller) message."""
    try:
        onnx.ModelProto.FromString(data)
    except Exception:
        return False
    return True


def test_nesting_and_field_limits(tmp_path: Path) -> None:
    # Graphs nested in attributes past the depth limit.
    graph = pb_bytes(1, b"")  # an empty node
    for _ in range(15):
        attr = pb_bytes(6, graph)  # AttributeProto.g
        graph = pb_bytes(1, pb_bytes(5, attr))  # GraphProto.node -> NodeProto.attribute
    path = tmp_path / "deep.onnx"
    path.write_bytes(pb_int(1, 8) + pb_bytes(7, graph))
    parts = OnnxAssessor().assess(path, FormatLimits())
    assert parts[0].verdict is Verdict.SAFE
    with pytest.raises(Exception, match="nest deeper"):
        OnnxAssessor().assess(path, FormatLimits(max_depth=10))
    with pytest.raises(Exception, match="more fields"):
        OnnxAssessor().assess(path, FormatLimits(max_fields=20))
    assert scan_file(path).verdict is Verdict.SAFE
    # A group (wire type 3) or a length past the message: error, not a crash.
    path.write_bytes(pb_int(1, 8) + bytes([7 << 3 | 3]))
    assert scan_file(path).verdict is Verdict.ERROR
    path.write_bytes(pb_int(1, 8) + bytes([7 << 3 | 2, 0xFF, 0x01]))
    assert scan_file(path).verdict is Verdict.ERROR
