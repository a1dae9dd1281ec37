"""scan and inspect from the command line (in process and as a subprocess)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "picklescan"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A real torch checkpoint, made the way people make them."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # the same bytes every run
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A pickle that would call os.system (written as bytes; never loaded)."""
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    return path


@pytest.fixture
def unknown(tmp_path: Path) -> Path:
    """A pickle importing a harmless global that is not on the allowlist."""
    import fractions

    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(fractions.Fraction(1, 3), protocol=2))
    return path


def test_scan_safe_checkpoint(cli: Any, checkpoint: Path, json_of: Any) -> None:
    res = json_of(cli(["scan", str(checkpoint), "--json"]), "scan", 0)
    assert res["verdict"] == "safe"
    (f,) = res["files"]
    assert f["path"] == str(checkpoint) and f["format"] == "torch-zip"
    assert any("_rebuild_tensor_v2" in g for s in f["streams"] for g in s["globals"])
    human = cli(["scan", str(checkpoint)])
    assert human.code == 0 and f"{checkpoint}: safe" in human.stdout


def test_scan_dangerous(cli: Any, hostile: Path, checkpoint: Path, json_of: Any) -> None:
    res = json_of(cli(["scan", str(checkpoint), str(hostile), "--json"]), "scan", 1)
    verdicts = {f["path"]: f["verdict"] for f in res["files"]}
    assert verdicts == {str(checkpoint): "safe", str(hostile): "dangerous"}
    findings = [x for f in res["files"] for s in f["streams"] for x in s["findings"]]
    assert any(x["global"] == "os.system" for x in findings)
    human = cli(["scan", str(hostile)])
    assert human.code == 1
    assert f"{hostile}: dangerous" in human.stdout and "os.system" in human.stdout


def test_scan_unknown_global_is_a_finding(cli: Any, unknown: Path, json_of: Any) -> None:
    res = json_of(cli(["scan", str(unknown), "--json"]), "scan", 1)
    assert res["verdict"] == "unknown"
    assert "fractions.Fraction" in res["files"][0]["streams"][0]["globals"]


def test_scan_folder_recursively(cli: Any, tmp_path: Path, checkpoint: Path, hostile: Path, json_of: Any) -> None:
    res = json_of(cli(["scan", str(tmp_path), "--json"]), "scan", 1)
    assert {Path(f["path"]).name for f in res["files"]} == {checkpoint.name, hostile.name}


def test_scan_missing_file_could_not_scan(cli: Any, tmp_path: Path, json_of: Any) -> None:
    res = json_of(cli(["scan", str(tmp_path / "absent.bin"), "--json"]), "scan", 2)
    assert res["verdict"] == "error"
    r = cli(["scan", str(tmp_path / "absent.bin")])
    assert r.code == 2 and "error" in r.stdout


def test_scan_needs_a_path(cli: Any) -> None:
    assert cli(["scan"]).code == 2


def test_scan_quiet(cli: Any, hostile: Path) -> None:
    r = cli(["scan", str(hostile), "-q"])
    assert r.code == 1 and r.stdout == ""


@pytest.mark.corpus
def test_scan_corpus_never_calls_hostile_safe(shell: Any, json_of: Any) -> None:
    """The picklescan corpus through the installed script: no hostile file is safe."""
    labels_file = CORPUS / "LABELS.tsv"
    if not labels_file.exists():
        pytest.skip("../shared/corpus/picklescan is not present")
    labels = dict(
        line.split("\t") for line in labels_file.read_text().splitlines()[1:] if line.strip()
    )
    files = [str(CORPUS / p) for p in labels]
    r = shell(["scan", *files, "--json"])
    res = json_of(r, "scan", 1)
    by_path = {f["path"]: (f["verdict"], f["format"]) for f in res["files"]}
    for rel, label in labels.items():
        verdict, fmt = by_path[str(CORPUS / rel)]
        if label == "hostile":
            assert verdict != "safe", rel
        elif label in ("invalid", "unreadable"):  # or: no unpickler gets past its first bytes
            assert verdict != "safe" or fmt == "not-pickle", rel


