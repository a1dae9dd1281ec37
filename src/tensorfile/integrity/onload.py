"""Verify-on-load: what ``safe_open(path, verify=...)`` calls.

The reader calls :func:`load_verifier` when the file opens, then
:meth:`LoadVerifier.check_header` with the raw header bytes (which checks the
bundle's signature and this file's signed header digest), then
:meth:`LoadVerifier.check_tensor` with each tensor's bytes the first time it
is read. Only the bytes of tensors actually read are hashed; a tensor whose
bytes differ from the signed digest raises before it is returned.

Files signed without tensorfile's per-tensor digests (for example by
model-signing, or pinned) are verified whole at open instead, whatever they
are called, and always through the reader's own descriptor (a second open of
the path could see another file): :meth:`LoadVerifier.check_open` hands the
reader a :class:`FileCheck`, which it feeds while copying the whole file into
private memory, so every byte it hands out is a byte hashed; callers that read
tensor by tensor (the sharded block reader) use :meth:`LoadVerifier.check_header`,
which hashes the file through their descriptor and derives the tensor digests
each later read is checked against.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tensorfile._format.header import parse_json
from tensorfile._io.files import open_regular
from tensorfile._io.verifier import Verifier
from tensorfile.errors import (
    BundleError,
    DigestMismatchError,
    KeyLoadError,
    NotSignedError,
    VerificationError,
)
from tensorfile.integrity.bundle import DEFAULT_SIGNATURE_NAME, MAX_BUNDLE_SIZE, read_bundle_bytes
from tensorfile.integrity.certs import CertificateTrust
from tensorfile.integrity.hashing import (
    CHUNK_SIZE,
    DEFAULT_TENSOR_ALGORITHM,
    READ_SIZE,
    SINGLE_FILE_NAME,
    FileDigest,
    SafetensorsDigests,
    digest_hex,
    hash_open_file,
    new_hasher,
    spread,
)
from tensorfile.integrity.keyless import SigstoreTrust
from tensorfile.integrity.keys import check_supported, key_hint, read_pem
from tensorfile.integrity.manifest import Manifest, Serialization, relative_inside
from tensorfile.integrity.pins import Pins
from tensorfile.integrity.verify import SignerIdentity, Trust, TrustPolicy, verify_signature_file

#: What every ``verify=`` of the public API takes: a public key (PEM path, PEM
#: bytes or key object), trusted root certificates (PEM path or bytes, a
#: certificate, a :class:`CertificateTrust`), Sigstore trust, a
#: :class:`TrustPolicy`, :class:`Pins`, or a ready :class:`Verifier`.
VerifyWith: TypeAlias = (
    TrustPolicy | Pins | SigstoreTrust | CertificateTrust | x509.Certificate
    | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    | str | bytes | os.PathLike[str] | Verifier
)


@dataclass(frozen=True)
class _TrustVerifier:
    """A :class:`Verifier` over a trust policy or pins: one :class:`LoadVerifier` per file."""

    trust: TrustPolicy | Pins

    def for_file(self, path: Path) -> LoadVerifier:
        return load_verifier(self.trust, path)

    def for_url(self, url: str, size: int, fetch: Callable[[str], bytes]) -> LoadVerifier:
        """The verifier of the remote file at ``url`` (``size`` bytes); ``fetch``
        reads a small object beside it (the signature), see :func:`url_verifier`."""
        return url_verifier(self.trust, url, size, fetch)


def as_verifier(verify: VerifyWith) -> Verifier:
    """The :class:`Verifier` for what a user passed as ``verify=`` (see :data:`VerifyWith`)."""
    if isinstance(verify, Pins | TrustPolicy):
        return _TrustVerifier(verify)
    if isinstance(verify, Verifier):
        return verify
    return _TrustVerifier(_policy(verify))


def _policy(verify: object) -> TrustPolicy:
    if isinstance(verify, TrustPolicy):
        return verify
    if isinstance(verify, SigstoreTrust):
        return TrustPolicy(sigstore=verify)
    if isinstance(verify, CertificateTrust | x509.Certificate):
        return TrustPolicy(cert_roots=verify)
    if isinstance(verify, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return TrustPolicy(key=verify)
    if isinstance(verify, str | bytes | os.PathLike):
        # Peek to tell root certificates from a public key; each loader reads it again
        # itself so that its errors name the file.
        if b"-----BEGIN CERTIFICATE-----" in read_pem(verify, "verify key"):  # type: ignore[arg-type]
            return TrustPolicy(cert_roots=verify)
        return TrustPolicy(key=verify)
    raise KeyLoadError(
        f"verify= takes a public key (PEM path or key object), root certificates, or a "
        f"TrustPolicy; got {type(verify).__name__}"
    )


def find_signature(path: Path) -> Path:
    """``model.sig`` in the file's folder or the nearest parent folder that has one."""
    folder = Path(os.path.abspath(path)).parent
    for d in (folder, *folder.parents):
        candidate = d / DEFAULT_SIGNATURE_NAME
        if candidate.is_file():
            return candidate
    raise NotSignedError(
        f"{path}: no {DEFAULT_SIGNATURE_NAME} next to it or in a parent folder "
        "(pass TrustPolicy(signature=...))"
    )


