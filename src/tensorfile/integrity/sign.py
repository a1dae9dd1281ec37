"""Signing: hash a model, build the OMS v1.0 statement, sign it, write the bundle."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tensorfile._io.atomic import sweep_temp_files
from tensorfile.errors import KeyLoadError
from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME, Bundle, pae, write_bundle
from tensorfile.integrity.certs import as_list, load_certificates
from tensorfile.integrity.hashing import (
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_TENSOR_ALGORITHM,
    HashOptions,
    ProgressCallback,
)
from tensorfile.integrity.keys import (
    PathOrPem,
    PrivateKey,
    key_hint,
    load_private_key,
    public_pem,
    sign_bytes,
)
from tensorfile.integrity.manifest import Manifest, hash_model


def default_signature_path(model: str | os.PathLike[str]) -> Path:
    """``model.sig`` inside a model folder, or next to a single-file model."""
    p = Path(model)
    return p / DEFAULT_SIGNATURE_NAME if p.is_dir() else p.parent / DEFAULT_SIGNATURE_NAME


def encode_statement(manifest: Manifest) -> bytes:
    """The DSSE payload: the statement as compact JSON (ASCII, so byte-stable)."""
    return json.dumps(manifest.to_statement(), separators=(",", ":")).encode("ascii")


def sign_manifest(
    manifest: Manifest,
    key: PathOrPem | PrivateKey,
    *,
    password: str | bytes | None = None,
    certificate_chain: Any = None,
) -> Bundle:
    """Sign ``manifest`` and return the bundle (nothing is written).

    ``certificate_chain`` (PEM paths/bytes or certificates, leaf first) makes a
    certificate-based bundle; its leaf must hold ``key``'s public key.
    """
    priv = load_private_key(key, password)
    pub = priv.public_key()
    certs: tuple[bytes, ...] = ()
    if certificate_chain is not None:
        chain = load_certificates(as_list(certificate_chain))
        if not chain:
            raise KeyLoadError("certificate chain is empty")
        if public_pem(pub) != chain[0].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise KeyLoadError(
                "the first certificate of the chain does not hold the signing key's public key"
            )
        certs = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    payload = encode_statement(manifest)
    return Bundle(
        payload=payload,
        signature=sign_bytes(priv, pae(payload)),
        key_hint=None if certs else key_hint(pub),
        certificates=certs,
    )


def sign(
    model: str | os.PathLike[str],
    key: PathOrPem | PrivateKey,
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
) -> Path:
    """Sign the model at ``model`` (file or folder); return the signature path.

    The signature goes to ``signature`` (default :func:`default_signature_path`)
    in OMS v1.0 form, readable by ``model_signing verify``. ``tensors`` (default)
    records header and per-tensor digests of safetensors files for
    verify-on-load and parallel verification, with ``tensor_algorithm``
    (``"blake3"``, the default, or ``"sha256"``). ``file_algorithm`` is the
    OMS ``hash_type`` of the file digests: ``"sha256"`` (default, accepted by
    every OMS verifier) or ``"blake3"`` (model-signing's API verifies it; its
    CLI cannot sign it). ``ignore_paths`` (relative to the model folder) and,
    unless ``ignore_git_paths`` is false, the git files are left out and
    recorded as left out (:func:`~tensorfile.integrity.hash_model`). The key is loaded (and the password checked) before any
    hashing starts.
    """
    priv = load_private_key(key, password)
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    options = HashOptions(
        ignore_paths=tuple(ignore_paths), ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks, tensors=tensors, tensor_algorithm=tensor_algorithm,
        file_algorithm=file_algorithm, workers=workers,
    )
    if os.path.isdir(model):
        # Leftovers of killed writes are removed (hashing leaves out any
        # temporary file: a live write's, or one an index still names).
        for folder, subfolders, _ in os.walk(model):
            subfolders[:] = [d for d in subfolders if d != ".git"]
            sweep_temp_files(folder)
    manifest = hash_model(model, options, signature=sig_path, progress=progress)
    bundle = sign_manifest(manifest, priv, certificate_chain=certificate_chain)
    return write_bundle(sig_path, bundle)
