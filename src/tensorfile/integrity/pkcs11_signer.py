"""Signing with a key in a PKCS#11 token or HSM (SoftHSM2, YubiHSM, a cloud HSM's PKCS#11 library).

The key is named by an RFC 7512 ``pkcs11:`` URI, the form model-signing's
``sign pkcs11-key --pkcs11_uri`` takes, so one URI works with both:

    pkcs11:token=my-token;object=my-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234

Path attributes read: ``token`` (label), ``serial``, ``slot-id``, ``object``
(the key's label), ``id`` (its CKA_ID, percent-encoded bytes); one of
``object`` or ``id`` is required. Query attributes: ``module-path`` (the
PKCS#11 library, or a folder to search for ``module-name``), ``module-name``
(searched in the usual folders), ``pin-value`` or ``pin-source`` (an
absolute file path or ``file:`` URI holding the PIN). Without a PIN in the
URI, ``pin=`` or the ``TENSORFILE_PKCS11_PIN`` environment variable is used.

The data is hashed here and the token signs the digest (``CKM_ECDSA``), as
model-signing does, so any token that does ECDSA works; its raw ``r || s``
becomes a DER signature. ECDSA P-256/P-384/P-521 keys only. Needs the
``python-pkcs11`` binding (``pip install 'tensorfile[pkcs11]'``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlparse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tensorfile.errors import KeyLoadError
from tensorfile.integrity.keys import PublicKey, check_supported
from tensorfile.integrity.signers import DigestSigner

PIN_ENV = "TENSORFILE_PKCS11_PIN"
#: Where ``module-name`` is looked for (model-signing searches the first two).
MODULE_DIRS = (
    "/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11", "/usr/lib/softhsm", "/usr/local/lib/softhsm",
)
_PATH_ATTRS = frozenset({
    "token", "manufacturer", "serial", "model", "library-manufacturer",
    "library-description", "library-version", "slot-description",
    "slot-manufacturer", "slot-id", "object", "id", "type",
})
_QUERY_ATTRS = frozenset({"pin-value", "pin-source", "module-name", "module-path"})


def parse_pkcs11_uri(uri: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The path and query attributes of an RFC 7512 URI, percent-decoded.
    :class:`KeyLoadError` for anything malformed or unknown (a typo must not
    silently widen which key is used)."""
    if not uri.startswith("pkcs11:"):
        raise KeyLoadError("a PKCS#11 URI starts with 'pkcs11:'")
    path, _, query = uri[len("pkcs11:"):].partition("?")

    def attrs(part: str, sep: str, known: frozenset[str], what: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for item in filter(None, part.split(sep)):
            name, eq, value = item.partition("=")
            if not eq or name not in known:
                raise KeyLoadError(f"PKCS#11 URI: unknown or malformed {what} attribute {item!r:.60}")
            if name in out:
                raise KeyLoadError(f"PKCS#11 URI: {what} attribute {name!r} given twice")
            out[name] = unquote_to_bytes(value)
        return out

    p = attrs(path, ";", _PATH_ATTRS, "path")
    q = attrs(query, "&", _QUERY_ATTRS, "query")
    if "object" not in p and "id" not in p:
        raise KeyLoadError("PKCS#11 URI names no key: give object=LABEL or id=ID")
    if "pin-value" in q and "pin-source" in q:
        raise KeyLoadError("PKCS#11 URI: give pin-value or pin-source, not both")
    if p.get("type", b"private") not in (b"private", b"public"):
        raise KeyLoadError("PKCS#11 URI: type must name the private or public key")
    return p, q


def _module(q: dict[str, bytes], module: str | os.PathLike[str] | None) -> str:
    if module is not None:
        return os.fspath(module)
    path = q.get("module-path", b"").decode()
    if path and os.path.isfile(path):
        return path
    name = q.get("module-name", b"").decode().lower()
    if not name:
        raise KeyLoadError(
            "PKCS#11 URI: no module: add ?module-path=/path/to/library.so (or module-name)"
        )
    for d in [path] if path else MODULE_DIRS:
        for f in sorted(glob.glob(os.path.join(glob.escape(d), "*"))):
            base = os.path.basename(f).lower()
            if base == name or base.startswith(name + "."):
                return f
    raise KeyLoadError(f"PKCS#11 module {name!r} not found in {path or ', '.join(MODULE_DIRS)}")


def _pin(q: dict[str, bytes], pin: str | None) -> str | None:
    if "pin-value" in q:
        return q["pin-value"].decode()
    if "pin-source" in q:
        src = urlparse(q["pin-source"].decode())
        if src.scheme not in ("", "file") or not os.path.isabs(src.path):
            raise KeyLoadError("PKCS#11 URI: pin-source must be an absolute path or file: URI")
        try:
            return Path(src.path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise KeyLoadError(f"PKCS#11 pin-source {src.path}: {e.strerror}") from None
    return pin if pin is not None else os.environ.get(PIN_ENV)


class Pkcs11Signer(DigestSigner):
    """The ECDSA key a ``pkcs11:`` URI names, in its token. Opens one session,
    logged in, for the signer's life (:meth:`close`, or use it as a context
    manager)."""

    def __init__(
        self, uri: str, *, module: str | os.PathLike[str] | None = None, pin: str | None = None
    ) -> None:
        self._session: Any = None
        try:
            import pkcs11
            from pkcs11 import Attribute, ObjectClass
            from pkcs11.exceptions import PKCS11Error
            from pkcs11.util.ec import encode_ec_public_key
        except ImportError:
            raise KeyLoadError(
                "PKCS#11 signing needs the python-pkcs11 package (pip install 'tensorfile[pkcs11]')"
            ) from None
        p, q = parse_pkcs11_uri(uri)
        lib_path = _module(q, module)
        try:
            lib = pkcs11.lib(lib_path)
            token_filter: dict[str, Any] = {}
            if "token" in p:
                token_filter["token_label"] = p["token"].decode()
            if "serial" in p:
                token_filter["token_serial"] = p["serial"]
            if "slot-id" in p:
                slots = [s for s in lib.get_slots(token_present=True)
                         if s.slot_id == int(p["slot-id"])]
                if not slots:
                    raise KeyLoadError(f"PKCS#11: no token in slot {p['slot-id'].decode()}")
                token = slots[0].get_token()
            else:
                token = lib.get_token(**token_filter)
            self._session = token.open(user_pin=_pin(q, pin))
            key_filter: dict[str, Any] = {}
            if "object" in p:
                key_filter["label"] = p["object"].decode()
            if "id" in p:
                key_filter["id"] = p["id"]
            self._private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY,
                                                  **key_filter)
            public = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, **key_filter)
            der = encode_ec_public_key(public)
            self._public = check_supported(serialization.load_der_public_key(der))
            self._label = str(self._private[Attribute.LABEL])
        except KeyLoadError:
            self.close()
            raise
        except (PKCS11Error, ValueError, TypeError, OSError, RuntimeError) as e:
            # Wrong PIN, no such token or key, two keys matching, not an EC key,
            # a library that is not PKCS#11: each has its own exception class.
            self.close()
            raise KeyLoadError(
                f"PKCS#11 key {uri.split('?', 1)[0]!r} ({lib_path}): "
                f"{type(e).__name__} {e}".rstrip()
            ) from None

    def public_key(self) -> PublicKey:
        return self._public

    def certificate_chain(self) -> Sequence[Any]:
        return ()

    def sign_digest(self, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        from pkcs11 import Mechanism

        raw = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        if len(raw) % 2:
            raise KeyLoadError(f"PKCS#11 token {self._label}: malformed ECDSA signature")
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    def close(self) -> None:
        """Log out and close the session (also when garbage-collected)."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # already closed by the library; nothing to release
                pass

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
