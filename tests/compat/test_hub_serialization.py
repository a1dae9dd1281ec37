"""huggingface_hub 1.28's own serialization tests, run on tensorfile.

huggingface_hub up to 1.28 passes ``device=None`` to ``load_file``
(``load_state_dict_from_file``, ``load_torch_model``); three of these tests
failed on tensorfile before it took ``None`` as the cpu. The test extra pins
huggingface_hub 2.4.0, which no longer does, so 1.28 lives beside the venv:
``requirements/hub128.lock`` installed with ``pip install --no-deps --target
DIR`` and named by ``TENSORFILE_HUB_1_28=DIR`` (``.ci/run`` does both).

The tests are hub's own ``tests/test_serialization.py`` at v1.28.0, unmodified
(``upstream/hub_1_28_test_serialization.py``, see ``upstream/NOTICE.md``),
run in a fresh interpreter whose ``conftest.py`` calls
``tensorfile.compat.install()`` before hub imports ``safetensors``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
VENDORED = HERE / "upstream" / "hub_1_28_test_serialization.py"
SITE = os.environ.get("TENSORFILE_HUB_1_28", "")

CONFTEST = '''
import huggingface_hub
import tensorfile.compat

tensorfile.compat.install()
import safetensors.torch  # noqa: E402

assert huggingface_hub.__version__ == "1.28.0", huggingface_hub.__version__
assert safetensors.torch.load_file.__module__.startswith("tensorfile"), "not on tensorfile"
'''

pytestmark = [
    pytest.mark.slow,  # a fresh interpreter importing torch and hub, 47 tests
    pytest.mark.skipif(
        not (SITE and (Path(SITE) / "huggingface_hub").is_dir()),
        reason="TENSORFILE_HUB_1_28 names no folder with huggingface_hub 1.28 "
        "(pip install --no-deps --target DIR -r requirements/hub128.lock; .ci/run does)",
    ),
]


def test_hub_1_28_serialization_tests_pass_on_tensorfile(tmp_path: Path) -> None:
    # Outside the project's tree: its conftest and pytest settings stay out.
    shutil.copy(VENDORED, tmp_path / "test_serialization.py")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SITE, str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "test_serialization.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    summary = re.search(r"(\d+) passed", run.stdout)
    assert summary is not None and int(summary.group(1)) >= 40, tail
    assert not re.search(r"\d+ (failed|error|skipped)", run.stdout), tail
