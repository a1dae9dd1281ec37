"""Run a real loader on a file in a subprocess, for tests that need the oracle.

Every loader that would open a model file is here: ``torch.load`` in both
``weights_only`` modes, ``pickle.load`` with the C and the pure-Python
unpickler, ``numpy.load(allow_pickle=True)`` and ``joblib.load``. Never in the
test process: the file may be hostile, and its payload targets a canary path
(``pickle_kit.command``) so the test can tell whether anything ran.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Loader name -> the Python statement that loads ``path``.
LOADERS: dict[str, str] = {
    "torch": "import torch; torch.load(path, weights_only=False)",
    "torch-weights-only": "import torch; torch.load(path, weights_only=True)",
    "pickle": "import pickle; pickle.load(open(path, 'rb'))",
    "pickle-python": "import pickle; pickle._Unpickler(open(path, 'rb')).load()",
    "numpy": "import numpy; numpy.load(path, allow_pickle=True)",
    "joblib": "import joblib; joblib.load(path)",
}


def run_loader(loader: str, path: Path, *, timeout: float = 180,
               memory: int = 2 << 30) -> subprocess.CompletedProcess[str]:
    """Load ``path`` with ``loader`` in a fresh interpreter (address space capped)."""
    code = (
        "import resource, sys, warnings; warnings.simplefilter('ignore')\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
        f"path = {str(path)!r}\n"
        f"{LOADERS[loader]}\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, check=False)


def runs_payload(loader: str, path: Path, canary: Path) -> bool:
    """True when loading ``path`` with ``loader`` created ``canary``."""
    canary.unlink(missing_ok=True)
    run_loader(loader, path)
    ran = canary.exists()
    canary.unlink(missing_ok=True)
    return ran


def loads_ok(loader: str, path: Path) -> bool:
    """True when ``loader`` loads ``path`` without an error."""
    return run_loader(loader, path).returncode == 0
