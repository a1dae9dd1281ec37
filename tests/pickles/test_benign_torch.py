"""Checkpoints written by torch.save in every layout torch uses all scan safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfile.pickles import Verdict, scan


def test_every_torch_checkpoint_is_safe(torch_checkpoints: dict[str, Path]) -> None:
    report = scan(list(torch_checkpoints.values()))
    bad = {f.path: [s.to_dict() for s in f.streams if s.verdict is not Verdict.SAFE]
           for f in report.files if f.verdict is not Verdict.SAFE}
    assert not bad
    assert report.exit_code == 0


@pytest.mark.parametrize(("name", "fmt"), [
    ("dtypes_zip_p2.pt", "torch-zip"), ("training_zip_p5.pt", "torch-zip"),
    ("dtypes_legacy_p2.pt", "torch-legacy"), ("training_legacy_p4.pt", "torch-legacy"),
    ("pickle_dumps_tensor.pkl", "pickle"),
])
def test_formats_are_detected_by_content(torch_checkpoints: dict[str, Path], name: str,
                                         fmt: str, tmp_path: Path) -> None:
    renamed = tmp_path / "weights.txt"  # the name says nothing
    renamed.write_bytes(torch_checkpoints[name].read_bytes())
    (file,) = scan(renamed).files
    assert file.format == fmt
    assert file.verdict is Verdict.SAFE


def test_legacy_records_are_walked_not_read(torch_checkpoints: dict[str, Path]) -> None:
    (file,) = scan(torch_checkpoints["training_legacy_p2.pt"]).files
    parts = [s.location for s in file.streams]
    assert parts[:5] == ["(file)", "(protocol)", "(sys_info)", "(objects)", "(storage keys)"]


def test_globals_are_listed(torch_checkpoints: dict[str, Path]) -> None:
    (file,) = scan(torch_checkpoints["training_zip_p2.pt"]).files
    names = {g for s in file.streams for g in s.globals}
    assert {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter"} <= names
    assert any(n.startswith("numpy") for n in names)


def test_nested_pickle_dumps_stream_is_scanned(torch_checkpoints: dict[str, Path]) -> None:
    (file,) = scan(torch_checkpoints["pickle_dumps_tensor.pkl"]).files
    assert any("_load_from_bytes@" in s.location for s in file.streams)
