"""Signing: hash a model, build the OMS v1.0 statement, sign it, write the bundle."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tensorfile._io.atomic import sweep_temp_files
from tensorfile._io.files import refuse_existing
from tensorfile._weights import refuse_empty
from tensorfile.errors import KeyLoadError, SignatureError
from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME, Bundle, pae, write_bundle
from tensorfile.integrity.hashing import (
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_TENSOR_ALGORITHM,
    HashOptions,
    ProgressCallback,
)
from tensorfile.integrity.keys import (
    PathOrPem,
    PrivateKey,
    check_supported,
    key_hint,
    verify_bytes,
)
from tensorfile.integrity.manifest import Manifest, hash_model_update
from tensorfile.integrity.signers import Signer, as_signer


def default_signature_path(model: str | os.PathLike[str]) -> Path:
    """``model.sig`` inside a model folder, or next to a single-file model."""
    p = Path(model)
    return p / DEFAULT_SIGNATURE_NAME if p.is_dir() else p.parent / DEFAULT_SIGNATURE_NAME


def open_signer(uri: str) -> Signer:
    """A signer named by a URI (``tensorfile sign --signer``): ``pkcs11:...``
    (RFC 7512, as model-signing takes it) or ``awskms://[host:port]/KEY``."""
    if uri.startswith("pkcs11:"):
        from tensorfile.integrity.pkcs11_signer import Pkcs11Signer

        return Pkcs11Signer(uri)
    if uri.startswith("awskms://"):
        from tensorfile.integrity.aws_kms import AwsKmsSigner

        return AwsKmsSigner.from_uri(uri)
    raise KeyLoadError(f"signer {uri!r:.80}: give a pkcs11: URI or an awskms:// URI")


@contextmanager
def opened_signer(uri: str) -> Iterator[Signer]:
    """:func:`open_signer`, closed on exit (a token's session logged out)."""
    signer = open_signer(uri)
    try:
        yield signer
    finally:
        close = getattr(signer, "close", None)
        if callable(close):
            close()


def sweep_leftovers(model: str | os.PathLike[str]) -> None:
    """Remove the temporary files killed writes left in a model folder
    (hashing leaves out any temporary file: a live write's, or one an index
    still names), so that they neither block signing nor fail verification."""
    if os.path.isdir(model):
        for folder, subfolders, _ in os.walk(model):
            subfolders[:] = [d for d in subfolders if d != ".git"]
            sweep_temp_files(folder)


def encode_statement(manifest: Manifest) -> bytes:
    """The DSSE payload: the statement as compact JSON (ASCII, so byte-stable)."""
    return json.dumps(manifest.to_statement(), separators=(",", ":")).encode("ascii")


def sign_manifest(
    manifest: Manifest,
    key: PathOrPem | PrivateKey | Signer,
    *,
    password: str | bytes | None = None,
    certificate_chain: Any = None,
) -> Bundle:
    """Sign ``manifest`` and return the bundle (nothing is written).

    ``key`` is a private key (PEM path, PEM bytes or key object) or any
    :class:`~tensorfile.integrity.signers.Signer` (PKCS#11, KMS, your own).
    ``certificate_chain`` (PEM paths/bytes or certificates, leaf first) makes a
    certificate-based bundle; its leaf must hold the signer's public key. The
    signature is verified with the signer's public key before it is returned.
    """
    signer = as_signer(key, password, certificate_chain)
    pub = check_supported(signer.public_key())
    payload = encode_statement(manifest)
    data = pae(payload)
    signature = signer.sign(data)
    try:
        verify_bytes(pub, signature, data)
    except SignatureError as e:
        raise KeyLoadError(f"the signer returned a signature its public key does not verify: {e}") from None
    certs = tuple(c.public_bytes(serialization.Encoding.DER) for c in signer.certificate_chain())
    return Bundle(
        payload=payload,
        signature=signature,
        key_hint=None if certs else key_hint(pub),
        certificates=certs,
    )


def sign(
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
    overwrite: bool = False,
    written: Manifest | None = None,
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
    hashing starts. An existing file at the signature path (another signer's
    ``model.sig``, or a ``config.json`` named by mistake) is refused with
    :class:`~tensorfile.errors.OutputExistsError` unless ``overwrite``.
    ``written`` (:meth:`tensorfile.StreamWriter.manifest`) supplies the
    digests of files just written, so they are not read again
    (:func:`~tensorfile.integrity.manifest.hash_model_update`).
    """
    # The key is loaded (and the password or PIN checked) before any hashing.
    signer = as_signer(key, password, certificate_chain)
    sig_path = Path(signature) if signature is not None else default_signature_path(model)
    if not overwrite:
        refuse_existing(sig_path)
    options = HashOptions(
        ignore_paths=tuple(ignore_paths), ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks, tensors=tensors, tensor_algorithm=tensor_algorithm,
        file_algorithm=file_algorithm, workers=workers,
    )
    single = not os.path.isdir(model)
    if single and os.path.isfile(model):  # before hashing: a 0-byte .safetensors does not parse
        refuse_empty(model, [os.path.getsize(model)], single=True, doing="sign")
    sweep_leftovers(model)
    manifest = hash_model_update(model, None, options, signature=sig_path, progress=progress,
                                 written=written)[0]
    refuse_empty(model, (f.size or 0 for f in manifest.files), single=single, doing="sign")
    bundle = sign_manifest(manifest, signer)
    return write_bundle(sig_path, bundle)
