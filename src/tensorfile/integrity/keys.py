"""Keys: loading, generating, signing and checking raw signatures.

Supported key types and the hash each signs with:

=================  ==========  ==========================================
key                 hash        interoperable with model-signing 1.1.1
=================  ==========  ==========================================
ECDSA P-256         SHA-256     yes
ECDSA P-384         SHA-384     yes
ECDSA P-521         SHA-512     yes
Ed25519             (built in)  no: a tensorfile extension
=================  ==========  ==========================================

ECDSA signatures are DER-encoded, as model-signing writes them. Keys are PEM
(PKCS#8 or traditional for private keys, SubjectPublicKeyInfo for public keys).
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tensorfile._io.files import read_bounded, refuse_existing
from tensorfile.errors import KeyLoadError, KeyPasswordError, OutputExistsError, SignatureError

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
#: A key given by path (PEM file), PEM bytes, or an already loaded key object.
PathOrPem: TypeAlias = "str | os.PathLike[str] | bytes"

_CURVES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]] = {
    "secp256r1": (ec.SECP256R1, hashes.SHA256),
    "secp384r1": (ec.SECP384R1, hashes.SHA384),
    "secp521r1": (ec.SECP521R1, hashes.SHA512),
}
#: Names accepted by :func:`generate_key`.
KEY_TYPES: dict[str, str] = {
    "ecdsa-p256": "secp256r1",
    "ecdsa-p384": "secp384r1",
    "ecdsa-p521": "secp521r1",
    "ed25519": "ed25519",
}
_MAX_KEY_FILE = 1 << 20


def read_pem(source: PathOrPem, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    return read_bounded(source, _MAX_KEY_FILE, KeyLoadError, what)


def check_supported(key: object) -> PublicKey:
    """Return ``key`` if it is a public key of a supported type, else raise."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise KeyLoadError(
                f"ECDSA curve {key.curve.name} is not supported (use P-256, P-384 or P-521)"
            )
        return key
    raise KeyLoadError(
        f"{type(key).__name__} keys are not supported (use ECDSA P-256/P-384/P-521 or Ed25519)"
    )


