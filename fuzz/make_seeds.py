"""Regenerate the generated part of the seed corpora in fuzz/corpus/.

    .venv/bin/python fuzz/make_seeds.py

Seeds are small (the fuzzer mutates them thousands of times a second) and
each one reaches a different part of a parser: every dtype, empty and scalar
tensors, metadata, padding, and near-misses that fail one rule each; torch
checkpoints in every layout (zip, legacy, tied and strided views, nested
training checkpoints) and plain pickles of every protocol. Existing files are
kept (torch writes a random serialization id into each zip checkpoint), so
rerunning the script leaves git clean; ``--force`` rewrites them.

The scanner and converter seeds also include a small selection of the
picklescan project's test corpus (MIT licence, see
``fuzz/corpus/LICENSE-picklescan.txt``), copied from ``../shared/corpus/picklescan``.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
from fuzzlib import FUZZ_DIR, SHARED

from tensorfile import save
from tensorfile._format.dtypes import DTYPES

CORPUS = FUZZ_DIR / "corpus"
PICKLESCAN = SHARED / "corpus" / "picklescan"
#: A few picklescan corpus files per kind of trick (all under 1 KB).
PICKLESCAN_PICKS = (
    "tests/data/benign0_v0.pkl",
    "tests/data/benign0_v3.pkl",
    "tests/data/benign0_v4.pkl",
    "tests/data/new_pytorch_model.bin",
    "tests/data/malicious0.pkl",
    "tests/data/malicious1_v0.pkl",
    "tests/data/malicious1_v4.pkl",
    "tests/data/malicious13a.pkl",
    "tests/data/malicious15a.pkl",
    "tests/data/malicious-invalid-bytes.pkl",
    "tests/data/malicious1_0x20.zip",
    "tests/data/malicious1_central_directory.zip",
    "tests/data/benign_password_protected.zip",
    "tests/data/pytorch_magic_bypass.pt",
    "tests/data/sys_module_override_sploit.pkl",
    "tests/data2/GHSA-jgw4-cr84-mqxg.bin",
    "tests/data2/types_CodeType.pkl",
    "tests/data2/int_array.npy",
    "tests/data2/object_array.npy",
    "tests/data2/dns_exfiltration.npy",
)


def _raw_file(header: dict[str, object], data: bytes = b"", pad: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode() + pad
    return struct.pack("<Q", len(text)) + text + data


def header_seeds() -> dict[str, bytes]:
    """Valid files of every dtype and layout, plus one near-miss per rule."""
    seeds: dict[str, bytes] = {}
    for name, dt in DTYPES.items():
        numel = 8 if dt.bits < 8 else 2
        nbytes = numel * dt.bits // 8
        seeds[f"dtype_{name}"] = _raw_file(
            {name.lower(): {"dtype": name, "shape": [numel], "data_offsets": [0, nbytes]}},
            bytes(range(nbytes)),
        )
    seeds["mixed_with_metadata"] = save(
        {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.array([1, -2], dtype=np.int64),
            "scalar": np.array(3.5, dtype=np.float16),
            "empty": np.zeros((0, 4), dtype=np.uint8),
            "flag": np.array([True, False]),
        },
        {"format": "pt", "note": "seed"},
    )
    seeds["empty_file_header_only"] = save({})
    seeds["metadata_null"] = _raw_file({"__metadata__": None})
    seeds["unaligned_header"] = _raw_file(
        {"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 7 + b"\x3f"
    )
    seeds["whitespace_padding"] = _raw_file(
        {"a": {"dtype": "I16", "shape": [2], "data_offsets": [0, 4]}}, b"\x01\x00\x02\x00", b"\n\t  "
    )
    seeds["two_empty_same_offset"] = _raw_file(
        {
            "x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
            "y": {"dtype": "F32", "shape": [3, 0], "data_offsets": [0, 0]},
        }
    )
    seeds["unicode_names"] = save({"é/ß.weight": np.ones(2, np.int8), "": np.zeros(1, np.uint16)})
    seeds["extra_entry_field"] = _raw_file(
        {"a": {"dtype": "U8", "shape": [], "data_offsets": [0, 1], "extra": [1, 2]}}, b"\x07"
    )
    # Near-misses: each breaks one rule.
    seeds["bad_gap"] = _raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"xx")
    seeds["bad_trailing"] = _raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"xx")
    seeds["bad_overflow_shape"] = _raw_file(
        {"a": {"dtype": "F64", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8
    )
    seeds["bad_offsets_past_end"] = _raw_file(
        {"a": {"dtype": "U8", "shape": [1000], "data_offsets": [0, 1000]}}, b"short"
    )
    dup = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    seeds["bad_duplicate_key"] = struct.pack("<Q", len(dup)) + dup + b"z"
    seeds["bad_metadata_value"] = _raw_file({"__metadata__": {"k": 1}})
    seeds["bad_dtype"] = _raw_file({"a": {"dtype": "f32", "shape": [], "data_offsets": [0, 4]}}, b"\0" * 4)
    seeds["bad_subbyte_partial"] = _raw_file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0")
    seeds["bad_length_too_large"] = struct.pack("<Q", 100_000_001) + b"{}"
    seeds["bad_truncated_header"] = struct.pack("<Q", 64) + b'{"a":'
    seeds["bad_nan"] = struct.pack("<Q", 14) + b'{"__metadata__":NaN}'[:14]
    return seeds


def pickle_seeds() -> dict[str, bytes]:
    """Plain-data pickles of every protocol (written by pickle.dumps, never loaded)."""
    shared = [1, 2]
    value = {
        "int": 7,
        "big": 2**100,
        "neg": -(2**40),
        "float": 1.5,
        "str": "héllo",
        "bytes": b"\x00\xff",
        "bytearray": bytearray(b"ab"),
        "tuple": (1, (2, 3), ()),
        "list": [None, True, False],
        "set": {1, 2},
        "frozenset": frozenset({3}),
        "shared": [shared, shared],
        "nested": {"a": {"b": {"c": [[[]]]}}},
    }
    seeds = {f"plain_p{proto}": pickle.dumps(value, protocol=proto) for proto in range(6)}
    seeds["two_streams"] = pickle.dumps([1]) + pickle.dumps({"x": 2})
    return seeds


def torch_seeds() -> dict[str, bytes]:
    """Small torch checkpoints in every layout the converter reads."""
    import torch

    def saved(obj: object, **kwargs: object) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kwargs)
        return buf.getvalue()

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "w": base,
        "b": torch.tensor([1, -2], dtype=torch.int64),
        "h": torch.ones(2, dtype=torch.float16),
        "bf": torch.zeros(2, dtype=torch.bfloat16),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 3),
    }
    tied = {"emb": base, "head": base, "t": base.t(), "row": base[1], "every_other": base[:, ::2]}
    training = {
        "step": 10,
        "lr": 0.1,
        "name": "run",
        "model_state": {"w": torch.ones(2, 2)},
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    }
    return {
        "torch_zip_state": saved(state),
        "torch_zip_tied_views": saved(tied),
        "torch_zip_training": saved(training),
        "torch_zip_protocol4": saved({"x": torch.ones(3, dtype=torch.int16)}, pickle_protocol=4),
        "torch_zip_f8": saved({"f8": torch.zeros(4, dtype=torch.float8_e4m3fn)}),
        "torch_legacy_state": saved(state, _use_new_zipfile_serialization=False),
        "torch_legacy_tied": saved(tied, _use_new_zipfile_serialization=False),
        "numpy_npy": _npy(),
        "numpy_npz": _npz(),
        "torch_tar_pre_0_4": _tar(),
        "zip_in_zip": _zip_in_zip(saved(state)),
    }


def _tar() -> bytes:
    """torch < 0.4's tar layout, assembled by the converter tests' kit."""
    sys.path.insert(0, str(FUZZ_DIR.parent / "tests" / "pickles"))
    from torch_pickle_kit import tar_checkpoint

    return tar_checkpoint({"w": [1.0, 2.0], "b": [3.0]})


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(3, dtype=np.int16), b=np.ones((2, 2)))
    return buf.getvalue()


def _zip_in_zip(inner: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("model/pytorch_model.bin", inner)
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.int32))
    return buf.getvalue()


def picklescan_seeds() -> dict[str, bytes]:
    if not PICKLESCAN.is_dir():
        print(f"{PICKLESCAN} is absent: picklescan seeds skipped", file=sys.stderr)
        return {}
    seeds = {}
    for rel in PICKLESCAN_PICKS:
        seeds[Path(rel).name] = (PICKLESCAN / rel).read_bytes()
    shutil.copyfile(PICKLESCAN / "LICENSE", CORPUS / "LICENSE-picklescan.txt")
    return seeds


def verify_seeds() -> dict[str, bytes]:
    """One seed per mode of fuzz_verify.py: the genuine content and near-misses."""
    import fuzz_verify as fv
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tensorfile.integrity import sign
    from tensorfile.integrity.bundle import Bundle

    fx = fv.Fixture()
    genuine = Bundle.from_json(fx.bundle)
    sha256_sig = fx.root.parent / "sha256.sig"
    sign(fx.root, fv.TRUSTED, sha256_sig, tensor_algorithm="sha256")
    blake3_files_sig = fx.root.parent / "blake3-files.sig"
    sign(fx.root, fv.TRUSTED, blake3_files_sig, file_algorithm="blake3")
    statement = json.loads(genuine.payload)
    wrong = json.loads(genuine.payload)
    wrong["predicate"]["resources"][0]["digest"] = "0" * 64
    v02 = dict(statement, predicateType="https://model_signing/Digests/v0.1")
    other_sig = fv.OTHER.sign(fv.pae(genuine.payload), ec.ECDSA(hashes.SHA256()))

    def mode(name: str) -> bytes:
        return bytes([fv.MODES.index(name)])

    return {
        "bundle_genuine": mode("bundle") + fx.bundle,
        "bundle_sha256_tensors": mode("bundle") + sha256_sig.read_bytes(),
        "bundle_blake3_files": mode("bundle") + blake3_files_sig.read_bytes(),
        "statement_blake3_files": mode("statement")
        + Bundle.from_json(blake3_files_sig.read_bytes()).payload,
        "bundle_other_key": mode("bundle") + Bundle(genuine.payload, other_sig).to_json(),
        "bundle_cert_chain": mode("bundle")
        + Bundle(genuine.payload, genuine.signature, certificates=(b"0\x03\x02\x01\x00",)).to_json(),
        "model_genuine": mode("model") + fv.MODEL,
        "config_genuine": mode("config") + fv.CONFIG,
        "statement_genuine": mode("statement") + genuine.payload,
        "statement_wrong_digest": mode("statement") + json.dumps(wrong).encode(),
        "statement_old_predicate": mode("statement") + json.dumps(v02).encode(),
    }


def write(harness: str, seeds: dict[str, bytes], prefix: str = "gen_", force: bool = False) -> None:
    folder = CORPUS / harness
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in seeds.items():
        target = folder / f"{prefix}{name}"
        if force or not target.exists():
            target.write_bytes(blob)


def main() -> None:
    force = "--force" in sys.argv
    write("header", header_seeds(), force=force)
    write("verify", verify_seeds(), force=force)
    checkpoints = {**pickle_seeds(), **torch_seeds()}
    borrowed = picklescan_seeds()
    for harness in ("scan", "convert"):
        write(harness, checkpoints, force=force)
        write(harness, borrowed, prefix="picklescan_", force=force)


if __name__ == "__main__":
    main()
