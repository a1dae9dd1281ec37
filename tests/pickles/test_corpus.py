"""The shared picklescan corpus and the confusion table over every labelled sample.

The corpus sits in ``../shared/corpus/picklescan`` with ``LABELS.tsv``; the
corpus tests skip when it is absent. The confusion table also counts this
suite's own hostile samples and benign files (torch checkpoints when torch is
installed), prints itself, and fails on any hostile file called safe.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from pickle_kit import CORPUS, HOSTILE, benign_plain_pickles

from tensorfile.pickles import Verdict, scan

LABELS = CORPUS / "LABELS.tsv"
needs_corpus = pytest.mark.skipif(not LABELS.is_file(), reason="../shared corpus is absent")


def _labels() -> list[tuple[str, str]]:
    if not LABELS.is_file():
        return []
    with LABELS.open(newline="") as f:
        return [(r["path"], r["label"]) for r in csv.DictReader(f, delimiter="\t")]


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize(("path", "label"), _labels())
def test_corpus_file(path: str, label: str) -> None:
    report = scan(CORPUS / path)
    (file,) = report.files
    json.dumps(report.to_dict())  # the report always serialises
    if label == "hostile":
        assert file.verdict is not Verdict.SAFE
    elif label == "benign":
        assert file.verdict is Verdict.SAFE, [s.to_dict() for s in file.streams]
    elif file.format == "not-pickle":  # invalid: no unpickler gets past its first bytes
        assert file.verdict is Verdict.SAFE and not file.streams
        assert CORPUS.joinpath(path).read_bytes()[:1] != b"\x80"
    else:  # invalid / unreadable: a clear error, never safe
        assert file.verdict is Verdict.ERROR
        assert report.exit_code == 2


def _issue13_benign(folder: Path) -> list[Path]:
    """Files issue 13 found refused: a torch 0.4 / Python 2 checkpoint, object arrays."""
    from py2_kit import py2_checkpoint

    np = pytest.importorskip("numpy")
    out = [folder / "py2.pth", folder / "objects.npy"]
    out[0].write_bytes(py2_checkpoint({"w": ([1.0, 2.0], (2,)), "b": ([0.5], (1,))}))
    arrays = np.empty(2, dtype=object)
    arrays[0], arrays[1] = np.arange(3.0), np.ones((2, 2), np.int8)
    np.save(out[1], arrays, allow_pickle=True)
    return out


def test_confusion_table(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cases: list[tuple[str, Path]] = []
    for path, label in _labels():
        if label in ("hostile", "benign"):
            cases.append((label, CORPUS / path))
    for i, (build, _) in enumerate(HOSTILE.values()):
        p = tmp_path / f"hostile{i}.bin"
        p.write_bytes(build(tmp_path / "canary"))
        cases.append(("hostile", p))
    for name, data in benign_plain_pickles().items():
        (tmp_path / name).write_bytes(data)
        cases.append(("benign", tmp_path / name))
    try:
        torch_files = request.getfixturevalue("torch_checkpoints")
    except pytest.skip.Exception:
        torch_files = {}
    cases += [("benign", p) for p in torch_files.values()]
    cases += [("benign", p) for p in _issue13_benign(tmp_path)]

    table: Counter[tuple[str, bool]] = Counter()
    wrong = []
    for label, path in cases:
        safe = scan(path).verdict is Verdict.SAFE
        table[label, safe] += 1
        if safe != (label == "benign"):
            wrong.append((label, path.name))
    print("\nconfusion table (rows: label, columns: verdict)")
    print(f"{'':10}{'safe':>8}{'not safe':>10}")
    for label in ("hostile", "benign"):
        print(f"{label:10}{table[label, True]:>8}{table[label, False]:>10}")
    assert table["hostile", True] == 0, wrong
    assert table["benign", False] == 0, wrong
    assert table["hostile", False] >= len(HOSTILE)
