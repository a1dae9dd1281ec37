"""diffusers, accelerate, peft and huggingface_hub on tensorfile through
:func:`tensorfile.compat.install`, against the same steps on the real
safetensors (libs_scenario.py, once per implementation, the two interpreters
side by side). Tiny models built from seeds; nothing is downloaded.

Every file the libraries write is byte-identical to the reference's, except
where the reference itself varies from run to run: a header with two or more
metadata keys (their order comes from a hash map, spec/FORMAT.md W1), where
the parsed header and the data bytes must be equal instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Looked up, not imported: importing diffusers and peft here would cost seconds
# for nothing (the scenario imports them in its own interpreters).
_MISSING = [
    name
    for name in ("torch", "diffusers", "accelerate", "peft", "huggingface_hub", "safetensors")
    if importlib.util.find_spec(name) is None
]
if _MISSING:
    pytest.skip(
        f"{', '.join(_MISSING)} not installed (pinned in the test extra of pyproject.toml)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow  # two fresh interpreters importing four libraries

SCENARIO = Path(__file__).with_name("libs_scenario.py")
ROOT = Path(__file__).resolve().parents[2]


def _start(mode: str, folder: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "cli"), env.get("PYTHONPATH", "")]
    )
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["DIFFUSERS_VERBOSITY"] = "error"
    folder.mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, str(SCENARIO), mode, str(folder)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("libraries")
    procs = {mode: _start(mode, root / mode) for mode in ("real", "tensorfile")}
    reports = {}
    for mode, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
        reports[mode] = json.loads((root / mode / "report.json").read_text())
    return root / "real", reports["real"], root / "tensorfile", reports["tensorfile"]


STEPS = ("diffusers_remote", "diffusers", "accelerate", "peft", "huggingface_hub")


def test_the_libraries_ran_on_tensorfile(runs: Any) -> None:
    _, real, _, ours = runs
    assert ours["safetensors_torch"] == "tensorfile.torch"
    assert real["safetensors_torch"] == "safetensors.torch"


@pytest.mark.parametrize("step", STEPS)
def test_each_step_runs_and_reads_back_what_the_reference_does(runs: Any, step: str) -> None:
    _, real, _, ours = runs
    for report in (real, ours):
        assert "error" not in report[step], report[step].get("trace")
    theirs, mine = dict(real[step]), dict(ours[step])
    if step == "diffusers_remote":
        # The reference's encode body is read from freed memory (see
        # libs_scenario.diffusers_remote); tensorfile's is the image's bytes.
        assert mine.pop("encode_is_the_image") is True
        assert mine["decode_is_the_tensor"] is True
        for key in ("encode", "encode_is_the_image"):
            theirs.pop(key)
            mine.pop(key, None)
    assert mine == theirs


def test_round_trips_give_back_the_saved_tensors(runs: Any) -> None:
    _, _, _, ours = runs
    d, a, p, h = (ours[s] for s in ("diffusers", "accelerate", "peft", "huggingface_hub"))
    assert d["before"] == d["loaded"] == d["sharded"] and d["same_output"] and d["shards"] > 1
    assert a["before"] == a["load_checkpoint_in_model"] == a["single"] == a["load_state"]
    assert p["lora"] == p["loaded"] == p["set_state"] and p["same_output"]
    assert p["load_peft_weights"] and set(p["load_peft_weights"].values()) <= set(p["lora"].values())
    assert h["before"] == h["mixin"] == h["load_torch_model"] and h["mixin_tied"]
    assert set(h["load_state_dict_from_file"].values()) <= set(h["before"].values())


def _header_and_data(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(data[:8], "little")
    header: dict[str, Any] = json.loads(data[8 : 8 + n])
    return header, data[8 + n :]


def test_files_are_byte_identical_where_the_reference_is_deterministic(runs: Any) -> None:
    real, _, ours, _ = runs
    written = sorted(
        p.relative_to(real) for p in real.rglob("*")
        if p.name.endswith((".safetensors", ".safetensors.index.json"))
    )
    assert len(written) >= 20, written
    assert written == sorted(
        p.relative_to(ours) for p in ours.rglob("*")
        if p.name.endswith((".safetensors", ".safetensors.index.json"))
    )
    varying = []
    for rel in written:
        theirs, mine = (real / rel).read_bytes(), (ours / rel).read_bytes()
        if theirs == mine:
            continue
        assert rel.suffix == ".safetensors", rel
        header, data = _header_and_data(theirs)
        assert len(header.get("__metadata__", {})) >= 2, f"{rel} differs from the reference"
        assert _header_and_data(mine) == (header, data), rel
        varying.append(rel)
    assert len(varying) < len(written) / 2, varying  # most are compared byte for byte