# -- inspect ----------------------------------------------------------------------------
def test_inspect_safetensors(cli: Any, st_file: Path, json_of: Any) -> None:
    res = json_of(cli(["inspect", str(st_file), "--json"]), "inspect", 0)
    assert res["format"] == "safetensors"
    by_name = {t["name"]: t for t in res["tensors"]}
    assert by_name["encoder.weight"] == {
        "name": "encoder.weight",
        "dtype": "F32",
        "shape": [3, 4],
        "numel": 12,
        "nbytes": 48,
        "offset": by_name["encoder.weight"]["offset"],
        "end": by_name["encoder.weight"]["offset"] + 48,
    }
    assert by_name["step"]["shape"] == [] and by_name["step"]["nbytes"] == 8
    assert res["metadata"] == {"format": "pt", "note": "test"}
    assert res["totals"] == {"tensors": 2, "parameters": 13, "bytes": 56, "bytes_by_dtype": {"F32": 48, "I64": 8}}
    assert res["file_size"] == st_file.stat().st_size == res["data_offset"] + 56
    # The offsets are where the bytes really are.
    raw = st_file.read_bytes()
    w = by_name["encoder.weight"]
    import numpy as np

    assert np.frombuffer(raw[w["offset"] : w["end"]], np.float32).tolist() == list(range(12))


def test_inspect_human(cli: Any, st_file: Path) -> None:
    r = cli(["inspect", str(st_file)])
    assert r.code == 0
    for text in ("encoder.weight", "F32", "[3, 4]", "note", "test", "parameters", "13"):
        assert text in r.stdout


def test_inspect_many_tensors_prints_plain_rows(cli: Any, tmp_path: Path, json_of: Any) -> None:
    """Past 2,000 tensors the table is plain aligned text, written at once (a
    rich table of 143,000 rows took 15 minutes), names escaped; --json holds
    every row."""
    import numpy as np

    from tensorfile.numpy import save_file

    n = 3_000
    tensors = {f"t{i:04d}": np.full(1, i % 256, np.uint8) for i in range(n)}
    tensors["evil\nverified: all good"] = np.zeros(2, np.int16)
    path = tmp_path / "many.safetensors"
    save_file(tensors, path)
    r = cli(["inspect", str(path)])
    assert r.code == 0
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["name", "dtype", "shape", "bytes", "offset"]
    rows = [line.split() for line in lines[2 : 3 + n]]
    assert rows[0][:4] == ["evil\\nverified:", "all", "good", "I16"]  # escaped, one line
    assert ["t0007", "U8", "[1]", "1"] == rows[1 + 7][:4]
    assert not any(line.startswith("verified") for line in lines)
    res = json_of(cli(["inspect", str(path), "--json"]), "inspect", 0)
    assert len(res["tensors"]) == n + 1


def test_inspect_pickle_shows_the_scanner_view(cli: Any, checkpoint: Path, json_of: Any) -> None:
    res = json_of(cli(["inspect", str(checkpoint), "--json"]), "inspect", 0)
    assert res["format"] == "pickle" and res["scan"]["verdict"] == "safe"
    human = cli(["inspect", str(checkpoint)])
    assert human.code == 0
    assert "torch-zip" in human.stdout and "_rebuild_tensor_v2" in human.stdout
    assert "nothing was loaded" in human.stdout


def test_inspect_hostile_pickle_is_a_finding(cli: Any, hostile: Path, json_of: Any) -> None:
    res = json_of(cli(["inspect", str(hostile), "--json"]), "inspect", 1)
    assert res["scan"]["verdict"] == "dangerous"
    human = cli(["inspect", str(hostile)])
    assert human.code == 1 and "os.system" in human.stdout


