"""Verification: signature, then manifest, then the model's bytes. Fails closed.

:func:`verify` returns a :class:`VerificationReport` only when every check
passed; anything that does not match, or that could not be checked, raises a
subclass of :class:`~tensorfile.errors.IntegrityError`. There is no
"verified with warnings".
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

from tensorfile._io.headers import read_path_header
from tensorfile._weights import refuse_empty
from tensorfile.errors import (
    DigestMismatchError,
    FormatError,
    KeyLoadError,
    ManifestError,
    MissingFileError,
    NotSignedError,
    SignatureError,
    UnexpectedFileError,
)
from tensorfile.integrity.bundle import Bundle, parse_bundle, read_bundle_bytes
from tensorfile.integrity.certs import CertificateIdentity, CertificateTrust, verify_chain
from tensorfile.integrity.hashing import (
    DEFAULT_IGNORED,
    DEFAULT_TENSOR_ALGORITHM,
    SINGLE_FILE_NAME,
    FileDigest,
    HashOptions,
    ModelFile,
    ProgressCallback,
    SafetensorsDigests,
    digest_hex,
    hash_contents,
    hash_file,
    is_safetensors,
    list_model_files,
)
from tensorfile.integrity.keyless import SigstoreTrust, verify_keyless
from tensorfile.integrity.keys import (
    PublicKey,
    check_supported,
    key_algorithm,
    key_hint,
    load_public_key,
)
from tensorfile.integrity.manifest import Manifest, check_ignore_path, relative_inside
from tensorfile.integrity.sign import default_signature_path

#: What a signature is checked against: one public key, trusted root
#: certificates, or a Sigstore trusted root with the expected identity.
Trust: TypeAlias = "PublicKey | CertificateTrust | SigstoreTrust"


@dataclass(frozen=True)
class TrustPolicy:
    """Everything needed to verify, in one object (also what ``safe_open(verify=...)`` takes).

    Give ``key`` (a public key: PEM path, PEM bytes or key object),
    ``cert_roots`` (trusted root certificates: PEM path(s), certificates, or a
    :class:`CertificateTrust`) or ``sigstore`` (a :class:`SigstoreTrust`, for
    keyless bundles): exactly one.
    """

    key: Any = None
    cert_roots: Any = None
    sigstore: SigstoreTrust | None = None
    #: Signature file; default ``model.sig`` in the model folder (or next to the file).
    signature: str | os.PathLike[str] | None = None
    #: For verify-on-load with a signature outside the model folder: the folder it covers.
    model_root: str | os.PathLike[str] | None = None
    #: Verify-on-load: check every tensor when the file opens instead of on first read.
    eager: bool = False
    #: When certificate validity is checked (default: now).
    at_time: datetime.datetime | None = None

    def trust(self) -> Trust:
        return resolve_trust(self.key, self.cert_roots, self.at_time, self.sigstore)


def resolve_trust(
    key: Any = None, cert_roots: Any = None, at_time: datetime.datetime | None = None,
    sigstore: SigstoreTrust | None = None,
) -> Trust:
    """Turn what the user gave into a :data:`Trust`; exactly one of the three is required."""
    if sum(x is not None for x in (key, cert_roots, sigstore)) != 1:
        raise KeyLoadError(
            "give a public key, trusted root certificates or a Sigstore trust (exactly one)"
        )
    if sigstore is not None:
        return sigstore
    if key is not None:
        return load_public_key(key)
    if isinstance(cert_roots, CertificateTrust):
        return cert_roots if at_time is None else replace(cert_roots, at_time=at_time)
    return CertificateTrust.from_pem(cert_roots, at_time)


@dataclass(frozen=True)
class SignerIdentity:
    """Who signed: the trusted key, or the verified leaf certificate."""

    kind: str  # "key", "certificate", "sigstore" or "pins"
    algorithm: str
    #: Hex SHA-256 of the signing public key's PEM (model-signing's key hint).
    key_fingerprint: str
    certificate: CertificateIdentity | None = None
    #: Keyless signatures: the identity, issuer and transparency log entry checked.
    sigstore: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "algorithm": self.algorithm,
            "key_fingerprint": self.key_fingerprint,
        }
        if self.certificate is not None:
            d["certificate"] = self.certificate.to_dict()
        if self.sigstore is not None:
            d["sigstore"] = dict(self.sigstore)
        return d


def verify_signature_file(
    data: bytes, where: str | os.PathLike[str], trust: Trust
) -> tuple[Manifest, SignerIdentity]:
    """:func:`verify_bundle` of a signature file's bytes; a keyless bundle
    (``trust`` a :class:`SigstoreTrust`) through :func:`verify_keyless`."""
    if isinstance(trust, SigstoreTrust):
        got = verify_keyless(data, where, trust)
        key = got.certificate.public_key
        return got.manifest, SignerIdentity(
            "sigstore", key_algorithm(key), key_hint(key), got.certificate, got.details
        )
    return verify_bundle(parse_bundle(data, where), trust)


def verify_bundle(bundle: Bundle, trust: Trust) -> tuple[Manifest, SignerIdentity]:
    """Check the bundle's signature against ``trust``, then parse its statement.

    The statement is parsed only after its signature verified, so nothing an
    attacker wrote is interpreted before that.
    """
    if isinstance(trust, SigstoreTrust):
        raise KeyLoadError("a keyless bundle is verified from its bytes (verify_signature_file)")
    cert: CertificateIdentity | None = None
    if isinstance(trust, CertificateTrust):
        if not bundle.certificates:
            raise SignatureError(
                "bundle is signed with a bare key, not a certificate: verify with the public key"
            )
        cert = verify_chain(bundle.certificates, trust)
        key = cert.public_key
    else:
        key = check_supported(trust)
        if bundle.key_hint is not None and bundle.key_hint != key_hint(key):
            raise SignatureError(
                f"signed by a different key (bundle names key {bundle.key_hint[:16]}…, "
                f"trusted key is {key_hint(key)[:16]}…)"
            )
    # model-signing 0.2.0's own encoding verifies only 0.2's statement form.
    v02 = bundle.check_signature(key)
    manifest = Manifest.from_statement(bundle.statement(), v02=v02)
    kind = "certificate" if cert is not None else "key"
    return manifest, SignerIdentity(kind, key_algorithm(key), key_hint(key), cert)


@dataclass(frozen=True)
class VerificationReport:
    """What :func:`verify` checked. Exists only if everything matched."""

    model: str
    signature: str
    model_name: str
    root_digest: str
    serialization: dict[str, Any]
    signer: SignerIdentity
    #: Signed files, every byte of each checked and matched.
    files: tuple[str, ...]
    #: Bytes read and hashed (a file checked both ways counts twice).
    bytes_hashed: int
    #: Tensors of signed safetensors files: names and bytes checked.
    tensors: int
    #: Whether tensor digests were recomputed: by default for every file
    #: signed with tensorfile's extension (they cover its bytes), with
    #: ``deep=True`` on top of the file digest.
    tensor_digests_checked: bool
    #: Algorithm of the signed header and tensor digests (``"blake3"`` or
    #: ``"sha256"``), or None when the signature has none.
    tensor_algorithm: str | None
    #: Files whose whole-file digest was recomputed (the others, signed with
    #: tensorfile's extension, by their header and tensor digests).
    by_file_digest: tuple[str, ...] = field(default_factory=tuple)
    #: Files present but not signed, ignored because ``allow_extra_files``.
    extra_files: tuple[str, ...] = field(default_factory=tuple)
    #: Paths the signature leaves out (its ``ignore_paths``, and the
    #: signature file when it lies in the model folder).
    ignored_by_signature: tuple[str, ...] = field(default_factory=tuple)
    #: Paths the verifier left out on top (``ignore_paths``, git files);
    #: never one that holds a signed file.
    ignored_by_verifier: tuple[str, ...] = field(default_factory=tuple)
    #: Of both, those that exist in the model folder: present, not checked.
    ignored_present: tuple[str, ...] = field(default_factory=tuple)
    #: For one file of a model signed as a folder: that folder (the other
    #: files were not checked); None otherwise.
    part_of: str | None = None

    @property
    def verified(self) -> bool:
        return True

    @property
    def files_checked(self) -> int:
        return len(self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": True,
            "model": self.model,
            "signature": self.signature,
            "model_name": self.model_name,
            "root_digest": self.root_digest,
            "serialization": self.serialization,
            "signer": self.signer.to_dict(),
            "files_checked": self.files_checked,
            "files": list(self.files),
            "bytes_hashed": self.bytes_hashed,
            "tensors_checked": self.tensors,
            "tensor_digests_checked": self.tensor_digests_checked,
            "tensor_algorithm": self.tensor_algorithm,
            "by_file_digest": list(self.by_file_digest),
            "extra_files": list(self.extra_files),
            "ignored_by_signature": list(self.ignored_by_signature),
            "ignored_by_verifier": list(self.ignored_by_verifier),
            "ignored_present": list(self.ignored_present),
            "part_of": self.part_of,
        }


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def verify(
    model: str | os.PathLike[str],
    key: Any = None,
    cert_root: Any = None,
    *,
    sigstore: SigstoreTrust | None = None,
    signature: str | os.PathLike[str] | None = None,
    allow_extra_files: bool = False,
    allow_symlinks: bool = False,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
    deep: bool = False,
    at_time: datetime.datetime | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    """Verify the model at ``model`` against its signature; raise if anything differs.

    Give ``key`` (public key), ``cert_root`` (trusted root certificates) or
    ``sigstore`` (a Sigstore trusted root, identity and issuer, for a keyless
    bundle: :mod:`~tensorfile.integrity.keyless`).
    Every byte of every signed file is hashed (in parallel) and compared; files
    the signature does not name fail unless ``allow_extra_files``. A
    safetensors file signed with tensorfile's extension is checked by its
    header digest and every tensor's digest, which together cover the file and
    spread over all cores even for one file; other files (and every file of a
    model signed by model-signing) by their file digest. ``deep`` checks both the
    file digest and the tensor digests of extension-signed files (twice the
    hashing; it also catches a signer whose two kinds of digest disagree).

    What the signature leaves out (its recorded ``ignore_paths``) is not
    listed. The verifier may leave out more: ``ignore_paths`` (relative to the
    model folder) and, unless ``ignore_git_paths`` is false, the git files; a
    path holding a signed file is checked all the same. The report names
    every path left out.
    """
    trust = resolve_trust(key, cert_root, at_time, sigstore)
    root = Path(model)
    sig_path = Path(signature) if signature is not None else default_signature_path(root)
    manifest, signer = verify_signature_file(read_bundle_bytes(sig_path), sig_path, trust)
    return check_model(
        root, manifest, signer, str(sig_path), sig_path=sig_path,
        member=_member(root, manifest, sig_path),
        allow_extra_files=allow_extra_files, allow_symlinks=allow_symlinks,
        ignore_paths=ignore_paths, ignore_git_paths=ignore_git_paths, deep=deep,
        workers=workers, progress=progress,
    )


def _member(root: Path, manifest: Manifest, sig_path: Path) -> str | None:
    """The name of the file ``root`` in a folder's signature, when ``root`` is one
    file of a model signed as a folder (a shard next to ``model.sig``), as
    verify-on-load checks it; None when ``root`` is the signed model itself."""
    if SINGLE_FILE_NAME in manifest.by_name or not root.is_file():
        return None
    rel = relative_inside(root, sig_path.parent)
    if rel is None or rel not in manifest.by_name:
        raise NotSignedError(
            f"{root}: {sig_path} signs the folder {sig_path.parent} "
            f"({len(manifest.files)} files), and this file is not one of them")
    return rel


def check_model(
    root: Path,
    manifest: Manifest,
    signer: SignerIdentity,
    source: str,
    *,
    sig_path: Path | None = None,
    member: str | None = None,
    allow_extra_files: bool = False,
    allow_symlinks: bool = False,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
    deep: bool = False,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    """Check the model at ``root`` against a trusted ``manifest`` (from a
    verified signature, or pins): every signed file present and every byte
    matching. ``source`` names where the manifest came from in the report;
    ``sig_path`` is left out of the folder's listing. ``member``: ``root`` is
    the file of that name in the signed folder, checked alone."""
    # Pins are checked like a signed manifest; messages say which one it is.
    signed_word, cover = ("pinned", "pins") if signer.kind == "pins" else ("signed", "signature")
    by_signature = set(manifest.serialization.ignore_paths)
    if root.is_dir() and sig_path is not None:
        rel = relative_inside(sig_path, root)
        if rel is not None:
            by_signature.add(rel)

    def holds_signed(p: str) -> bool:
        return any(n == p or n.startswith(p + "/") for n in manifest.by_name)

    asked = (set(DEFAULT_IGNORED) if ignore_git_paths else set()) | {
        check_ignore_path(p) for p in ignore_paths
    }
    by_verifier = {p for p in asked - by_signature if not holds_signed(p)}
    ignored = by_signature | by_verifier
    if member is not None:
        (file,) = list_model_files(root, allow_symlinks=allow_symlinks)
        present = {member: ModelFile(member, file.path, file.size)}
        names = [member]
    else:
        present = {f.name: f for f in list_model_files(
            root, ignore_paths=ignored, allow_symlinks=allow_symlinks
        )}
        names = [f.name for f in manifest.files]
    # What was signed decides (a signed model whose files are gone is "missing",
    # below); a size the signature does not record is the file's.
    refuse_empty(root, (_signed_size(manifest.by_name[n], present.get(n)) for n in names),
                 single=member is not None or SINGLE_FILE_NAME in manifest.by_name,
                 doing="verify")
    missing = [n for n in names if n not in present]
    extra = sorted(n for n in present if n not in manifest.by_name)
    if missing:
        also = f"; unsigned files present: {_names(extra)} (renamed?)" if extra else ""
        raise MissingFileError(f"{root}: {signed_word} files missing: {_names(missing)}{also}")
    if extra and not allow_extra_files:
        raise UnexpectedFileError(
            f"{root}: files not covered by the {cover}: {_names(extra)} "
            "(allow_extra_files ignores them)"
        )
    to_check = [present[n] for n in names]
    signed = [manifest.by_name[mf.name] for mf in to_check]
    # A known size (pins may give one) that differs fails before any hashing.
    resized = [f"{mf.name!r} (size {mf.size:,} bytes, {signed_word} {s.size:,})"
               for mf, s in zip(to_check, signed, strict=True)
               if s.size is not None and s.size != mf.size]
    if resized:
        raise DigestMismatchError(
            f"{root}: contents differ from the {signed_word} model: {'; '.join(resized)}"
        )
    # A safetensors file signed with tensorfile's extension is checked by its
    # header and tensor digests: together they cover every byte (a valid
    # header's tensors tile the data to the end of the file), and unlike one
    # file digest they hash in parallel. Other files by their file digest.
    by_parts = [s.safetensors is not None and is_safetensors(mf)
                for mf, s in zip(to_check, signed, strict=True)]
    # The signed header digests are compared before any data is hashed: a
    # file swapped for another (a 4 GiB sparse one, say) fails after a read
    # of its header. A header that matches fixes the file's size (its
    # tensors tile the data to the end), so the hashing below covers it.
    headers = [(mf, _header_differs(mf, s.safetensors))
               for mf, s, parts in zip(to_check, signed, by_parts, strict=True)
               if parts and s.safetensors is not None]
    differ = [f"{mf.name!r} ({why})" for mf, why in headers if why]
    if differ:
        raise DigestMismatchError(
            f"{root}: contents differ from the {signed_word} model: {'; '.join(differ)}"
        )
    try:
        contents = hash_contents(
            to_check,
            whole=[deep or not p for p in by_parts],
            # Without signed tensor digests there is nothing to compare them with.
            tensors=by_parts,
            options=HashOptions(
                tensor_algorithm=manifest.tensor_algorithm or DEFAULT_TENSOR_ALGORITHM,
                file_algorithm=manifest.serialization.hash_type,
                workers=workers,
            ),
            progress=progress,
        )
    except FormatError as e:  # the header parsed when it was signed
        raise DigestMismatchError(
            f"{root}: contents differ from the {signed_word} model: header no longer parses: {e}"
        ) from None
    bad = []
    tensors = 0
    for mf, want, got, parts in zip(to_check, signed, contents, by_parts, strict=True):
        if got.digest is not None and got.digest != want.digest:
            bad.append(mf)
        elif parts:
            assert want.safetensors is not None and got.safetensors is not None
            if not _same_parts(want.safetensors, got.safetensors):
                # Tampered bytes, or a signer that recorded wrong tensor
                # digests? Only the file digest can tell (failure path only).
                if got.digest is None and hash_file(
                    mf, HashOptions(tensors=False, file_algorithm=want.algorithm)
                ).digest != want.digest:
                    bad.append(mf)
                    continue
                raise ManifestError(
                    f"{mf.name}: the file matches its signed file digest but not the signed "
                    f"header and tensor digests: {_wrong_parts(want.safetensors, got.safetensors)}"
                )
            tensors += len(want.safetensors.tensors)
        elif want.safetensors is not None:
            _check_extension(mf, want.safetensors)
            tensors += len(want.safetensors.tensors)
    if bad:
        raise DigestMismatchError(
            f"{root}: contents differ from the {signed_word} model: "
            + "; ".join(_explain(mf, manifest.by_name[mf.name]) for mf in bad)
        )
    return VerificationReport(
        model=str(root),
        signature=source,
        model_name=manifest.model_name,
        root_digest=manifest.root_digest,
        serialization=manifest.serialization.to_dict(),
        signer=signer,
        files=tuple(names),
        bytes_hashed=sum(c.size * ((c.digest is not None) + (c.safetensors is not None))
                         for c in contents),
        tensors=tensors,
        tensor_digests_checked=any(by_parts),
        tensor_algorithm=manifest.tensor_algorithm,
        by_file_digest=tuple(mf.name for mf, c in zip(to_check, contents, strict=True)
                             if c.digest is not None),
        extra_files=tuple(extra),
        ignored_by_signature=tuple(sorted(by_signature)),
        ignored_by_verifier=tuple(sorted(by_verifier)),
        ignored_present=tuple(sorted(
            p for p in ignored if root.is_dir() and os.path.lexists(root / p)
        )),
        part_of=None if member is None or sig_path is None else str(sig_path.parent),
    )


def _signed_size(signed: FileDigest, present: ModelFile | None) -> int:
    if signed.size is not None:
        return signed.size
    return present.size if present is not None else -1  # unknown and gone: not "empty"


def _same_parts(signed: SafetensorsDigests, computed: SafetensorsDigests) -> bool:
    return signed.header == computed.header and dict(signed.tensors) == dict(computed.tensors)


def _wrong_parts(signed: SafetensorsDigests, computed: SafetensorsDigests) -> str:
    """Which parts the signed extension gets wrong, for a file whose bytes are signed."""
    wrong = [t for t, d in computed.tensors.items() if signed.tensors.get(t) != d]
    named = set(signed.tensors) ^ set(computed.tensors)
    parts = ["header digest"] if signed.header != computed.header else []
    if named:
        parts.append(f"tensor names {_names(sorted(named))}")
    if wrong:
        parts.append(f"tensor digests {_names(wrong)}")
    return ", ".join(parts)


def _header_differs(mf: ModelFile, signed: SafetensorsDigests) -> str | None:
    """Why the header of ``mf`` cannot be the signed one, or None if it hashes
    to the signed header digest (or cannot be read now: hashing reports that)."""
    try:
        hdr, raw = read_path_header(mf.path)
    except FormatError as e:
        return f"header no longer parses: {e}"
    except OSError:
        return None
    if digest_hex(signed.algorithm, raw) == signed.header:
        return None
    # (Whether the file or the signer's header digest is wrong, only hashing
    # the whole file could tell; either way it is not the signed model.)
    why = f"its header does not hash to the signed {signed.algorithm} header digest"
    named = set(hdr.tensors) ^ set(signed.tensors)
    if named:
        why += f"; tensors renamed, added or removed: {_names(sorted(named))}"
    return why


def _check_extension(mf: ModelFile, signed: SafetensorsDigests) -> None:
    """The file matched its signed digest; check that tensorfile's extension
    names its header and tensors (the tensor digests are covered by the file's)."""
    try:
        hdr, raw = read_path_header(mf.path)
        names = set(hdr.tensors)
    except (OSError, FormatError) as e:
        raise ManifestError(f"{mf.name}: signed with tensor digests but unreadable: {e}") from None
    if digest_hex(signed.algorithm, raw) != signed.header or names != set(signed.tensors):
        raise ManifestError(
            f"{mf.name}: the signed tensorfile extension does not describe this file's header"
        )


def _explain(mf: ModelFile, signed: FileDigest) -> str:
    """Name what changed in one file: the header, which tensors, or just the bytes."""
    if signed.safetensors is None:
        return f"{mf.name!r} ({signed.algorithm} differs)"
    try:
        now = hash_file(mf, HashOptions(tensor_algorithm=signed.safetensors.algorithm,
                                        file_algorithm=signed.algorithm)).safetensors
    except FormatError as e:  # a file that no longer parses is explained by the parse error
        return f"{mf.name!r} ({signed.algorithm} differs; {e})"
    if now is None:
        return f"{mf.name!r} ({signed.algorithm} differs)"
    parts = []
    if now.header != signed.safetensors.header:
        parts.append("header changed")
    old, new = signed.safetensors.tensors, now.tensors
    changed = [t for t in new if t in old and new[t] != old[t]]
    added = [t for t in new if t not in old]
    removed = [t for t in old if t not in new]
    if changed:
        parts.append(f"tensor data changed: {_names(changed)}")
    if added or removed:
        parts.append(f"tensors renamed, added or removed: {_names(removed + added)}")
    return f"{mf.name!r} ({'; '.join(parts) or 'bytes outside tensors changed'})"