#: Bundles verified with a public key, by (SHA-256 of the signature file's
#: bytes, the key's fingerprint). A sharded model opens its shards one at a
#: time, each against the same signature: without this, every shard checked
#: the signature and parsed the whole statement again (84 shards: 0.8 s of a
#: 0.86 s verified load). Same bytes and same key give the same verdict, so
#: nothing is trusted that was not verified; a changed file is a new entry.
#: Certificate trust depends on the time of checking and is not cached.
_VERIFIED: OrderedDict[tuple[str, str], tuple[Manifest, SignerIdentity]] = OrderedDict()
_VERIFIED_MAX = 8
_VERIFIED_LOCK = threading.Lock()


def verified_bundle(signature: Path, trust: Trust) -> tuple[Manifest, SignerIdentity]:
    """:func:`verify_bundle` of the signature file at ``signature``, remembered
    for key trust (see ``_VERIFIED``)."""
    return verified_bundle_bytes(read_bundle_bytes(signature), signature, trust)


def verified_bundle_bytes(
    data: bytes, signature: str | os.PathLike[str], trust: Trust
) -> tuple[Manifest, SignerIdentity]:
    """:func:`verified_bundle` of a signature file's bytes (read from ``signature``)."""
    if isinstance(trust, CertificateTrust | SigstoreTrust):
        return verify_signature_file(data, signature, trust)
    cache_key = (hashlib.sha256(data).hexdigest(), key_hint(check_supported(trust)))
    with _VERIFIED_LOCK:
        hit = _VERIFIED.get(cache_key)
        if hit is not None:
            _VERIFIED.move_to_end(cache_key)
            return hit
    result = verify_signature_file(data, signature, trust)
    with _VERIFIED_LOCK:
        _VERIFIED[cache_key] = result
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return result


def load_verifier(verify: VerifyWith, path: Path) -> LoadVerifier:
    """Build the verifier for opening ``path`` with ``safe_open(..., verify=verify)``.

    ``verify`` is a public key (PEM path, PEM bytes or key object), trusted root
    certificates (PEM path or bytes holding certificates, a certificate, a
    :class:`CertificateTrust`), a :class:`TrustPolicy`, or :class:`Pins`
    (trusted digests: no signature is read).
    """
    if isinstance(verify, Pins):
        name = verify.resource_for(path)
        entry = verify.files[name]
        manifest = Manifest(verify.source, (entry,), Serialization(hash_type=entry.algorithm))
        return LoadVerifier(
            None, Path(verify.source), Path(path).parent, Path(path), eager=verify.eager,
            trusted=(manifest, verify.signer(), name),
        )
    policy = _policy(verify)
    trust = policy.trust()
    sig = Path(policy.signature) if policy.signature is not None else find_signature(path)
    root = Path(policy.model_root) if policy.model_root is not None else sig.parent
    return LoadVerifier(trust, sig, root, Path(path), eager=policy.eager)


