"""Routing by content, the not-assessed verdict and its exit code, npz and TorchScript."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from format_kit import scan_file

from tensorfile.pickles import FileReport, ScanReport, Skipped, Verdict
from tensorfile.scan import assessor_for

EVIL = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R."
ROOT = Path(__file__).resolve().parents[2]


def test_routing_is_by_content() -> None:
    assert assessor_for(b"GGUF\x03\x00\x00\x00", "x.bin").format == "gguf"  # type: ignore[union-attr]
    assert assessor_for(b"\x89HDF\r\n\x1a\n", "weights").format == "keras"  # type: ignore[union-attr]
    assert assessor_for(b"\x00" * 512 + b"\x89HDF\r\n\x1a\n", "w").format == "keras"  # type: ignore[union-attr]
    assert assessor_for(b'{"a": 1}', "config.json") is None
    assert assessor_for(b"PK\x03\x04" + bytes(26), "pytorch_model.bin") is None


def test_a_pickle_named_like_another_format_is_judged_as_a_pickle(tmp_path: Path) -> None:
    for name in ("model.onnx", "model.gguf", "saved_model.pb", "tokenizer_config.json"):
        (tmp_path / name).write_bytes(EVIL)
        report = scan_file(tmp_path / name)
        assert report.verdict is Verdict.DANGEROUS, (name, report)
        assert any("os.system" in (f.global_name or "") for s in report.streams
                   for f in s.findings), name


def test_every_assessor_that_claims_a_file_reads_it(tmp_path: Path) -> None:
    """A tokenizer config with a hostile template, named like an ONNX model:
    onnxruntime would open it by name and a chat-template reader by content,
    so both readings are in the report (the first claimant names the format)."""
    hostile = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    path = tmp_path / "model.onnx"
    path.write_text(json.dumps({"bos_token": "<s>", "chat_template": hostile}))
    report = scan_file(path)
    assert report.format == "onnx"
    assert report.verdict is Verdict.DANGEROUS, report.to_dict()
    assert any(s.verdict is Verdict.ERROR for s in report.streams)  # not an ONNX model
    assert any("__class__" in f.reason for _, f in report.findings)


def test_remotely_each_claimant_is_not_assessed() -> None:
    from tensorfile.scan.loaders import judge_remote

    head = json.dumps({"chat_template": "{{ x }}"}).encode()
    report = judge_remote("s3://b/model.onnx", "model.onnx", head,
                          FileReport("s3://b/model.onnx", "not-pickle", Verdict.SAFE))
    assert report.format == "onnx" and report.verdict is Verdict.NOT_ASSESSED
    assert [s.location for s in report.streams] == ["onnx", "chat-template"]


def test_not_assessed_ranks_below_incomplete_and_exits_2() -> None:
    na = FileReport("m.h5", "keras", Verdict.NOT_ASSESSED)
    ok = FileReport("a.json", "not-pickle", Verdict.SAFE)
    report = ScanReport([na, ok])
    assert report.verdict is Verdict.NOT_ASSESSED and report.exit_code == 2
    assert report.exit_code_allowing(not_assessed=True) == 0
    report.skipped.append(Skipped("link", "symlinked folder"))
    assert report.verdict is Verdict.INCOMPLETE
    assert report.exit_code_allowing(not_assessed=True) == 2
    bad = ScanReport([na, FileReport("x.pt", "pickle", Verdict.UNKNOWN)])
    assert bad.exit_code_allowing(not_assessed=True) == 1


def test_the_cli_flag(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pbtxt").write_text("saved_model_schema_version: 1\n")
    cmd = [sys.executable, "-c", "from tensorfile_cli.main import main; main()",
           "scan", str(tmp_path), "--json"]
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'cli'}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert run.returncode == 2
    assert json.loads(run.stdout)["result"]["verdict"] == "not-assessed"
    run = subprocess.run([*cmd, "--allow-not-assessed"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    out = json.loads(run.stdout)
    assert run.returncode == out["exit_code"] == out["result"]["exit_code"] == 0


def test_npz_members_are_read_as_npy(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    np.savez(tmp_path / "plain.npz", a=np.arange(4), b=np.ones((2, 2)))
    np.savez_compressed(tmp_path / "packed.npz", a=np.arange(4))
    np.savez(tmp_path / "objects.npz", a=np.array([{"k": 1}, "text"], dtype=object))
    for name in ("plain.npz", "packed.npz", "objects.npz"):
        assert scan_file(tmp_path / name).verdict is Verdict.SAFE, name
    # An object member whose pickle calls os.system (numpy.load(allow_pickle=True) runs it).
    import zipfile

    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (118 - len(header)) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + EVIL
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as z:
        np.save(buf := __import__("io").BytesIO(), np.arange(3))
        z.writestr("a.npy", buf.getvalue())  # a plain member first
        z.writestr("b.npy", npy)
    report = scan_file(tmp_path / "evil.npz")
    assert report.verdict is Verdict.DANGEROUS
    assert any(s.location.startswith("b.npy") for s in report.streams)


def test_torchscript_stays_dangerous(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "ts.pt"))
    assert scan_file(tmp_path / "ts.pt").verdict is Verdict.DANGEROUS
