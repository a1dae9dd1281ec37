"""Incremental re-signing (``tensorfile sign --update``): hash only what changed.

Re-signing a 100 GB model after editing its README should not hash 100 GB.
Every signature tensorfile writes records each file's size, modification and
status-change times and inode number when it was hashed (the
``tensorfile_hints`` predicate field, which OMS verifiers such as
model-signing ignore; files modified in the 2 s before signing get none).
:func:`resign`:

1. reads the previous signature and verifies it with the signer's own public
   key: only digests this key signed are reused (a signature by another key,
   or a bundle edited since, raises and nothing is written);
2. re-hashes every file whose size, times or inode differ from its hint
   (and every new file, every file without a hint, and every file whose
   previous digests are of another kind than asked for), reusing the signed
   digests of the others;
3. signs and writes a complete new bundle, as :func:`~tensorfile.integrity.sign`
   would have, which any OMS verifier checks in full.

The hints decide only what is hashed again, never what verifies: a file
changed in place while keeping its size and both times (the status-change
time cannot be set back without setting back the clock) keeps its old
digest, and the new signature then fails to verify on it, as it should.
Nothing is ever signed that was not hashed by this key's owner at some point.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorfile.integrity.bundle import parse_bundle, read_bundle_bytes, write_bundle
from tensorfile.integrity.hashing import (
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_TENSOR_ALGORITHM,
    HashOptions,
    ProgressCallback,
)
from tensorfile.integrity.keys import PathOrPem, PrivateKey
from tensorfile.integrity.manifest import hash_model_update
from tensorfile.integrity.sign import default_signature_path, sign_manifest, sweep_leftovers
from tensorfile.integrity.signers import Signer, as_signer
from tensorfile.integrity.verify import verify_bundle


@dataclass(frozen=True)
class ResignReport:
    """What :func:`resign` did."""

    signature: Path
    #: Every file the new signature covers.
    files: tuple[str, ...]
    #: Of those, the files that were hashed (changed, new, or no usable hint).
    rehashed: tuple[str, ...]
    #: Bytes fed to the hash functions (a safetensors file whose file and
    #: tensor digests are computed as separate jobs counts twice).
    bytes_hashed: int
    previous_root_digest: str
    root_digest: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": str(self.signature),
            "files": len(self.files),
            "rehashed": list(self.rehashed),
            "reused": len(self.files) - len(self.rehashed),
            "bytes_hashed": self.bytes_hashed,
            "previous_root_digest": self.previous_root_digest,
            "root_digest": self.root_digest,
        }


def resign(
    model: str | os.PathLike[str],
    key: PathOrPem | PrivateKey | Signer,
    signature: str | os.PathLike[str] | None = None,
    *,
    password: str | bytes | None = None,
    certificate_chain: Any = None,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    tensors: bool = True,
    tensor_algorithm: str = DEFAULT_TENSOR_ALGORITHM,
    file_algorithm: str = DEFAULT_FILE_ALGORITHM,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> ResignReport:
    """Sign ``model`` again, hashing only the files changed since its current
    signature (``signature``, default ``model.sig``), which must verify with
    ``key``'s public key. Same options as :func:`~tensorfile.integrity.sign`;
    the new bundle replaces the old one (atomically).

    Raises :class:`~tensorfile.errors.NotSignedError` without a previous
    signature, and what verification raises when it does not verify with
    this key (sign without ``update`` to hash everything)."""
    signer = as_signer(key, password, certificate_chain)
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    previous, _ = verify_bundle(
        parse_bundle(read_bundle_bytes(sig_path), sig_path), signer.public_key()
    )
    options = HashOptions(
        ignore_paths=tuple(ignore_paths), ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks, tensors=tensors, tensor_algorithm=tensor_algorithm,
        file_algorithm=file_algorithm, workers=workers,
    )
    hashed = [0]

    def count(done: int, total: int) -> None:
        hashed[0] = max(hashed[0], done)
        if progress is not None:
            progress(done, total)

    sweep_leftovers(model)
    manifest, rehashed = hash_model_update(
        model, previous, options, signature=sig_path, progress=count
    )
    written = write_bundle(sig_path, sign_manifest(manifest, signer))
    return ResignReport(
        signature=written,
        files=tuple(f.name for f in manifest.files),
        rehashed=rehashed,
        bytes_hashed=hashed[0],
        previous_root_digest=previous.root_digest,
        root_digest=manifest.root_digest,
    )