def url_verifier(
    verify: VerifyWith, url: str, size: int, fetch: Callable[[str], bytes]
) -> LoadVerifier:
    """The verifier of the remote file at ``url`` (``size`` bytes).

    The signature is ``TrustPolicy(signature=...)`` (a URL or a local path) or
    ``model.sig`` in the URL's own folder, read with ``fetch`` (which raises
    ``FileNotFoundError`` where there is none); the model root is
    ``TrustPolicy(model_root=...)`` (a URL) or the signature's folder. Pins
    name the file by its bare name (or ``"."``). Only files signed with
    tensorfile's per-tensor digests can be checked as they stream.
    """
    name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    if isinstance(verify, Pins):
        resource = SINGLE_FILE_NAME if SINGLE_FILE_NAME in verify.files else name
        entry = verify.files.get(resource)
        if entry is None:
            raise NotSignedError(f"{url}: no pin for {resource!r} in {verify.source}")
        manifest = Manifest(verify.source, (entry,), Serialization(hash_type=entry.algorithm))
        return LoadVerifier(None, Path(verify.source), Path("."), Path(name), eager=verify.eager,
                            trusted=(manifest, verify.signer(), resource), size=size, where=url,
                            signature_where=str(verify.source))
    policy = _policy(verify)
    trust = policy.trust()
    sig = os.fspath(policy.signature) if policy.signature is not None else (
        url.split("?", 1)[0].rsplit("/", 1)[0] + "/" + DEFAULT_SIGNATURE_NAME)
    if "://" in sig:
        try:
            data = fetch(sig)
        except FileNotFoundError:
            raise NotSignedError(f"{url}: no signature at {sig} (the model is not signed)") from None
        if len(data) > MAX_BUNDLE_SIZE:
            raise BundleError(f"{sig}: signature is over the {MAX_BUNDLE_SIZE:,}-byte limit")
    else:
        data = read_bundle_bytes(sig)
    manifest, signer = verified_bundle_bytes(data, sig, trust)
    if manifest.is_single_file:
        resource = SINGLE_FILE_NAME
    else:
        root = os.fspath(policy.model_root) if policy.model_root is not None else sig.rsplit("/", 1)[0]
        base = url.split("?", 1)[0]
        if not base.startswith(root.rstrip("/") + "/"):
            raise NotSignedError(f"{url}: outside {root}, the folder {sig} signs")
        resource = base[len(root.rstrip("/")) + 1 :]
    return LoadVerifier(None, Path(name), Path("."), Path(name), eager=policy.eager,
                        trusted=(manifest, signer, resource), size=size, where=url, pinned=False,
                        signature_where=sig)


