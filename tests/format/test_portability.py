"""Every POSIX-only call has a fallback that gives the same bytes.

Each ``pread_into`` variant is tried directly (an ``os`` without the calls
it prefers), and a whole save / read / sign / verify / scan round runs in a
fresh interpreter with the calls removed (``tests/conftest.py``); CI also runs
the format and integrity tests that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

from tensorfile._io.files import select_pread_into

REPO = Path(__file__).resolve().parents[2]


def _os_without(*names: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if k not in names})


VARIANTS = {
    "by_preadv": _os_without(),
    "by_pread": _os_without("preadv"),
    "by_seek": _os_without("preadv", "pread"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_pread_variant_reads_the_same_bytes(tmp_path: Path, variant: str) -> None:
    wanted = {"by_preadv": "preadv", "by_pread": "pread"}.get(variant)
    if wanted and not hasattr(os, wanted):
        pytest.skip(f"this platform (or the suite's simulation) has no os.{wanted}")
    pread_into = select_pread_into(VARIANTS[variant])  # type: ignore[arg-type]
    assert pread_into.__name__ == variant
    data = bytes(range(256)) * 64
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, size in [(0, 10), (1000, 3000), (len(data) - 5, 5), (len(data) - 5, 50)]:
            buf = bytearray(size)
            n = pread_into(fd, memoryview(buf), offset)
            assert n == min(size, len(data) - offset)
            assert bytes(buf[:n]) == data[offset : offset + n]
        assert pread_into(fd, memoryview(bytearray(8)), len(data)) == 0  # the end
        # Threads sharing the descriptor each get their own range.
        seen: dict[int, bytes] = {}

        def read(i: int) -> None:
            for _ in range(200):
                buf = bytearray(97)
                n = pread_into(fd, memoryview(buf), i * 97)
                seen[i] = bytes(buf[:n])

        threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(seen[i] == data[i * 97 : i * 97 + 97] for i in range(8))
    finally:
        os.close(fd)


_ROUND = """
import os, numpy as np
from pathlib import Path
import tensorfile._io.files as files
from tensorfile import load_file, save_file, safe_open
from tensorfile.integrity import generate_key, sign, verify
from tensorfile.pickles import scan
assert not hasattr(os, "preadv") and not hasattr(os, "O_NONBLOCK"), "simulation is off"
assert files.pread_into.__name__ == "by_seek", files.pread_into.__name__
model = Path(MODEL)
model.mkdir()
want = {"w": np.arange(1 << 16, dtype=np.float32).reshape(256, 256), "b": np.ones(7, np.int8)}
save_file(want, model / "model.safetensors", {"k": "v"})
for backend in ("mmap", "pread"):
    with safe_open(model / "model.safetensors", "np", backend=backend) as f:
        assert (f.get_tensor("w") == want["w"]).all()
        assert (f.get_slice("w")[3:5] == want["w"][3:5]).all()
got = load_file(model / "model.safetensors")
assert all((got[k] == want[k]).all() for k in want)
keys = generate_key(Path(KEYS) / "key.pem")
sign(model, keys.private_key)
verify(model, key=keys.public_key)
os.mkfifo(Path(KEYS) / "fifo")
try:
    load_file(Path(KEYS) / "fifo")
except OSError as e:
    assert "not a regular file" in str(e), e
else:
    raise AssertionError("a FIFO was read")
verdict = scan(model / "model.safetensors").verdict
assert verdict.value == "safe", verdict
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo to build the FIFO case")
def test_save_read_sign_verify_without_posix_only_calls(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    code = f"MODEL = {str(tmp_path / 'model')!r}\nKEYS = {str(keys)!r}\n" + textwrap.dedent(_ROUND)
    # Run under the suite's simulation: conftest's removal, then the round.
    bootstrap = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(REPO / 'tests' / 'conftest.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    )
    env = {**os.environ, "TENSORFILE_SIMULATE_NO_POSIX": "1"}
    run = subprocess.run([sys.executable, "-c", bootstrap + code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("ok"), run.stdout


def test_the_simulation_removes_sync_file_range() -> None:
    """The suite's simulation reaches the writer's ``sync_file_range`` lookup."""
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(REPO / 'tests' / 'conftest.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "from tensorfile._io import atomic\n"
        "print(atomic._sync_file_range())\n"
    )
    env = {**os.environ, "TENSORFILE_SIMULATE_NO_POSIX": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"
