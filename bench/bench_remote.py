"""Remote whole-model loads on loopback, side by side in one run (issue 25).

A model of ``--size-mib`` (default 2048: 2 GiB of float32 tensors) is written,
signed, served by nginx (HTTP) and by moto's S3 server, and loaded by:

- ``cat_ranges``: the anchor, fsspec's own parallel download of the same
  bytes (``fs.cat_ranges`` over ``block``-sized ranges) into memory;
- ``tensorfile``: ``tensorfile.load_file(URL)`` (numpy arrays, final buffers);
- ``tensorfile-verified``: the same with ``verify=`` the signer's key
  (signature first, each tensor's BLAKE3 digest checked as it lands);
- ``runai``: runai-model-streamer's ``SafetensorsStreamer`` on the S3
  endpoint (each tensor cloned out of its reused buffer, as a load must);
- ``tensorizer``: ``TensorDeserializer`` over HTTP, of the same tensors
  serialized in its own format and served by the same nginx.

moto's S3 server copies the whole object out of its store for every range
request, so its loads cost O(requests x size): run S3 at a few hundred MiB
(``--transports s3 --size-mib 256``) and HTTP at 2 GiB. Transport ``s3n``
measures the S3 clients' byte path at full size: the same nginx answers
their path-style S3 requests (``GET /bench/model.safetensors`` with
``Range``; nginx ignores the request signature and has no S3 logic), and
``cat_ranges`` (s3fs), tensorfile (s3fs) and runai-model-streamer (its AWS
client) each load ``s3://bench/model.safetensors`` through it.

Each load runs in a fresh process (``--child``), which reports its wall time
and its peak RSS; throughput is model bytes over wall time. With
``--repeat N`` the contenders take turns, N rounds, and each one's best is
reported. Ratios are against the anchor of the same transport, in the same run.

    python bench/bench_remote.py [--size-mib 2048] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "remote"))

BLOCK = 16 << 20
CONCURRENCY = 16


def _peak_rss() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, it does not
    carry the parent's peak across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, url: str, opts: dict[str, Any], pub: str) -> dict[str, Any]:
    """One load in this (fresh) process: wall seconds, bytes, peak RSS."""
    import numpy as np

    # Every contender's imports before the clock starts.
    if kind == "cat_ranges":
        import fsspec
    elif kind.startswith("tensorfile"):
        import tensorfile
        import tensorfile._io.remote
        from tensorfile.remote import RemoteOptions

        tensorfile._io.remote._import_fsspec()
        if kind.endswith("verified"):
            import tensorfile.integrity.onload
    elif kind == "runai":
        from runai_model_streamer import SafetensorsStreamer
    elif kind == "tensorizer":
        from tensorizer import TensorDeserializer
    rss0 = _peak_rss()
    t = time.perf_counter()
    nbytes = 0
    if kind == "cat_ranges":
        fs, path = fsspec.core.url_to_fs(url, **opts)
        size = fs.size(path)
        starts = list(range(0, size, BLOCK))
        ends = [min(s + BLOCK, size) for s in starts]
        parts = fs.cat_ranges([path] * len(starts), starts, ends, batch_size=CONCURRENCY)
        nbytes = sum(len(p) for p in parts)
    elif kind in ("tensorfile", "tensorfile-verified"):
        got = tensorfile.load_file(
            url, storage_options=opts, remote=RemoteOptions(block_size=BLOCK, concurrency=CONCURRENCY),
            verify=pub if kind == "tensorfile-verified" else None,
        )
        nbytes = sum(int(np.asarray(v).nbytes) for v in got.values())
    elif kind == "runai":
        got = {}
        with SafetensorsStreamer() as streamer:
            streamer.stream_file(url)
            for name, tensor in streamer.get_tensors():
                got[name] = tensor.clone()
        nbytes = sum(v.numel() * v.element_size() for v in got.values())
    elif kind == "tensorizer":
        with TensorDeserializer(url, device="cpu", lazy_load=False) as d:
            got = dict(d.items())
        nbytes = sum(v.numel() * v.element_size() for v in got.values())
    else:
        raise SystemExit(f"unknown kind {kind}")
    wall = time.perf_counter() - t
    return {"kind": kind, "seconds": wall, "bytes": nbytes, "peak_rss": _peak_rss(),
            "rss_before": rss0}


def _run_child(kind: str, url: str, opts: dict[str, Any], pub: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, url, json.dumps(opts), pub],
        capture_output=True, text=True, env=env, timeout=3600, check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        # runai's C++ client logs why a download failed before the Python error.
        why = [x for x in lines if "Failed to download" in x][:1]
        return {"kind": kind, "error": why + lines[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of loads, each contender once per round (best of N)")
    ap.add_argument("--transports", default="http,s3",
                    help="http, s3 (moto), s3n (S3 requests answered by nginx); comma-separated")
    ap.add_argument("--limit-rate", default=None, metavar="RATE",
                    help="cap nginx's sending rate per connection (nginx syntax, e.g. 64m = "
                         "64 MiB/s): a link slower than loopback, as object stores are")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "URL", "OPTS", "PUB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, url, opts, pub = args.child
        print(json.dumps(child(kind, url, json.loads(opts), pub)))
        return

    import numpy as np
    from servers import Nginx, S3Server

    from tensorfile.integrity import generate_key, sign
    from tensorfile.numpy import save_file

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "cli")])}
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        n = max(1, args.size_mib // 64)
        rows = (args.size_mib << 20) // n // 4 // 4096
        rng = np.random.default_rng(0)
        tensors = {f"layer.{i}.weight": rng.standard_normal((rows, 4096), dtype=np.float32)
                   for i in range(n)}
        model = www / "model.safetensors"
        save_file(tensors, model)
        generate_key(Path(tmp) / "k.pem")
        sign(model, Path(tmp) / "k.pem")
        # The bucket of transport s3n: path-style s3://bench/... is /bench/... to nginx.
        (www / "bench").mkdir()
        for name in ("model.safetensors", "model.sig"):
            os.link(www / name, www / "bench" / name)
        pub = str(Path(tmp) / "k.pem.pub")
        size = model.stat().st_size
        have_tensorizer = "http" in args.transports
        try:
            import torch
            from tensorizer import TensorSerializer

            if have_tensorizer:
                ser = TensorSerializer(str(www / "model.tensors"))
                ser.write_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
                ser.close()
        except ImportError as e:
            have_tensorizer = False
            results["tensorizer (http)"] = [{"error": [f"not installed: {e}"]}]
        del tensors

        transports = set(args.transports.split(","))
        with Nginx(www, Path(tmp) / "nginx", limit_rate=args.limit_rate) as ng, S3Server() as s3:
            client = s3.client()
            if "s3" in transports:
                client.create_bucket(Bucket="bench")
                client.upload_file(str(model), "bench", "model.safetensors")
                client.upload_file(str(www / "model.sig"), "bench", "model.sig")
            s3_opts = {k: v for k, v in s3.storage_options.items() if k != "skip_instance_cache"}
            s3n_opts = {**s3_opts, "client_kwargs": {**s3_opts["client_kwargs"],
                                                      "endpoint_url": ng.base}}
            s3_env = {**env, "AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                      "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                      "AWS_EC2_METADATA_DISABLED": "true",
                      "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
                      "RUNAI_STREAMER_CONCURRENCY": str(CONCURRENCY),
                      # Its C++ client says why a download failed only in its log.
                      "RUNAI_STREAMER_LOG_TO_STDERR": "1", "RUNAI_STREAMER_LOG_LEVEL": "ERROR"}
            plan = [
                ("http", "cat_ranges", ng.url("model.safetensors"), {}, env),
                ("http", "tensorfile", ng.url("model.safetensors"), {}, env),
                ("http", "tensorfile-verified", ng.url("model.safetensors"), {}, env),
                ("s3", "cat_ranges", "s3://bench/model.safetensors", s3_opts, env),
                ("s3", "tensorfile", "s3://bench/model.safetensors", s3_opts, env),
                ("s3", "tensorfile-verified", "s3://bench/model.safetensors", s3_opts, env),
                ("s3", "runai", "s3://bench/model.safetensors", {}, s3_env),
                ("s3n", "cat_ranges", "s3://bench/model.safetensors", s3n_opts, env),
                ("s3n", "tensorfile", "s3://bench/model.safetensors", s3n_opts, env),
                ("s3n", "tensorfile-verified", "s3://bench/model.safetensors", s3n_opts, env),
                ("s3n", "runai", "s3://bench/model.safetensors", {},
                 {**s3_env, "AWS_ENDPOINT_URL": ng.base}),
            ]
            if have_tensorizer:
                plan.append(("http", "tensorizer", ng.url("model.tensors"), {}, env))
            plan = [p for p in plan if p[0] in transports]
            # In rounds, each contender once per round: a load right after
            # another of its own kind reuses the memory that one just freed,
            # and on a VM a first touch of other memory can cost seconds.
            for r in range(args.repeat):
                for transport, kind, url, opts, e in plan:
                    runs = results.setdefault(f"{kind} ({transport})", [])
                    runs.append(_run_child(kind, url, opts, pub, e))
                    if not args.json:
                        print(f"  round {r + 1}, {kind} ({transport}): {_describe(runs[-1:], size)}",
                              flush=True)

    table = _summary(results, size)
    if args.json:
        print(json.dumps({"size": size, "results": results, "summary": table}, indent=2))
    else:
        link = f", nginx limit_rate {args.limit_rate} per connection" if args.limit_rate else ""
        print(f"\nmodel: {size / 2**30:.2f} GiB, loopback{link}, block {BLOCK >> 20} MiB x {CONCURRENCY}")
        for name, row in table.items():
            print(f"  {name:32s} {row}")


def _best(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in runs if "seconds" in r]
    return min(ok, key=lambda r: r["seconds"]) if ok else None


def _describe(runs: list[dict[str, Any]], size: int) -> str:
    best = _best(runs)
    if best is None:
        return f"failed: {runs[0].get('error')}"
    return (f"{best['seconds']:.2f} s, {size / best['seconds'] / 2**20:.0f} MiB/s, peak RSS "
            f"{best['peak_rss'] / 2**20:.0f} MiB")


def _summary(results: dict[str, list[dict[str, Any]]], size: int) -> dict[str, str]:
    out = {}
    for name, runs in results.items():
        best = _best(runs)
        if best is None:
            out[name] = f"failed: {runs[0].get('error')}"
            continue
        transport = name.rsplit("(", 1)[-1].rstrip(")")
        anchor = _best(results.get(f"cat_ranges ({transport})", []))
        ratio = f", {anchor['seconds'] / best['seconds']:.2f}x cat_ranges" if anchor else ""
        plain = _best(results.get(f"tensorfile ({transport})", []))
        if name.startswith("tensorfile-verified") and plain:
            ratio += f", {best['seconds'] / plain['seconds']:.2f}x the plain load's time"
        out[name] = (f"{best['seconds']:.2f} s ({size / best['seconds'] / 2**20:.0f} MiB/s{ratio}); "
                     f"peak RSS {best['peak_rss'] / 2**20:.0f} MiB = model + "
                     f"{(best['peak_rss'] - size) / 2**20:.0f} MiB")
    return out


if __name__ == "__main__":
    main()
