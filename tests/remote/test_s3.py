"""Remote models from S3: moto's server on loopback, reached through s3fs."""

from __future__ import annotations

import json

import pytest
from remote_kit import Model, same
from servers import S3Server

import tensorfile
from tensorfile.errors import DigestMismatchError, RemoteChangedError
from tensorfile.remote import RemoteOptions, verify_remote


def test_load_and_verified_load(s3: S3Server, model: Model) -> None:
    opts = s3.storage_options
    same(tensorfile.load_file("s3://models/m.safetensors", storage_options=opts), model.tensors)
    same(tensorfile.load_file("s3://models/m.safetensors", storage_options=opts,
                              verify=model.pub, remote=RemoteOptions(block_size=100_000)),
         model.tensors)
    report = verify_remote("s3://models/m.safetensors", model.pub, RemoteOptions(opts))
    assert report.tensors == len(model.tensors) and report.signature == "s3://models/model.sig"


def test_sharded_index(s3: S3Server, model: Model) -> None:
    url = "s3://models/sharded/model.safetensors.index.json"
    same(tensorfile.load_file(url, storage_options=s3.storage_options, verify=model.pub),
         model.tensors)


def test_slice_and_header_requests(s3: S3Server, model: Model) -> None:
    with tensorfile.safe_open("s3://models/m.safetensors", storage_options=s3.storage_options) as f:
        assert f.remote is not None and f.remote.requests == 1  # the header
        rows = f.get_slice("layer.2.weight")[3:5]
        assert f.remote.requests == 2 and f.bytes_read == 2 * 256 * 4
    same({"x": rows}, {"x": model.tensors["layer.2.weight"][3:5]})


def test_replaced_object_and_tampered_object(s3: S3Server, model: Model) -> None:
    client = s3.client()
    data = (model.root / "m.safetensors").read_bytes()
    client.put_object(Bucket="models", Key="swap/m.safetensors", Body=data)
    client.put_object(Bucket="models", Key="swap/model.sig", Body=(model.root / "model.sig").read_bytes())
    url = "s3://models/swap/m.safetensors"
    with tensorfile.safe_open(url, storage_options=s3.storage_options) as f:
        client.put_object(Bucket="models", Key="swap/m.safetensors", Body=data[:-1] + b"\1")
        with pytest.raises(RemoteChangedError):
            f.get_tensor("embed")
    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(url, storage_options=s3.storage_options, verify=model.pub)


def test_cli_endpoint_from_the_environment(s3: S3Server, model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    options = {k: v for k, v in s3.storage_options.items() if k != "skip_instance_cache"}
    env = {"TENSORFILE_STORAGE_OPTIONS": json.dumps(options)}
    r = CliRunner().invoke(app, ["verify", "s3://models/m.safetensors", "--key", str(model.pub),
                                 "--json"], env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["tensors_checked"] == len(model.tensors)


def test_empty_and_missing_objects(s3: S3Server) -> None:
    from tensorfile.errors import TruncatedFileError

    s3.client().put_object(Bucket="models", Key="empty.safetensors", Body=b"")
    with pytest.raises(TruncatedFileError):
        tensorfile.safe_open("s3://models/empty.safetensors", storage_options=s3.storage_options)
    with pytest.raises(FileNotFoundError):
        tensorfile.safe_open("s3://models/none.safetensors", storage_options=s3.storage_options)
