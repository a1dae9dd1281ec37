"""A local, offline Sigstore: Fulcio-like CA, CT log, Rekor log, trusted_root.json.

Builds what model-signing's keyless signing produces, with local keys instead
of Sigstore's public-good instance (which needs the network and an OIDC
login):

* a CA (root -> intermediate, ECDSA P-384/P-256) issuing a short-lived leaf
  (ten minutes, as Fulcio does) with the signer's e-mail as SAN, the OIDC
  issuer extensions (1.3.6.1.4.1.57264.1.1 raw and .1.8 DER UTF8String),
  codeSigning EKU, and an embedded precertificate SCT signed by a local CT
  log key (RFC 6962 over the TBS without the SCT list);
* a DSSE envelope over the OMS statement, signed with the leaf's key;
* a Rekor ``dsse/0.0.1`` entry for it: canonical body, an RFC 6962 Merkle tree
  of several leaves with the entry at ``log_index``, the inclusion proof, a
  checkpoint signed as a note by the local log key, and the signed entry
  timestamp (SET) over the RFC 8785 form of the entry;
* a Sigstore bundle v0.3 (``certificate`` + ``tlogEntries`` + ``dsseEnvelope``)
  and a ``trusted_root.json`` naming the CA chain, the log key and the CT key.

Everything is generated per call; nothing is downloaded.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tensorfile.integrity.bundle import pae

OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
IN_TOTO = "application/vnd.in-toto+json"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: Any) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _octet_string(b: bytes) -> bytes:
    return b"\x04" + _der_len(len(b)) + b


def _utf8_string(s: str) -> bytes:
    b = s.encode()
    return b"\x0c" + _der_len(len(b)) + b


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tensorfile-test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Authority:
    """The local Fulcio CA, CT log and Rekor log (keys and certificates)."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    ct_key: ec.EllipticCurvePrivateKey
    rekor_key: ec.EllipticCurvePrivateKey
    origin: str = "rekor.local - 1234567890"

    @classmethod
    def new(cls, now: datetime.datetime) -> Authority:
        root_key = ec.generate_private_key(ec.SECP384R1())
        inter_key = ec.generate_private_key(ec.SECP384R1())
        day = datetime.timedelta(days=1)
        ca_usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        root = (
            x509.CertificateBuilder().subject_name(_name("local-fulcio-root"))
            .issuer_name(_name("local-fulcio-root")).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 30 * day).not_valid_after(now + 3650 * day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA384())
        )
        inter = (
            x509.CertificateBuilder().subject_name(_name("local-fulcio-intermediate"))
            .issuer_name(root.subject).public_key(inter_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 30 * day).not_valid_after(now + 365 * day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False)
            .sign(root_key, hashes.SHA384())
        )
        return cls(root_key, root, inter_key, inter,
                   ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))

    # ---------------------------------------------------------------- Fulcio + CT
    def issue(self, key: ec.EllipticCurvePrivateKey, email: str, issuer: str,
              at: datetime.datetime) -> x509.Certificate:
        """A ten-minute leaf for ``email`` from OIDC ``issuer``, with an embedded SCT."""
        serial = x509.random_serial_number()

        def build(sct_list: bytes) -> x509.Certificate:
            return (
                x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.inter.subject).public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(at).not_valid_after(at + datetime.timedelta(minutes=10))
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                             False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_key.public_key()),
                    critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                               critical=True)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2, _utf8_string(issuer)),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(SCT_LIST, _octet_string(sct_list)),
                               critical=False)
                .sign(self.inter_key, hashes.SHA384())
            )

        ts_ms = int(at.timestamp() * 1000)
        # The SCT signs the TBS without the SCT list: the same whatever the list
        # holds, so a placeholder list gives the bytes to sign.
        tbs = build(self._sct_list(ts_ms, b"\0" * 70)).tbs_precertificate_bytes
        signed = struct.pack("!BBQH", 0, 0, ts_ms, 1) + _key_id(self.inter_key.public_key())
        signed += len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0)
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return build(self._sct_list(ts_ms, sig))

    def _sct_list(self, ts_ms: int, sig: bytes) -> bytes:
        sct = (bytes([0]) + _key_id(self.ct_key.public_key()) + struct.pack("!QH", ts_ms, 0)
               + bytes([4, 3]) + struct.pack("!H", len(sig)) + sig)
        one = struct.pack("!H", len(sct)) + sct
        return struct.pack("!H", len(one)) + one

    # ---------------------------------------------------------------- Rekor
    def log_entry(self, body: bytes, integrated: int, log_index: int = 3,
                  tree_size: int = 6) -> dict[str, Any]:
        """A ``tlogEntries`` item: the entry at ``log_index`` of a tree of
        ``tree_size`` leaves (the others random), with proof, checkpoint and SET."""
        leaves = [hashlib.sha256(bytes([i])).digest() for i in range(tree_size)]
        leaves[log_index] = body
        hashed = [hashlib.sha256(b"\0" + leaf).digest() for leaf in leaves]
        root, proof = _root_and_proof(hashed, log_index)
        log_id = _key_id(self.rekor_key.public_key())
        note = f"{self.origin}\n{tree_size}\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + "\n" + f"\u2014 rekor.local {_b64(log_id[:4] + note_sig)}\n"
        set_payload = rfc8785.dumps({
            "body": _b64(body), "integratedTime": integrated,
            "logID": log_id.hex(), "logIndex": log_index,
        })
        set_sig = self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))
        return {
            "logIndex": str(log_index),
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(set_sig)},
            "inclusionProof": {
                "logIndex": str(log_index), "rootHash": _b64(root), "treeSize": str(tree_size),
                "hashes": [_b64(h) for h in proof], "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }

    # ---------------------------------------------------------------- trust
    def trusted_root(self, now: datetime.datetime) -> dict[str, Any]:
        start = (now - datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: Any, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url, "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(_spki(key.public_key())),
                              "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": start}},
                "logId": {"keyId": _b64(_key_id(key.public_key()))},
            }

        return {
            "mediaType": TRUSTED_ROOT,
            "tlogs": [log(self.rekor_key, "https://rekor.local")],
            "certificateAuthorities": [{
                "subject": {"organization": "tensorfile-test", "commonName": "local-fulcio"},
                "uri": "https://fulcio.local",
                "certChain": {"certificates": [
                    {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                    for c in (self.inter, self.root)]},
                "validFor": {"start": start},
            }],
            "ctlogs": [log(self.ct_key, "https://ctfe.local")],
            "timestampAuthorities": [],
        }

    def sign_statement(self, statement: bytes, email: str, issuer: str,
                       now: datetime.datetime) -> dict[str, Any]:
        """The Sigstore bundle model-signing's keyless signing writes for ``statement``."""
        key = ec.generate_private_key(ec.SECP256R1())
        at = now - datetime.timedelta(minutes=1)
        leaf = self.issue(key, email, issuer, at)
        sig = key.sign(pae(statement, IN_TOTO), ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": _b64(statement), "payloadType": IN_TOTO,
                    "signatures": [{"sig": _b64(sig)}]}
        body = json.dumps({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256",
                                 "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256",
                                "value": hashlib.sha256(statement).hexdigest()},
                "signatures": [{"signature": _b64(sig),
                                "verifier": _b64(leaf.public_bytes(serialization.Encoding.PEM))}],
            },
        }, separators=(",", ":")).encode()
        return {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(leaf.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [self.log_entry(body, int(at.timestamp()) + 5)],
            },
            "dsseEnvelope": envelope,
        }


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of already leaf-hashed entries."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\1" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 audit path of leaf ``m``, bottom up."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _root_and_proof(leaves: list[bytes], m: int) -> tuple[bytes, list[bytes]]:
    return _mth(leaves), _path(m, leaves)


def write_keyless(model: Path, out: Path, email: str = "signer@example.com",
                  issuer: str = "https://oidc.local", authority: Authority | None = None,
                  when: datetime.datetime | None = None,
                  **hash_kw: Any) -> tuple[Path, Path, Authority]:
    """Sign ``model`` keylessly with a local authority (at ``when``, default now):
    the bundle and trusted_root.json paths, and the authority."""
    from tensorfile.integrity import HashOptions, hash_model
    from tensorfile.integrity.sign import encode_statement

    now = when or datetime.datetime.now(datetime.timezone.utc)
    auth = authority or Authority.new(now)
    out.mkdir(parents=True, exist_ok=True)
    sig = out / "model.sig"
    statement = encode_statement(hash_model(model, HashOptions(**hash_kw), signature=sig))
    sig.write_text(json.dumps(auth.sign_statement(statement, email, issuer, now)))
    root = out / "trusted_root.json"
    root.write_text(json.dumps(auth.trusted_root(now)))
    return sig, root, auth