class LoadVerifier:
    """Checks one safetensors file's header and tensors against a signature."""

    def __init__(
        self, trust: Trust | None, signature: Path, model_root: Path, path: Path, *,
        eager: bool = False, trusted: tuple[Manifest, SignerIdentity, str] | None = None,
        size: int | None = None, where: str | None = None, pinned: bool = True,
        signature_where: str | None = None,
    ) -> None:
        """``trust`` checks the bundle at ``signature``; or ``trusted`` gives the
        manifest, who vouches for it, and this file's resource name (pins, or a
        remote file's verified signature: ``pinned=False``). ``size`` is the
        file's size where it is not a local file (then ``where`` is its URL)."""
        self.eager = eager
        #: The file as messages name it (its path, or its URL).
        self.where = where if where is not None else str(path)
        #: The signature (or pins) as reports name it: its path, or its URL.
        self.signature_where = signature_where if signature_where is not None else str(signature)
        self._size = size
        self._pinned = trusted is not None and pinned
        self.signature = signature
        self.model_root = model_root
        self.path = path
        #: Bytes hashed so far (header, tensors, or the whole file in fallback mode).
        self.bytes_hashed = 0
        self.manifest: Manifest | None = None
        self.signer: SignerIdentity | None = None
        self.resource: str | None = None
        self._trust = trust
        self._trusted = trusted
        #: The header and tensor digests each read is checked against.
        self._parts: SafetensorsDigests | None = None
        self._lock = threading.Lock()

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_hashed += n

    def check_header(self, raw_header: bytes, fd: int | None = None) -> None:
        """Verify the bundle's signature and this file's header digest (once, at open).

        A file signed only whole (no tensor digests: model-signing, pins) is
        hashed now, through ``fd`` (the reader's own descriptor; without one, a
        new open of the path), and its tensor digests are derived in the same
        pass from the header the reader parsed, whatever the file is called.
        Each tensor read later is checked against them, so a file changed or
        replaced after this check still fails on read, never passes unchecked.
        """
        own = fd is None
        if own:
            fd, size = open_regular(self.path)
        else:
            assert fd is not None
            size = os.fstat(fd).st_size
        try:
            whole = self.check_open(raw_header, size)
            if whole is not None:
                self._derive_parts(whole, raw_header, fd, size)
        finally:
            if own:
                os.close(fd)

    def check_open(self, raw_header: bytes, size: int) -> FileCheck | None:
        """Verify the signature, the file's ``size`` (where signed or pinned)
        and the header digest, from the bytes the reader parsed.

        Returns None when the signature has tensor digests (each tensor is then
        checked by :meth:`tensor_check` when read); otherwise the running check
        of the whole file, which the reader must feed, in order, with
        ``raw_header`` and then every byte after it as it copies them into
        private memory, and :meth:`FileCheck.finish` before handing any out.
        """
        if self._trusted is not None:
            manifest, signer, resource = self._trusted
        elif self._trust is None:
            raise VerificationError(f"{self.where}: nothing to verify against")
        else:
            manifest, signer = verified_bundle(self.signature, self._trust)
            resource = self._resource(manifest)
        entry = manifest.by_name.get(resource)
        if entry is None:
            raise NotSignedError(f"{self.where}: {resource!r} is not a file the signature covers")
        self.manifest, self.signer, self.resource = manifest, signer, resource
        what = "pinned" if self._pinned else "signed"
        if entry.size is not None and size != entry.size:
            # Only pins give sizes: a cheap early answer; the digests decide.
            raise DigestMismatchError(f"{self.where}: size {size:,} bytes, {what} {entry.size:,}")
        if entry.safetensors is None and self._size is not None:
            raise VerificationError(
                f"{self.where}: signed without tensorfile's per-tensor digests (e.g. by "
                "model-signing), so it can only be checked whole: download it and verify the copy"
            )
        if entry.safetensors is None:
            return FileCheck(self, entry, size, what)
        self._count(len(raw_header))
        self._use_parts(entry.safetensors, raw_header, "differs from the signed header (tensor "
                        "names, shapes, dtypes, offsets or metadata changed)")
        return None

    def _derive_parts(self, whole: FileCheck, raw_header: bytes, fd: int, size: int) -> None:
        """Hash the file whole through ``fd`` against ``whole`` and derive
        its header and tensor digests from the header the reader parsed."""
        n = len(raw_header)
        header = parse_json(raw_header[8:], size - n, n - 8)
        spans = [(0, n)] + [(n + t.start, n + t.end) for t in header.tensors.values()]
        # Derived digests are this process's own: BLAKE3, the fastest to check on read.
        algorithm = DEFAULT_TENSOR_ALGORITHM
        digest, parts = hash_open_file(
            fd, size, self.path, whole=True, spans=spans, mapped=False,
            algorithm=algorithm, file_algorithm=whole.algorithm,
        )
        self._count(size)
        if digest != whole.expected:
            raise DigestMismatchError(f"{self.path}: file differs from the {whole.what} bytes")
        derived = SafetensorsDigests(parts[0], dict(zip(header.tensors, parts[1:], strict=True)),
                                     algorithm)
        self._use_parts(derived, raw_header, "changed while the file was verified")

    def _resource(self, manifest: Manifest) -> str:
        """This file's resource name in a signed manifest."""
        if manifest.is_single_file:
            return SINGLE_FILE_NAME
        rel = relative_inside(self.path, self.model_root)
        if rel is None:
            raise NotSignedError(
                f"{self.where}: outside {self.model_root}, the folder {self.signature} signs"
            )
        return rel

    def _use_parts(self, parts: SafetensorsDigests, raw_header: bytes, mismatch: str) -> None:
        """Check the header the reader parsed against ``parts``; then check reads against them."""
        if digest_hex(parts.algorithm, raw_header) != parts.header:
            raise DigestMismatchError(f"{self.where}: header {mismatch}")
        self._parts = parts

    def _expected(self, name: str) -> tuple[str, str]:
        """The signed (or derived) digest of tensor ``name``, and its algorithm."""
        if self._parts is None:
            raise VerificationError(
                f"{self.where}: check_header must pass before tensors are read (a file "
                "signed only whole is read through the FileCheck check_open returns)"
            )
        expected = self._parts.tensors.get(name)
        if expected is None:
            raise NotSignedError(f"{self.where}: tensor {name!r} is not in the signed manifest")
        return expected, self._parts.algorithm

    def check_tensor(self, name: str, data: memoryview) -> None:
        """Verify one tensor's bytes against its signed digest (first read of each tensor)."""
        check = self.tensor_check(name, len(data))
        check.update(data)
        check.finish()

    def tensor_check(self, name: str, nbytes: int) -> TensorCheck:
        """A running check of tensor ``name``'s ``nbytes`` bytes: feed them in
        order with :meth:`TensorCheck.update` as they are read (each chunk
        while it is still in the CPU cache), then :meth:`TensorCheck.finish`."""
        expected, algorithm = self._expected(name)
        return TensorCheck(self, f"tensor {name!r}", nbytes, expected, algorithm)


