"""Fixtures for the scanner tests: benign checkpoints written by torch.save.

``pickle_kit`` (the assembler and the hostile samples) sits beside this file;
its folder is put on ``sys.path`` so test modules can import it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import io
import json
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _with_location(data: bytes, location: str) -> bytes:
    """Rewrite every 'cpu' storage location of a protocol 2 zip checkpoint."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    old = b"X\x03\x00\x00\x00cpu"
    new = b"X" + len(location).to_bytes(4, "little") + location.encode()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            body = src.read(name)
            if name.endswith("data.pkl"):
                assert old in body
                body = body.replace(old, new)
            dst.writestr(name, body)
    return out.getvalue()


@pytest.fixture(scope="session")
def torch_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Benign checkpoints covering what torch.save writes (all must scan safe).

    Built once per test session: xdist workers share the folder (under a file
    lock), so only one of them pays for importing torch.
    """
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "torch_ckpts"
    folder.mkdir(exist_ok=True)
    manifest = folder / "manifest.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest.exists():
            built = _build_torch_checkpoints(folder)
            manifest.write_text(json.dumps({k: p.name for k, p in built.items()}))
    return {k: folder / v for k, v in json.loads(manifest.read_text()).items()}


def _build_torch_checkpoints(folder: Path) -> dict[str, Path]:
    import numpy as np
    import torch

    dtypes = [
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
        torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128,
        torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2,
        torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float8_e8m0fnu, torch.complex32,
    ]
    with warnings.catch_warnings():  # "ComplexHalf support is experimental": known, not ours
        warnings.simplefilter("ignore", UserWarning)
        state: dict[str, Any] = {f"t_{str(dt).split('.')[1]}": torch.zeros(3, 2, dtype=dt)
                                 for dt in dtypes}
    base = torch.arange(12.0).reshape(3, 4)
    state.update(base=base, view=base[1:], transposed=base.t(), scalar=torch.tensor(3.0),
                 empty=torch.zeros(0, 5))
    model = torch.nn.Linear(4, 3)
    model.weight2 = model.weight  # tied weights: two names, one storage
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint = {
        "step": 7, "epoch": 1, "model_state": model.state_dict(),
        "optimizer_state": opt.state_dict(), "param": torch.nn.Parameter(torch.ones(2)),
        "np_array": np.arange(5, dtype=np.float32), "np_scalar": np.float64(1.5),
        "np_objects": np.array([1, "a"], dtype=object), "config": {"lr": 0.1, "betas": (0.9, 0.99)},
    }
    paths: dict[str, Path] = {}

    def save(name: str, obj: object, **kw: Any) -> None:
        paths[name] = folder / name
        torch.save(obj, paths[name], **kw)

    for p in (2, 3, 4, 5):
        save(f"dtypes_zip_p{p}.pt", state, pickle_protocol=p)
        save(f"training_zip_p{p}.pt", checkpoint, pickle_protocol=p)
        save(f"dtypes_legacy_p{p}.pt", state, pickle_protocol=p,
             _use_new_zipfile_serialization=False)
        save(f"training_legacy_p{p}.pt", checkpoint, pickle_protocol=p,
             _use_new_zipfile_serialization=False)
    # What training checkpoints carry besides weights (HF Trainer's rng_state.pth,
    # schedulers, dtype/device values, numpy scalars and structured arrays ...).
    import random

    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    extras = {
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                "cpu": torch.random.get_rng_state(),
                "generator": np.random.default_rng(0).bit_generator.state},
        "scheduler": sched.state_dict(),
        "conj": torch.randn(2, dtype=torch.complex64).conj(),
        "np_scalars": [np.int64(5), np.float32(1.5), np.bool_(True), np.array(3.0)],
        "values": {"dtype": torch.float16, "size": torch.Size([2, 3]),
                   "device": torch.device("cuda", 1), "z": 1 + 2j, (2, 3): None, 7: b"x",
                   "ba": bytearray(b"yy"), "s": {1, 2}, "f": frozenset({3})},
        "np_struct": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        "np_text": np.array(["ab", "c"]), "np_big_endian": np.arange(3, dtype=">i4"),
    }
    for p in (2, 4):
        save(f"training_extras_p{p}.pt", extras, pickle_protocol=p)
    save("state_dict.pt", model.state_dict())
    save("parameter.pt", torch.nn.Parameter(torch.randn(3)))
    save("tensor_list.pt", [torch.ones(2), torch.ones(2, dtype=torch.bfloat16)])
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buf)
    paths["cuda_location.pt"] = folder / "cuda_location.pt"
    paths["cuda_location.pt"].write_bytes(_with_location(buf.getvalue(), "cuda:0"))
    import pickle

    paths["pickle_dumps_tensor.pkl"] = folder / "pickle_dumps_tensor.pkl"
    paths["pickle_dumps_tensor.pkl"].write_bytes(pickle.dumps({"w": torch.ones(3)}, protocol=2))
    # Over the reader's 1 MiB eager-text limit: protocol 2 writes these bytes as
    # _codecs.encode(<long str>, 'latin1').
    paths["pickle_dumps_big.pkl"] = folder / "pickle_dumps_big.pkl"
    paths["pickle_dumps_big.pkl"].write_bytes(
        pickle.dumps({"w": torch.ones(300_000)}, protocol=2))
    save("big_numpy_p2.pt", {"np": np.ones(300_000)}, pickle_protocol=2)
    return paths
