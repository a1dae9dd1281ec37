"""Pinned verification: a model checked against digests the user already
trusts, with no key and no signature.

A :class:`Pins` is a set of file digests (and, from ``tensorfile hash
--json``, header and tensor digests) read from a file the user trusts:

* the JSON ``tensorfile hash --json`` prints (the envelope or its ``result``);
* a JSON object of file name to SHA-256: ``"hex"``, ``"sha256:hex"`` (the
  Hub's LFS ``oid`` form), or ``{"sha256": hex, "size": n}`` /
  ``{"oid": "sha256:hex", "size": n}``;
* the Hub's model info JSON (``siblings`` with ``rfilename`` and
  ``lfs: {sha256, size}``): only LFS files are pinned;
* ``sha256sum`` output (``HEX  NAME``, ``HEX *NAME``), BSD tags
  (``SHA256 (NAME) = HEX``), or ``sha256:HEX  NAME`` lines;
* one Git LFS pointer (``version``/``oid sha256:``/``size``), which pins a
  single file.

Pins become a :class:`~tensorfile.integrity.manifest.Manifest` and go
through the same checks as a verified signature (:func:`check_model`, and
verify-on-load): every pinned file present, every byte matching, no unpinned
file unless allowed. Anything unreadable, ambiguous or contradictory in a
pins file raises :class:`~tensorfile.errors.PinsError`: it never pins less
than it seems to.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tensorfile._io.files import read_bounded
from tensorfile.errors import BundleError, NotSignedError, PinsError
from tensorfile.integrity._json import loads_strict
from tensorfile.integrity.hashing import (
    ALGORITHMS,
    SINGLE_FILE_NAME,
    FileDigest,
    ProgressCallback,
    SafetensorsDigests,
    resource_sort_key,
)
from tensorfile.integrity.manifest import Manifest, Serialization, model_name_of
from tensorfile.integrity.verify import SignerIdentity, VerificationReport, check_model

#: Largest pins file read (a manifest of 100,000 tensors is about 10 MB).
MAX_PINS_BYTES = 256 << 20
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_GNU = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64}) [ *](.+)")
_BSD = re.compile(r"SHA256 \((.+)\) = ([0-9a-fA-F]{64})")
LFS_VERSION = "version https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class Pins:
    """Trusted digests of a model's files, for :func:`verify_pins` and
    ``load_file(..., verify=pins)``.

    ``files`` maps a resource name (relative to the model folder, ``/``; ``"."``
    for a single file) to its :class:`FileDigest` (``algorithm`` ``sha256`` or
    ``blake3``; ``size`` when the pins say it; header and tensor digests when
    they come from ``tensorfile hash --json``).
    """

    files: Mapping[str, FileDigest]
    #: Where the pins came from (a path, or a description).
    source: str = "pins"
    #: SHA-256 of the pins file's bytes: what was trusted.
    fingerprint: str = ""
    #: The paths the pinned manifest says it leaves out (``hash --json`` only).
    ignore_paths: tuple[str, ...] = ()
    #: Verify-on-load: the folder the names are relative to (default: the
    #: pins file's folder, or the file name alone).
    model_root: str | os.PathLike[str] | None = None
    #: Verify-on-load: check every tensor at open.
    eager: bool = False

    def __post_init__(self) -> None:
        if not self.files:
            raise PinsError(f"{self.source}: pins no file")
        algorithms = {f.algorithm for f in self.files.values()}
        if len(algorithms) != 1:
            raise PinsError(f"{self.source}: pins mix digest algorithms: {sorted(algorithms)}")
        if SINGLE_FILE_NAME in self.files and len(self.files) != 1:
            raise PinsError(f"{self.source}: a pin for '.' (one file) must be the only pin")

    @property
    def algorithm(self) -> str:
        return next(iter(self.files.values())).algorithm

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kw: Any) -> Pins:
        """Read and parse a pins file (any of the formats in the module doc)."""
        data = read_bounded(path, MAX_PINS_BYTES, PinsError, "pins")
        return parse_pins(data, str(path), **kw)

    def with_root(self, model_root: str | os.PathLike[str]) -> Pins:
        return replace(self, model_root=model_root)

    def signer(self) -> SignerIdentity:
        return SignerIdentity("pins", self.algorithm, self.fingerprint)

    def manifest_for(self, model: Path) -> Manifest:
        """The pins as the manifest of ``model`` (a folder, or one file: then
        its pin is ``"."`` or the one whose name is the file's name)."""
        if os.path.isdir(model):
            if SINGLE_FILE_NAME in self.files:
                raise PinsError(f"{self.source}: pins one file ('.'), but {model} is a folder")
            files = sorted(self.files.values(), key=lambda f: resource_sort_key(f.name))
        else:
            name = self.resource_for(model)
            files = [replace(self.files[name], name=SINGLE_FILE_NAME)]
        return Manifest(
            model_name_of(model), tuple(files),
            Serialization(hash_type=self.algorithm, ignore_paths=self.ignore_paths),
        )

    def resource_for(self, path: str | os.PathLike[str]) -> str:
        """The pin of one file: ``"."``, its path relative to ``model_root`` (or
        to the pins file's folder), or its bare name. Two different pins that
        could both be meant are refused rather than guessed."""
        if SINGLE_FILE_NAME in self.files:
            return SINGLE_FILE_NAME
        p = os.path.abspath(path)
        candidates = set()
        if self.model_root is not None:
            root: str | os.PathLike[str] | None = self.model_root
        else:
            root = os.path.dirname(os.path.abspath(self.source)) if os.path.isfile(self.source) else None
            if os.path.basename(p) in self.files:
                candidates.add(os.path.basename(p))
        if root is not None:
            rel = os.path.relpath(p, os.path.abspath(root)).replace(os.sep, "/")
            if rel in self.files:
                candidates.add(rel)
        if len(candidates) > 1:
            raise NotSignedError(
                f"{path}: more than one pin could be meant ({', '.join(sorted(candidates))}); "
                "set Pins.model_root"
            )
        if not candidates:
            raise NotSignedError(f"{path}: no pin for this file in {self.source}")
        return candidates.pop()


def verify_pins(
    model: str | os.PathLike[str],
    pins: Pins | str | os.PathLike[str],
    *,
    allow_extra_files: bool = False,
    allow_symlinks: bool = False,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
    deep: bool = False,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    """Check the model at ``model`` against ``pins`` (a :class:`Pins` or a pins
    file): the same checks, errors and report as :func:`verify` after a
    signature verified, the pins standing in for the signed manifest. A
    pinned size that differs fails before any hashing."""
    p = pins if isinstance(pins, Pins) else Pins.from_file(pins)
    root = Path(model)
    manifest = p.manifest_for(root)
    source = Path(p.source) if os.path.isfile(p.source) else None
    return check_model(
        root, manifest, p.signer(), p.source, sig_path=source,
        allow_extra_files=allow_extra_files, allow_symlinks=allow_symlinks,
        ignore_paths=ignore_paths, ignore_git_paths=ignore_git_paths, deep=deep,
        workers=workers, progress=progress,
    )


# ------------------------------------------------------------------ parsing


def parse_pins(data: bytes, source: str = "pins", **kw: Any) -> Pins:
    """Parse the bytes of a pins file (formats in the module doc)."""
    fingerprint = hashlib.sha256(data).hexdigest()
    head = data.lstrip()[:1]
    try:
        if head in (b"{", b"["):
            files, ignore = _from_json(data, source)
        else:
            files, ignore = _from_text(data, source), ()
    except BundleError as e:  # from the strict JSON readers
        raise PinsError(f"{source}: {e}") from None
    return Pins(files, source, fingerprint, ignore, **kw)


def _name(raw: object, source: str) -> str:
    if type(raw) is not str or not raw:
        raise PinsError(f"{source}: a file name must be a non-empty string, got {raw!r:.80}")
    name = raw[2:] if raw.startswith("./") else raw
    if name == SINGLE_FILE_NAME:
        return name
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(
        p in ("", ".", "..") for p in parts
    ):
        raise PinsError(f"{source}: {raw!r:.80} is not a plain path relative to the model folder")
    return name


def _hex(raw: object, what: str, source: str) -> str:
    if type(raw) is str and raw.startswith("sha256:"):
        raw = raw[len("sha256:"):]
    if type(raw) is not str or not _HEX.fullmatch(raw):
        raise PinsError(f"{source}: {what} must be 64 hex digits (SHA-256), got {raw!r:.80}")
    return raw.lower()


def _size(raw: object, what: str, source: str) -> int | None:
    if raw is None:
        return None
    if type(raw) is not int or raw < 0:
        raise PinsError(f"{source}: size of {what} must be a non-negative integer, got {raw!r:.40}")
    return raw


def _add(files: dict[str, FileDigest], entry: FileDigest, source: str) -> None:
    if entry.name in files:
        raise PinsError(f"{source}: {entry.name!r} is pinned twice")
    files[entry.name] = entry


def _from_text(data: bytes, source: str) -> dict[str, FileDigest]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PinsError(f"{source}: pins are neither JSON nor UTF-8 text") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if lines and lines[0] == LFS_VERSION:
        return _from_lfs_pointer(lines, source)
    files: dict[str, FileDigest] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("\\"):
            raise PinsError(
                f"{source}:{no}: escaped file names (a backslash or newline in the name) "
                "are not supported"
            )
        m = _GNU.fullmatch(line)
        if m:
            digest, name = m.group(1), m.group(2)
        elif b := _BSD.fullmatch(line):
            name, digest = b.group(1), b.group(2)
        else:
            raise PinsError(
                f"{source}:{no}: not a SHA-256 line ('HEX  NAME', 'HEX *NAME', "
                f"'SHA256 (NAME) = HEX'): {line!r:.80}"
            )
        n = _name(name, f"{source}:{no}")
        _add(files, FileDigest(n, digest.lower(), algorithm="sha256"), source)
    return files


def _from_lfs_pointer(lines: list[str], source: str) -> dict[str, FileDigest]:
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(" ")
        if not sep or key in fields:
            raise PinsError(f"{source}: malformed Git LFS pointer line {line!r:.80}")
        fields[key] = value
    oid = fields.get("oid", "")
    if not oid.startswith("sha256:"):
        raise PinsError(f"{source}: Git LFS pointer without an 'oid sha256:' line")
    size = fields.get("size", "")
    if not size.isdigit():
        raise PinsError(f"{source}: Git LFS pointer without a 'size' line")
    return {SINGLE_FILE_NAME: FileDigest(SINGLE_FILE_NAME, _hex(oid, "oid", source),
                                         int(size), algorithm="sha256")}


def _from_json(data: bytes, source: str) -> tuple[dict[str, FileDigest], tuple[str, ...]]:
    doc = loads_strict(data, source)
    if type(doc) is dict and doc.get("command") == "hash" and "result" in doc:
        doc = doc["result"]  # the --json envelope
    files: dict[str, FileDigest] = {}
    if type(doc) is dict and "files" in doc and "serialization" in doc:
        return _from_manifest(doc, source)
    if type(doc) is dict and "siblings" in doc:
        siblings = doc["siblings"]
        if type(siblings) is not list:
            raise PinsError(f"{source}: 'siblings' must be a list")
        for s in siblings:
            if type(s) is not dict:
                raise PinsError(f"{source}: each sibling must be an object")
            lfs = s.get("lfs")
            if lfs is None:
                continue  # a file kept in git: no SHA-256 to pin it by
            if type(lfs) is not dict:
                raise PinsError(f"{source}: 'lfs' of {s.get('rfilename')!r:.80} must be an object")
            name = _name(s.get("rfilename"), source)
            _add(files, FileDigest(name, _hex(lfs.get("sha256", lfs.get("oid")), name, source),
                                   _size(lfs.get("size"), name, source), algorithm="sha256"),
                 source)
        if not files:
            raise PinsError(f"{source}: no sibling has an LFS SHA-256 to pin")
        return files, ()
    if type(doc) is not dict:
        raise PinsError(f"{source}: JSON pins must be an object of file name to SHA-256")
    for raw, value in doc.items():
        name = _name(raw, source)
        if type(value) is dict:
            unknown = set(value) - {"sha256", "oid", "size"}
            if unknown or ("sha256" in value) == ("oid" in value):
                raise PinsError(
                    f"{source}: pin of {name!r} must have one of 'sha256' or 'oid' (and 'size'), "
                    f"has {sorted(value)}"
                )
            digest = _hex(value.get("sha256", value.get("oid")), name, source)
            size = _size(value.get("size"), name, source)
        else:
            digest, size = _hex(value, name, source), None
        _add(files, FileDigest(name, digest, size, algorithm="sha256"), source)
    return files, ()


def _from_manifest(doc: dict[str, Any], source: str) -> tuple[dict[str, FileDigest], tuple[str, ...]]:
    """What ``tensorfile hash --json`` prints (``Manifest.to_dict``)."""
    ser = doc["serialization"]
    if type(ser) is not dict or ser.get("hash_type") not in ALGORITHMS:
        raise PinsError(f"{source}: manifest serialization hash_type must be one of {ALGORITHMS}")
    alg = ser["hash_type"]
    ignore = ser.get("ignore_paths", [])
    if type(ignore) is not list or not all(type(p) is str for p in ignore):
        raise PinsError(f"{source}: manifest ignore_paths must be a list of strings")
    if type(doc["files"]) is not list:
        raise PinsError(f"{source}: manifest files must be a list")
    files: dict[str, FileDigest] = {}
    for f in doc["files"]:
        if type(f) is not dict:
            raise PinsError(f"{source}: each manifest file must be an object")
        name = _name(f.get("name"), source)
        if alg not in f:
            raise PinsError(f"{source}: manifest file {name!r} has no {alg} digest")
        parts = None
        if "tensors" in f or "header" in f:
            talg = f.get("tensor_algorithm")
            tensors = f.get("tensors")
            if talg not in ALGORITHMS or type(tensors) is not dict:
                raise PinsError(f"{source}: tensor digests of {name!r} are malformed")
            parts = SafetensorsDigests(
                header=_hex64(f.get("header"), f"header digest of {name!r}", source),
                tensors={str(t): _hex64(d, f"digest of tensor {t!r}", source)
                         for t, d in tensors.items()},
                algorithm=talg,
            )
        digest = _hex64(f[alg], f"{alg} of {name!r}", source)
        _add(files, FileDigest(name, digest, _size(f.get("size"), name, source), parts, alg),
             source)
    talgs = {f.safetensors.algorithm for f in files.values() if f.safetensors}
    if len(talgs) > 1:
        raise PinsError(f"{source}: tensor digests mix algorithms: {sorted(talgs)}")
    for p in ignore:
        if p.startswith("/") or ".." in p.split("/"):
            raise PinsError(f"{source}: manifest ignore_paths has an invalid entry {p!r:.80}")
    return files, tuple(ignore)


def _hex64(raw: object, what: str, source: str) -> str:
    """A digest as ``tensorfile hash --json`` writes it: 64 lowercase hex digits."""
    if type(raw) is not str or not re.fullmatch(r"[0-9a-f]{64}", raw):
        raise PinsError(f"{source}: {what} must be 64 lowercase hex digits, got {raw!r:.80}")
    return raw
