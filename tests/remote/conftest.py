"""Fixtures for the remote tests: nginx and an S3 endpoint on loopback, a signed model.

The servers are real (tests/remote/servers.py): nginx is skipped with its
reason only where the binary is absent; moto only where it is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fsspec", reason="the remote extra (fsspec) is not installed")
pytest.importorskip("aiohttp", reason="the remote extra (aiohttp) is not installed")

sys.path.insert(0, str(Path(__file__).parent))

from remote_kit import Model, tensors
from servers import NGINX, Nginx, S3Server

from tensorfile.integrity import generate_key, sign
from tensorfile.numpy import save_file


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    base = tmp_path_factory.mktemp("remote")
    root = base / "www"
    root.mkdir()
    t = tensors()
    save_file(t, root / "m.safetensors", metadata={"format": "np"})
    key = base / "signing.pem"
    generate_key(key)
    sign(root / "m.safetensors", key)  # a single-file signature: www/model.sig
    sharded = root / "sharded"
    sharded.mkdir()
    names = sorted(t)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for shard, keys in halves.items():
        save_file({k: t[k] for k in keys}, sharded / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in halves.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    sign(sharded, key)
    return Model(root, key, Path(f"{key}.pub"), t)


@pytest.fixture(scope="session")
def nginx(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    with Nginx(model.root, tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture(scope="session")
def s3(model: Model) -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs (the remote extra) is not installed")
    with S3Server() as server:
        client = server.client()
        client.create_bucket(Bucket="models")
        for path in model.root.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "models", path.relative_to(model.root).as_posix())
        yield server