class TensorCheck:
    """One digest (a tensor's, or a whole file's), computed while the reader copies the bytes in."""

    def __init__(
        self, owner: LoadVerifier, what: str, nbytes: int, expected: str, algorithm: str,
        differs: str = "differs from the signed bytes",
    ) -> None:
        self._owner, self._what, self._nbytes = owner, what, nbytes
        self.expected, self.algorithm, self._differs = expected, algorithm, differs
        self._hasher = new_hasher(algorithm, nbytes)
        self._fed = 0
        #: Bytes the reader should copy between two updates: small enough to
        #: stay in the core's cache (a single-threaded digest), or big enough
        #: to spread over every core (a BLAKE3 digest of a big tensor).
        self.chunk_size = CHUNK_SIZE if spread(algorithm, nbytes) else READ_SIZE

    def update(self, data: memoryview) -> None:
        self._hasher.update(data)
        self._fed += len(data)

    def finish(self) -> None:
        """Raise :class:`DigestMismatchError` unless the bytes fed match the signed digest."""
        self._owner._count(self._fed)
        if self._fed != self._nbytes or self._hasher.hexdigest() != self.expected:
            raise DigestMismatchError(f"{self._owner.where}: {self._what} {self._differs}")


class FileCheck(TensorCheck):
    """The check of a file signed only whole: fed its header, then every byte after it."""

    def __init__(self, owner: LoadVerifier, entry: FileDigest, size: int, what: str) -> None:
        super().__init__(owner, "file", size, entry.digest, entry.algorithm,
                         f"differs from the {what} bytes")
        #: "signed" or "pinned", for messages.
        self.what = what
