"""Sharded models from URLs: ``open_sharded``, ``load_sharded``, folder URLs,
shard identity, verification, the drop-in modules and the CLI, against nginx
and moto's S3 on loopback."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from remote_kit import Model, same
from servers import Nginx, S3Server

import tensorfile
from tensorfile.errors import (
    DigestMismatchError,
    RemoteChangedError,
    ShardIndexError,
    VerificationError,
)
from tensorfile.sharded import RemoteIndex, load_sharded, open_sharded

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
INDEX = "model.safetensors.index.json"


def _copy(model: Model, name: str, files: tuple[str, ...] = (*SHARDS, INDEX, "model.sig")) -> Path:
    """A fresh served copy of the sharded model (tests that change files own theirs)."""
    folder = model.root / name
    folder.mkdir()
    for f in files:
        shutil.copy2(model.root / "sharded" / f, folder / f)
    return folder


def _log_after(server: Nginx, n: int) -> list:  # type: ignore[type-arg]
    return server.log()[n:]  # log() waits for nginx's late lines


def test_open_sharded_reads_headers_only_then_what_is_touched(nginx: Nginx, model: Model) -> None:
    before = len(nginx.log())
    with open_sharded(nginx.url(f"sharded/{INDEX}")) as m:
        assert m.is_remote and isinstance(m.index, RemoteIndex)
        assert m.keys() == sorted(model.tensors)
        assert m.index.path == nginx.url(f"sharded/{INDEX}")
        assert m.location(SHARDS[0]) == nginx.url(f"sharded/{SHARDS[0]}")
        assert m.shard_size(SHARDS[1]) == (model.root / "sharded" / SHARDS[1]).stat().st_size
        with pytest.raises(ValueError, match="remote"):
            m.path_of(SHARDS[0])
        # Each shard holds its header bytes only, not the 256 KiB probe's answer.
        for s, f in m._store.files.items():  # type: ignore[union-attr]
            raw = (model.root / "sharded" / s).read_bytes()
            assert len(f._prefix) == 8 + int.from_bytes(raw[:8], "little")
        # The index, then one header request per shard: no tensor bytes yet.
        uris = sorted(line.uri for line in _log_after(nginx, before))
        assert uris == sorted([f"/sharded/{INDEX}", *(f"/sharded/{s}" for s in SHARDS)])
        np.testing.assert_array_equal(m["embed"][7:9], model.tensors["embed"][7:9])
        np.testing.assert_array_equal(m.get_tensor("layer.5.weight"), model.tensors["layer.5.weight"])
        assert m.opened_shards == sorted({m["embed"].shard, m["layer.5.weight"].shard})
        rows = [line for line in _log_after(nginx, before)[3:] if "embed" not in line.uri]
        assert sum(line.body_bytes for line in rows) == 2 * 64 * 8 + model.tensors["layer.5.weight"].nbytes
    with pytest.raises(tensorfile.errors.ClosedFileError):
        m.get_tensor("embed")
    same(load_sharded(nginx.url(f"sharded/{INDEX}"), "np"), model.tensors)


def test_folder_urls(nginx: Nginx, s3: S3Server, model: Model) -> None:
    # A folder URL finds model.safetensors.index.json, as a local folder does.
    same(tensorfile.load_file(nginx.url("sharded")), model.tensors)
    same(tensorfile.load_file(nginx.url("sharded/")), model.tensors)
    # ... or model.safetensors.
    single = model.root / "single"
    single.mkdir()
    shutil.copy2(model.root / "m.safetensors", single / "model.safetensors")
    with open_sharded(nginx.url("single")) as m:
        assert m.index.path is None and m.keys() == sorted(model.tensors)
        same(m.tensors(), model.tensors)
    # Plain HTTP cannot list a folder: anything else is a clear error.
    (model.root / "empty_folder").mkdir()
    with pytest.raises(ShardIndexError, match="cannot be listed"):
        open_sharded(nginx.url("empty_folder"))
    # S3 lists: a folder's only index, whatever its prefix (diffusers'), is found.
    client = s3.client()
    for shard in SHARDS:
        client.upload_file(str(model.root / "sharded" / shard), "models", f"diffusers/{shard}")
    client.upload_file(str(model.root / "sharded" / INDEX), "models",
                       "diffusers/diffusion_pytorch_model.safetensors.index.json")
    opts = s3.storage_options
    same(tensorfile.load_file("s3://models/diffusers", storage_options=opts), model.tensors)
    client.upload_file(str(model.root / "sharded" / INDEX), "models", "diffusers/other.safetensors.index.json")
    with pytest.raises(ShardIndexError, match="several indexes"):
        open_sharded("s3://models/diffusers", storage_options=opts)


def test_a_shard_replaced_after_open_is_refused(nginx: Nginx, s3: S3Server, model: Model) -> None:
    folder = _copy(model, "replaced")
    shard = folder / SHARDS[1]
    with open_sharded(nginx.url(f"replaced/{INDEX}")) as m:
        name = next(n for n in m.keys() if m[n].shard == SHARDS[1] and m[n].nbytes)
        data = shard.read_bytes()
        # Same size, same tensors, one byte of data changed: only the identity tells.
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        os.utime(shard, ns=(time.time_ns(), time.time_ns() + 10**9))
        with pytest.raises(RemoteChangedError):
            m.get_tensor(name)
    client = s3.client()
    for f in (*SHARDS, INDEX):
        client.upload_file(str(model.root / "sharded" / f), "models", f"replaced/{f}")
    with open_sharded(f"s3://models/replaced/{INDEX}", storage_options=s3.storage_options) as m:
        data = (model.root / "sharded" / SHARDS[0]).read_bytes()
        client.put_object(Bucket="models", Key=f"replaced/{SHARDS[0]}", Body=data[:-1] + b"\0")
        name = next(n for n in m.keys() if m[n].shard == SHARDS[0] and m[n].nbytes)
        with pytest.raises(RemoteChangedError):
            m.get_tensor(name)


def test_verified_open_fetches_the_signature_once_and_first(nginx: Nginx, model: Model) -> None:
    before = len(nginx.log())
    with open_sharded(nginx.url(f"sharded/{INDEX}"), verify=model.pub) as m:
        same(m.tensors(), model.tensors)
    lines = _log_after(nginx, before)
    uris = [line.uri for line in lines]
    assert uris.count("/sharded/model.sig") == 1  # once for the model, not once per shard
    first_data = next(i for i, line in enumerate(lines)
                      if line.uri.endswith(".safetensors") and not line.range.startswith("bytes=0-"))
    assert uris.index("/sharded/model.sig") < first_data
    # A tampered shard (the same size) fails its tensor's digest, never comes back.
    folder = _copy(model, "tampered_shard")
    data = bytearray((folder / SHARDS[0]).read_bytes())
    data[-3] ^= 0x40
    (folder / SHARDS[0]).write_bytes(bytes(data))
    with open_sharded(nginx.url("tampered_shard"), verify=model.pub) as m, \
            pytest.raises(DigestMismatchError):
        m.tensors()
    other = model.root.parent / "other.pem"
    tensorfile.integrity.generate_key(other)
    with open_sharded(nginx.url("sharded"), verify=f"{other}.pub") as m, \
            pytest.raises(VerificationError):
        m.get_tensor("embed")


def test_remote_index_rules_are_the_local_ones(nginx: Nginx, model: Model) -> None:
    folder = _copy(model, "bad_index", SHARDS)
    good = json.loads((model.root / "sharded" / INDEX).read_text())
    cases = {
        "total": {**good, "metadata": {"total_size": 12}},
        "backslash": {"weight_map": {"embed": "a\\b.safetensors"}},
        "shape": [1, 2],
    }
    for name, doc in cases.items():
        (folder / f"{name}.safetensors.index.json").write_text(json.dumps(doc))
        with pytest.raises(ShardIndexError):
            open_sharded(nginx.url(f"bad_index/{name}.safetensors.index.json"))
        with pytest.raises(ShardIndexError):
            open_sharded(folder / f"{name}.safetensors.index.json")


def test_drop_in_modules_take_urls(nginx: Nginx, s3: S3Server, model: Model) -> None:
    import tensorfile.numpy

    got = tensorfile.numpy.load_file("s3://models/m.safetensors", storage_options=s3.storage_options)
    same(got, model.tensors)
    same(tensorfile.numpy.load_file(nginx.url(f"sharded/{INDEX}"), verify=model.pub), model.tensors)
    torch = pytest.importorskip("torch")
    import tensorfile.torch

    got = tensorfile.torch.load_file(f"s3://models/sharded/{INDEX}", storage_options=s3.storage_options)
    assert all(isinstance(v, torch.Tensor) for v in got.values())
    same({k: v.numpy() for k, v in got.items()}, model.tensors)
    with tensorfile.torch.safe_open(nginx.url("m.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("embed"), torch.from_numpy(model.tensors["embed"]))


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    r = CliRunner().invoke(app, list(args), prog_name="tensorfile")
    return r.exit_code, r.stdout, r.stderr


def test_cli_on_a_sharded_model_url(nginx: Nginx, s3: S3Server, model: Model) -> None:
    from tensorfile.integrity import hash_model

    folder = _copy(model, "cli_model")
    for url in (nginx.url(f"cli_model/{INDEX}"), nginx.url("cli_model")):
        code, out, err = _cli("inspect", url, "--json")
        assert code == 0, err
        result = json.loads(out)["result"]
        assert result["format"] == "sharded" and result["index"] == nginx.url(f"cli_model/{INDEX}")
        assert [s["file_size"] for s in result["shards"]] == [(folder / s).stat().st_size for s in SHARDS]
        assert sorted(t["name"] for t in result["tensors"]) == sorted(model.tensors)
        code, out, err = _cli("verify", url, "--key", str(model.pub), "--json")
        assert code == 0, err
        result = json.loads(out)["result"]
        assert result["verified"] and result["tensors_checked"] == len(model.tensors)
        # The manifest `sign` would sign for the folder (index and shards; model.sig left out).
        code, out, err = _cli("hash", url, "--json")
        assert code == 0, err
        assert json.loads(out)["result"] == hash_model(folder, signature=folder / "model.sig").to_dict()
    env = {"TENSORFILE_STORAGE_OPTIONS": json.dumps(
        {k: v for k, v in s3.storage_options.items() if k != "skip_instance_cache"})}
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    r = CliRunner().invoke(app, ["verify", "s3://models/sharded", "--key", str(model.pub), "--json"],
                           env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["tensors_checked"] == len(model.tensors)


def test_merge_gap_joins_near_runs_and_drops_the_gap(nginx: Nginx, model: Model) -> None:
    from tensorfile.remote import RemoteFile, RemoteOptions

    data = (model.root / "m.safetensors").read_bytes()
    spans = [(1000, 10), (1050, 10), (5000, 10)]
    for gap, requests in ((100, 2), (0, 3), (10_000, 1)):
        f = RemoteFile(nginx.url("m.safetensors"), RemoteOptions(merge_gap=gap))
        bufs = [bytearray(n) for _, n in spans]
        before = len(nginx.log())
        f.read([(at, memoryview(b), None) for (at, _), b in zip(spans, bufs, strict=True)])
        assert [bytes(b) for b in bufs] == [data[at : at + n] for at, n in spans]
        assert len(_log_after(nginx, before)) == requests, gap
    with pytest.raises(ValueError):
        RemoteOptions(merge_gap=-1)


def test_device_staging_path_reads_remote_blocks_in_chunks(nginx: Nginx, model: Model) -> None:
    """The pinned-buffer pipeline of device loads (run on the cpu with tiny
    buffers) over remote shards, unverified and verified."""
    torch = pytest.importorskip("torch")
    from tensorfile._verifying import verifier_of
    from tensorfile.parallel import block_for, load_partition, plan_from_patterns
    from tensorfile.sharded._blocks import BlockSource, Staging, to_device

    plan = plan_from_patterns({"embed": 1, "layer.*": 0})
    stage = Staging(torch.device("cpu"), 50_000)  # tensors of 64-128 KiB: a few chunks each
    with open_sharded(nginx.url(f"sharded/{INDEX}"), "pt") as m:
        for rank in (0, 1):
            want = load_partition(m, plan, rank, 2)
            for name in m.keys():
                block = block_for(m[name].info, plan, rank, 2)
                full = torch.from_numpy(model.tensors[name])
                assert torch.equal(want[name], full[block.index()] if block.dim is not None else full)
                shard = m[name].shard
                for v in (None, m.shard_verifier(shard, verifier_of(model.pub))):  # type: ignore[arg-type]
                    got = to_device(stage, BlockSource(m.shard(shard), v), block)
                    assert torch.equal(got, want[name]), name
