"""``tensorfile scan`` on model folders: nothing skipped silently, non-pickles are not failures.

Issue 13: ``tensorfile scan MODEL_DIR/*`` exits 0 on a clean Hugging Face
folder; a symlinked sub-folder, a FIFO or a broken symlink is listed as
skipped and makes the scan ``incomplete`` (exit 2) unless followed; a
``.safetensors`` file is checked by the format core.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile.numpy import save_file

STATE_DICT = (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8, "architectures": ["Bert"]}\n')
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A model\n\nThis model ...\n")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"vocab": {}}}')
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    save_file({"w": np.ones((4, 4), np.float32)}, folder / "model.safetensors")
    return folder


def test_scan_model_dir_star_exits_0(cli: Any, json_of: Any, model_dir: Path) -> None:
    paths = sorted(str(p) for p in model_dir.iterdir())
    res = json_of(cli(["scan", *paths, "--json"]), "scan", 0)
    formats = {Path(f["path"]).name: (f["format"], f["verdict"]) for f in res["files"]}
    assert formats == {
        ".gitattributes": ("not-pickle", "safe"),
        "README.md": ("not-pickle", "safe"),
        "config.json": ("not-pickle", "safe"),
        "tokenizer.json": ("not-pickle", "safe"),
        "model.safetensors": ("safetensors", "safe"),
    }
    assert res["verdict"] == "safe" and res["skipped"] == []
    text = cli(["scan", *paths])
    assert text.code == 0
    assert "model.safetensors: safe (safetensors)" in text.stdout


def test_truncated_safetensors_is_an_error_naming_the_rule(cli: Any, json_of: Any,
                                                          model_dir: Path) -> None:
    whole = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(whole[:-7])
    res = json_of(cli(["scan", str(model_dir), "--json"]), "scan", 2)
    (bad,) = [f for f in res["files"] if f["path"].endswith("model.safetensors")]
    assert (bad["format"], bad["verdict"]) == ("safetensors", "error")
    assert "TruncatedFileError" in bad["error"] and "after the header" in bad["error"]
    (model_dir / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    res = json_of(cli(["scan", str(model_dir / "model.safetensors"), "--json"]), "scan", 2)
    assert "declares 1000000 bytes" in res["files"][0]["error"]


def test_symlinked_folder_is_skipped_then_followed(cli: Any, json_of: Any, model_dir: Path,
                                                   tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R.")
    (model_dir / "extra").symlink_to(outside, target_is_directory=True)
    res = json_of(cli(["scan", str(model_dir), "--json"]), "scan", 2)
    assert res["verdict"] == "incomplete"
    assert res["skipped"] == [{"path": str(model_dir / "extra"),
                               "reason": "symlinked folder: not followed (--follow-symlinks "
                                         "scans it)"}]
    text = cli(["scan", str(model_dir)])
    assert text.code == 2
    assert "1 path skipped; overall incomplete" in text.stdout
    res = json_of(cli(["scan", str(model_dir), "--follow-symlinks", "--json"]), "scan", 1)
    assert res["verdict"] == "dangerous" and res["skipped"] == []
    assert any(f["path"].endswith("extra/evil.pkl") for f in res["files"])


def test_symlink_loop_is_scanned_once(cli: Any, json_of: Any, model_dir: Path) -> None:
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "ckpt.pkl").write_bytes(STATE_DICT)
    (model_dir / "sub" / "up").symlink_to(model_dir, target_is_directory=True)
    res = json_of(cli(["scan", str(model_dir), "--follow-symlinks", "--json"]), "scan", 0)
    assert [f["path"] for f in res["files"]].count(str(model_dir / "sub" / "ckpt.pkl")) == 1
    assert len(res["files"]) == 6


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_special_files_and_broken_links_are_listed(runner: Any, json_of: Any,
                                                   model_dir: Path) -> None:
    os.mkfifo(model_dir / "pipe")
    (model_dir / "gone").symlink_to(model_dir / "nowhere")
    res = json_of(runner(["scan", str(model_dir), "--json"]), "scan", 2)
    reasons = {Path(s["path"]).name: s["reason"] for s in res["skipped"]}
    assert reasons["pipe"].startswith("FIFO, not a regular file")
    assert reasons["gone"].startswith("broken symlink")
    # Named on the command line, a FIFO is skipped too: never opened.
    res = json_of(runner(["scan", str(model_dir / "pipe"), "--json"]), "scan", 2)
    assert res["verdict"] == "incomplete" and res["files"] == []


def test_a_pickle_under_a_harmless_name_is_still_found(cli: Any, json_of: Any,
                                                       model_dir: Path) -> None:
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R."
    (model_dir / "notes.txt").write_bytes(evil)
    (model_dir / "weights.safetensors").write_bytes(evil)
    res = json_of(cli(["scan", str(model_dir), "--json"]), "scan", 1)
    verdicts = {Path(f["path"]).name: f["verdict"] for f in res["files"]}
    assert verdicts["notes.txt"] == verdicts["weights.safetensors"] == "dangerous"


def test_scan_help_documents_exit_codes_and_the_option(cli: Any) -> None:
    r = cli(["scan", "--help"])
    flat = " ".join(r.stdout.split())
    assert "--follow-symlinks" in flat
    assert "--allow-not-assessed" in flat
    assert ("Exit 0 everything read and safe; 1 something dangerous or unknown; 2 an error, "
            "a skipped path or a not-assessed file") in flat


def test_convert_refusal_says_what_was_found(runner: Any, json_of: Any, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2), "out": Path("/tmp/run")}, tmp_path / "paths.pt")
    err = json_of(runner(["convert", str(tmp_path / "paths.pt"), "--json"]), "convert", 1)
    assert err["type"] == "UnsafePickleError"
    assert "unknown: GLOBAL pathlib.PosixPath" in err["message"]
    assert "not on the allowlist" in err["message"]
    text = runner(["convert", str(tmp_path / "paths.pt")])
    assert text.code == 1 and "would run code" not in text.stderr
    assert "the message says what was found" in " ".join(text.stderr.split())
    (tmp_path / "evil.pt").write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R.")
    err = json_of(runner(["convert", str(tmp_path / "evil.pt"), "--json"]), "convert", 1)
    assert "dangerous: GLOBAL os.system" in err["message"]