def load_public_key(source: PathOrPem | PublicKey) -> PublicKey:
    """A supported public key from a PEM file, PEM bytes, or a key object."""
    if isinstance(source, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return check_supported(source)
    data = read_pem(source, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        foreign = _foreign_format(data, private=False)
        if foreign:
            raise KeyLoadError(f"{_where(source)}{foreign}") from None
        hint = (
            " (this is a private key; pass the public key)" if b"PRIVATE KEY" in data
            else " (this is a certificate; pass it as the trusted root instead)"
            if b"BEGIN CERTIFICATE" in data
            else ""
        )
        raise KeyLoadError(f"{_where(source)}not a PEM public key{hint}: {e}") from None
    return check_supported(key)


def load_private_key(
    source: PathOrPem | PrivateKey, password: str | bytes | None = None
) -> PrivateKey:
    """A supported private key from a PEM file, PEM bytes, or a key object.

    ``password`` decrypts an encrypted PEM; a wrong or missing password raises
    :class:`KeyLoadError`.
    """
    if isinstance(source, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        check_supported(source.public_key())
        return source
    data = read_pem(source, "private key")
    foreign = _foreign_format(data, private=True)
    if foreign:
        raise KeyLoadError(f"{_where(source)}{foreign}")
    pw = password.encode("utf-8") if isinstance(password, str) else password
    encrypted = is_encrypted_pem(data)
    if encrypted and pw is None:
        raise KeyPasswordError(f"{_where(source)}the private key is encrypted and no password was given")
    try:
        key = serialization.load_pem_private_key(data, pw if encrypted else None)
    except TypeError as e:
        raise KeyLoadError(f"{_where(source)}{e}") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        if encrypted:
            raise KeyPasswordError(f"{_where(source)}wrong password for the encrypted private key") from None
        raise KeyLoadError(f"{_where(source)}not a PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyLoadError(
            f"{_where(source)}{type(key).__name__} keys are not supported "
            "(use ECDSA P-256/P-384/P-521 or Ed25519)"
        )
    check_supported(key.public_key())
    return key


def is_encrypted_pem(data: bytes) -> bool:
    """Whether PEM ``data`` holds an encrypted private key (PKCS#8 or traditional)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def _foreign_format(data: bytes, *, private: bool) -> str | None:
    """What a key file in a format tensorfile does not read is, and how to
    convert it; ``None`` for PEM of the right kind (or anything unrecognised)."""
    head = data.lstrip()[:64]
    if head.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        return ("an OpenSSH private key (ssh-keygen's own format), not PEM: convert a copy "
                "with `ssh-keygen -p -m PKCS8 -f COPY` (it rewrites COPY in place), or make "
                "a new pair with `tensorfile keygen`")
    if head.startswith((b"ssh-ed25519 ", b"ecdsa-sha2-nistp", b"ssh-rsa ")):
        return ("an OpenSSH public key line, not PEM: convert it with "
                "`ssh-keygen -e -m PKCS8 -f KEY.pub > key.pem.pub`")
    if head[:1] == b"\x30" and b"-----BEGIN" not in data:
        return ("a binary (DER) file, such as a PKCS#12 bundle (.p12/.pfx), not PEM: "
                "extract the key with `openssl pkcs12 -in FILE -nocerts -nodes -out key.pem`"
                + (" (and its public key with `openssl pkey -in key.pem -pubout`)" if not private else ""))
    if private and b"PRIVATE KEY-----" not in data and b"PUBLIC KEY-----" in data:
        return ("a public key: signing needs the private key (the file without .pub, "
                "from `tensorfile keygen`)")
    return None


def _where(source: object) -> str:
    return "" if isinstance(source, bytes) else f"{source}: "


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_hint(key: PublicKey) -> str:
    """What OMS bundles carry as ``publicKey.hint``: hex SHA-256 of the key's PEM."""
    return hashlib.sha256(public_pem(key)).hexdigest()


def key_algorithm(key: PublicKey) -> str:
    """A stable name for reports, e.g. ``ecdsa-p256-sha256`` or ``ed25519``."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    _, h = _CURVES[key.curve.name]
    return f"ecdsa-p{key.curve.key_size}-{h.name}"


def signature_hash(key: PublicKey) -> hashes.HashAlgorithm:
    """The hash an ECDSA signature by ``key`` is made over (SHA-256 for P-256,
    SHA-384 for P-384, SHA-512 for P-521, as model-signing signs); signers
    that sign a digest (HSM, KMS) hash with it. Ed25519 signs the data itself."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyLoadError(f"{key_algorithm(key)} keys sign the data itself, not a digest")
    return _CURVES[key.curve.name][1]()


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    _, h = _CURVES[key.curve.name]
    return key.sign(data, ec.ECDSA(h()))


def verify_bytes(key: PublicKey, signature: bytes, data: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``key``'s over ``data``."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            _, h = _CURVES[key.curve.name]
            key.verify(signature, data, ec.ECDSA(h()))
    except InvalidSignature:
        raise SignatureError(
            f"signature does not verify with the {key_algorithm(key)} key {key_hint(key)[:16]}…: "
            "wrong key, or the signed payload was changed"
        ) from None


@dataclass(frozen=True)
class KeyPair:
    """Where :func:`generate_key` wrote the keys."""

    private_key: Path
    public_key: Path
    algorithm: str
    hint: str


def generate_key(
    private_key: str | os.PathLike[str],
    public_key: str | os.PathLike[str] | None = None,
    *,
    key_type: str = "ecdsa-p256",
    password: str | bytes | None = None,
    overwrite: bool = False,
) -> KeyPair:
    """Write a new key pair as PEM: the private key with mode 0600 (encrypted
    when ``password`` is given), the public key (default: ``<private>.pub``)
    with mode 0644. Existing files are kept unless ``overwrite``."""
    curve = KEY_TYPES.get(key_type)
    if curve is None:
        raise KeyLoadError(f"unknown key type {key_type!r}; choose from {', '.join(KEY_TYPES)}")
    priv_path = Path(private_key)
    pub_path = Path(public_key) if public_key is not None else Path(f"{priv_path}.pub")
    if priv_path == pub_path:
        raise KeyLoadError("private and public key paths must differ")
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if curve == "ed25519"
        else ec.generate_private_key(_CURVES[curve][0]())
    )
    pw = password.encode("utf-8") if isinstance(password, str) else password
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    )
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pub = key.public_key()
    if not overwrite:  # both checked first: never half a pair beside someone's file
        refuse_existing(priv_path)
        refuse_existing(pub_path)
    _write_new(priv_path, priv_pem, 0o600, overwrite)
    try:
        _write_new(pub_path, public_pem(pub), 0o644, overwrite)
    except BaseException:
        os.unlink(priv_path)  # written just now: no private key without its public half
        raise
    return KeyPair(priv_path, pub_path, key_algorithm(pub), key_hint(pub))


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)
    except FileExistsError:
        raise OutputExistsError(errno.EEXIST, "already exists; nothing was written", str(path)) from None
    # Any other OSError (a full or read-only disk) propagates as itself: it is
    # about where the key goes, not about a key.
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask; an existing file keeps its own
        f.write(data)
