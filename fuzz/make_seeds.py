"""Regenerate the generated part of the seed corpora in fuzz/corpus/.

    .venv/bin/python fuzz/make_seeds.py

Seeds are small (the fuzzer mutates them thousands of times a second) and
each one reaches a different part of a parser: every dtype, empty and scalar
tensors, metadata, padding, and near-misses that fail one rule each. Output
is deterministic, so rerunning the script leaves git clean.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from tensorfile import save
from tensorfile._format.dtypes import DTYPES

CORPUS = Path(__file__).resolve().parent / "corpus"


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


def write(harness: str, seeds: dict[str, bytes]) -> None:
    folder = CORPUS / harness
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in seeds.items():
        (folder / f"gen_{name}").write_bytes(blob)


def main() -> None:
    write("header", header_seeds())


if __name__ == "__main__":
    main()