@pytest.mark.parametrize(
    "content",
    [
        b"\x05\x00\x00\x00\x00\x00\x00\x00hello",  # a safetensors length, then no JSON
        b"hello world\n",  # text whose first byte is a pickle opcode (BINGET)
        b'{"hidden": 4}',  # a config file
    ],
)
def test_inspect_neither_safetensors_nor_pickle(
    cli: Any, tmp_path: Path, json_of: Any, error_line: Any, content: bytes
) -> None:
    """Not a checkpoint either: the safetensors error, not a scanner table."""
    bad = tmp_path / "notes.txt"
    bad.write_bytes(content)
    r = cli(["inspect", str(bad), "--json"])
    err = json_of(r, "inspect", 2)
    assert err["path"] == str(bad)
    import tensorfile.errors

    assert issubclass(getattr(tensorfile.errors, err["type"]), tensorfile.errors.FormatError)
    assert str(bad) in error_line(r, "inspect")


def test_inspect_missing_file(cli: Any, tmp_path: Path, error_line: Any, json_of: Any) -> None:
    gone = tmp_path / "gone.safetensors"
    r = cli(["inspect", str(gone), "--json"])
    err = json_of(r, "inspect", 2)
    assert err["type"] == "InputNotFoundError" and err["path"] == str(gone)
    assert "no such file or folder" in error_line(r, "inspect")  # one line, no stray traceback


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    """A model in three shards with an index, written by tensorfile.sharded."""
    import numpy as np

    from tensorfile.sharded import save_sharded

    folder = tmp_path / "sharded"
    tensors = {f"layers.{i}.weight": np.full((16, 16), i, dtype=np.float32) for i in range(5)}
    tensors["embed"] = np.zeros((100,), dtype=np.float16)
    save_sharded(tensors, folder, max_shard_size=2048, metadata={"format": "np"})
    return folder


def test_inspect_sharded_model(cli: Any, sharded: Path, json_of: Any) -> None:
    from tensorfile.sharded import open_sharded

    index = sharded / "model.safetensors.index.json"
    for target in (sharded, index):
        res = json_of(cli(["inspect", str(target), "--json"]), "inspect", 0)
        assert res["format"] == "sharded" and res["index"] == str(index)
        assert res["metadata"] == {"format": "np"}
        with open_sharded(sharded) as model:
            shard_files = model.index.shard_files
            assert {t["name"]: t["shard"] for t in res["tensors"]} == dict(model.index.weight_map)
        assert [s["file"] for s in res["shards"]] == shard_files and len(shard_files) >= 3
        assert [s["file_size"] for s in res["shards"]] == [(sharded / f).stat().st_size for f in shard_files]
        assert sum(s["tensors"] for s in res["shards"]) == 6
        assert res["totals"] == {"tensors": 6, "parameters": 5 * 256 + 100, "bytes": 5 * 1024 + 200,
                                 "bytes_by_dtype": {"F32": 5 * 1024, "F16": 200}, "shards": len(shard_files)}
        assert res["declared_total_size"] == 5 * 1024 + 200
    human = cli(["inspect", str(sharded)])
    assert human.code == 0
    assert f"6 tensors in {len(shard_files)} shards" in human.stdout
    for text in ("layers.4.weight", shard_files[-1], "F16", str(index)):
        assert text in human.stdout


def test_inspect_folder_with_one_file(cli: Any, st_file: Path, json_of: Any) -> None:
    res = json_of(cli(["inspect", str(st_file.parent), "--json"]), "inspect", 0)
    assert res["format"] == "sharded" and res["index"] is None
    assert [s["file"] for s in res["shards"]] == [st_file.name]
    assert res["totals"]["tensors"] == 2 and res["totals"]["shards"] == 1


def test_inspect_sharded_model_whose_index_disagrees(
    cli: Any, sharded: Path, json_of: Any, error_line: Any
) -> None:
    """An index naming a tensor its shard does not hold: an error naming it, exit 2."""
    import json

    index = sharded / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["ghost"] = doc["weight_map"]["embed"]
    index.write_text(json.dumps(doc))
    r = cli(["inspect", str(sharded), "--json"])
    err = json_of(r, "inspect", 2)
    assert err["type"] == "ShardIndexError" and "ghost" in err["message"]
    line = error_line(cli(["inspect", str(sharded)]), "inspect")
    assert "ghost" in line and "index.json that matches its shards" in line
    assert "pickle" not in line  # not the hint for a file that is not safetensors
