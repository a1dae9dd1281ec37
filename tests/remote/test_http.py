"""Remote models over HTTP: nginx on loopback, its access log as the byte count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from remote_kit import Model, same
from servers import Nginx

import tensorfile
from tensorfile.errors import DigestMismatchError, NotSignedError
from tensorfile.remote import RemoteOptions, verify_remote

ROOT = Path(__file__).resolve().parents[2]


def _log_after(server: Nginx, n: int) -> list:  # type: ignore[type-arg]
    return server.log()[n:]  # log() waits for nginx's late lines


def test_load_file_matches_and_uses_block_sized_concurrent_ranges(nginx: Nginx, model: Model) -> None:
    before = len(nginx.log())
    got = tensorfile.load_file(nginx.url("m.safetensors"), remote=RemoteOptions(block_size=50_000))
    same(got, model.tensors)
    lines = _log_after(nginx, before)
    assert all(line.status == 206 and line.range.startswith("bytes=") for line in lines)
    data = [line for line in lines if not line.range.startswith("bytes=0-")]
    size = (model.root / "m.safetensors").stat().st_size
    # Every data byte once, in blocks no bigger than asked.
    assert max(line.body_bytes for line in data) <= 50_000
    assert len(data) > 5
    header_len = 8 + int.from_bytes((model.root / "m.safetensors").read_bytes()[:8], "little")
    assert sum(line.body_bytes for line in data) == size - header_len


def test_torch_load_file(nginx: Nginx, model: Model) -> None:
    torch = pytest.importorskip("torch")
    got = tensorfile.load_file(nginx.url("m.safetensors"), framework="pt")
    assert isinstance(got["embed"], torch.Tensor)
    same({k: v.numpy() for k, v in got.items()}, model.tensors)


def test_header_is_one_request_and_a_slice_reads_only_its_rows(nginx: Nginx, model: Model) -> None:
    before = len(nginx.log())
    with tensorfile.safe_open(nginx.url("m.safetensors")) as f:
        assert sorted(f.keys()) == sorted(model.tensors)
        assert _log_after(nginx, before)[-1].range == "bytes=0-262143"
        assert len(_log_after(nginx, before)) == 1
        rows = f.get_slice("layer.3.weight")[10:20]
    np.testing.assert_array_equal(rows, model.tensors["layer.3.weight"][10:20])
    lines = _log_after(nginx, before)
    assert len(lines) == 2 and lines[1].body_bytes == 10 * 256 * 4


def test_a_long_header_is_two_requests(nginx: Nginx, model: Model) -> None:
    big = {f"t{i:05d}": np.full((2,), i, dtype=np.int32) for i in range(6000)}
    path = model.root / "long_header.safetensors"
    tensorfile.numpy.save_file(big, path, metadata={"pad": "x" * 100_000})
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len > 256 << 10
    before = len(nginx.log())
    with tensorfile.safe_open(nginx.url("long_header.safetensors")) as f:
        assert len(f.keys()) == 6000 and f.metadata() == {"pad": "x" * 100_000}
        lines = _log_after(nginx, before)
        assert [line.range for line in lines] == ["bytes=0-262143", f"bytes=262144-{8 + header_len - 1}"]
        np.testing.assert_array_equal(f.get_tensor("t05999"), [5999, 5999])


def test_verified_load_fetches_the_signature_first(nginx: Nginx, model: Model) -> None:
    before = len(nginx.log())
    got = tensorfile.load_file(nginx.url("m.safetensors"), verify=model.pub)
    same(got, model.tensors)
    uris = [line.uri for line in _log_after(nginx, before)]
    assert uris[:2] == ["/m.safetensors", "/model.sig"] and len(uris) >= 3


def test_verified_safe_open_and_slice(nginx: Nginx, model: Model) -> None:
    with tensorfile.safe_open(nginx.url("m.safetensors"), verify=model.pub) as f:
        np.testing.assert_array_equal(f.get_slice("embed")[5], model.tensors["embed"][5])
        np.testing.assert_array_equal(f.get_tensor("scalar"), model.tensors["scalar"])


def test_wrong_key_and_unsigned_file_are_refused(nginx: Nginx, model: Model, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    tensorfile.integrity.generate_key(other)
    with pytest.raises(tensorfile.errors.VerificationError):
        tensorfile.load_file(nginx.url("m.safetensors"), verify=f"{other}.pub")
    # The sharded folder's signature does not cover the top folder's file.
    policy = tensorfile.integrity.TrustPolicy(
        key=model.pub, signature=model.root / "sharded" / "model.sig"
    )
    with pytest.raises(NotSignedError):
        tensorfile.load_file(nginx.url("m.safetensors"), verify=policy)


def test_sharded_index_url(nginx: Nginx, model: Model) -> None:
    url = nginx.url("sharded/model.safetensors.index.json")
    same(tensorfile.load_file(url), model.tensors)
    same(tensorfile.load_file(url, verify=model.pub), model.tensors)
    report = verify_remote(url, model.pub)
    assert report.files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert report.tensors == len(model.tensors)


def test_hostile_indexes_are_refused(nginx: Nginx, model: Model) -> None:
    from tensorfile.errors import ShardIndexError

    folder = model.root / "sharded"
    good = json.loads((folder / "model.safetensors.index.json").read_text())
    cases = {
        "escape": {"weight_map": {"embed": "../m.safetensors"}},
        "absolute": {"weight_map": {"embed": "/etc/passwd"}},
        "url": {"weight_map": {"embed": "http://elsewhere/x.safetensors"}},
        "empty": {"weight_map": {}},
        # A shard holding tensors the index does not give it.
        "lying": {"weight_map": {k: "model-00001-of-00002.safetensors" for k in good["weight_map"]}},
    }
    for name, doc in cases.items():
        (folder / f"{name}.safetensors.index.json").write_text(json.dumps(doc))
        with pytest.raises(ShardIndexError):
            tensorfile.load_file(nginx.url(f"sharded/{name}.safetensors.index.json"))
    (folder / "dup.safetensors.index.json").write_text('{"weight_map": {"a": "x", "a": "y"}}')
    with pytest.raises(ShardIndexError):
        tensorfile.load_file(nginx.url("sharded/dup.safetensors.index.json"))


def test_tampered_file_on_the_server_is_refused(nginx: Nginx, model: Model, tmp_path: Path) -> None:
    src = model.root / "m.safetensors"
    bad = model.root / "tampered" / "m.safetensors"
    bad.parent.mkdir(exist_ok=True)
    data = bytearray(src.read_bytes())
    data[-100] ^= 1  # a byte of the last tensor's data
    bad.write_bytes(bytes(data))
    policy = tensorfile.integrity.TrustPolicy(key=model.pub, signature=model.root / "model.sig")
    with pytest.raises(DigestMismatchError):
        tensorfile.load_file(nginx.url("tampered/m.safetensors"), verify=policy)
    with pytest.raises(DigestMismatchError):
        verify_remote(nginx.url("tampered/m.safetensors"), policy)
    # Unverified, the flipped byte comes through: the signature is what catches it.
    got = tensorfile.load_file(nginx.url("tampered/m.safetensors"))
    assert any(not np.array_equal(got[k], v) for k, v in model.tensors.items())


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from tensorfile_cli.app import app

    r = CliRunner().invoke(app, list(args), prog_name="tensorfile")
    return r.exit_code, r.stdout, r.stderr


def test_cli_inspect_and_verify_url(nginx: Nginx, model: Model) -> None:
    code, out, err = _cli("inspect", nginx.url("m.safetensors"), "--json")
    assert code == 0, err
    result = json.loads(out)["result"]
    assert result["file_size"] == (model.root / "m.safetensors").stat().st_size
    assert len(result["tensors"]) == len(model.tensors)
    code, out, err = _cli("verify", nginx.url("m.safetensors"), "--key", str(model.pub), "--json")
    assert code == 0, err
    result = json.loads(out)["result"]
    assert result["verified"] and result["tensors_checked"] == len(model.tensors)
    assert result["signature"] == nginx.url("model.sig")
    code, out, err = _cli("inspect", nginx.url("sharded/model.safetensors.index.json"), "--json")
    assert code == 0, err
    result = json.loads(out)["result"]
    assert result["format"] == "sharded" and len(result["shards"]) == 2
    assert sorted(t["name"] for t in result["tensors"]) == sorted(model.tensors)
    code, out, err = _cli("verify", nginx.url("nothing.safetensors"), "--key", str(model.pub))
    assert code == 2 and "404" in err
    # The endpoint and credentials as fsspec takes them: a bad option is a usage error.
    code, out, err = _cli("inspect", nginx.url("m.safetensors"), "--storage-options", "[1]")
    assert code == 2 and "JSON object" in err


def test_hash_url_is_the_local_manifest(nginx: Nginx, model: Model,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorfile.remote
    from tensorfile.integrity import HashOptions, hash_model
    from tensorfile.remote import hash_remote

    monkeypatch.setattr(tensorfile.remote, "HASH_WINDOW", 30_001)  # tensors span windows

    local = hash_model(model.root / "m.safetensors").to_dict()
    remote = hash_remote(nginx.url("m.safetensors"), remote=RemoteOptions(block_size=40_000))
    assert remote.to_dict() == local
    code, out, err = _cli("hash", nginx.url("m.safetensors"), "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == local
    sha = hash_remote(nginx.url("m.safetensors"), HashOptions(tensor_algorithm="sha256"))
    assert sha.to_dict() == hash_model(model.root / "m.safetensors",
                                       HashOptions(tensor_algorithm="sha256")).to_dict()


def test_core_imports_without_fsspec(tmp_path: Path) -> None:
    """The numpy-only core never imports fsspec; a URL without it is a typed error."""
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "import numpy as np, tensorfile\n"
        "from tensorfile.numpy import save_file, load_file\n"
        f"save_file({{'a': np.ones(3)}}, {str(tmp_path / 'a.safetensors')!r})\n"
        f"assert load_file({str(tmp_path / 'a.safetensors')!r})['a'].sum() == 3\n"
        "from tensorfile.errors import RemoteSupportError\n"
        "try:\n    tensorfile.load_file('https://127.0.0.1:1/x.safetensors')\n"
        "except RemoteSupportError as e:\n    print('refused:', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "refused: https://" not in run.stdout and "pip install 'tensorfile[remote]'" in run.stdout
