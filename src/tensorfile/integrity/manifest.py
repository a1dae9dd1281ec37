"""Manifests: what a signature says about a model, and the in-toto statement.

A :class:`Manifest` is the list of a model's files with their digests (SHA-256
by default, or BLAKE3: the ``hash_type``) and, for safetensors files, header
and tensor digests (BLAKE3 by default, or SHA-256: see
:data:`~tensorfile.integrity.hashing.ALGORITHMS`), plus how the list was
made (:class:`Serialization`). It converts to and from the in-toto Statement v1
that OMS v1.0 signs (predicate ``https://model_signing/signature/v1.0``).
Parsing a statement checks every field's type and that the resource digests
add up to the subject's root digest.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tensorfile.errors import BundleError, ManifestError, ModelPathError, UnsupportedAlgorithmError
from tensorfile.integrity._json import hex64, json_list, json_obj, json_str
from tensorfile.integrity.hashing import (
    ALGORITHMS,
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_HASH_OPTIONS,
    DEFAULT_IGNORED,
    SINGLE_FILE_NAME,
    FileDigest,
    HashOptions,
    ModelFile,
    ProgressCallback,
    SafetensorsDigests,
    hash_files,
    is_safetensors,
    list_model_files,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: The pre-1.0 predicate model-signing 0.2 wrote (one subject per file, no
#: root digest), accepted only in 0.2's own signature encoding.
PREDICATE_TYPE_V0 = "https://model_signing/Digests/v0.1"
#: What model-signing 0.2 recorded as a file digest's algorithm (its sharded
#: forms are not read).
_V0_FILE_ALGORITHM = "file-sha256"
#: Key of tensorfile's extension inside the predicate (OMS verifiers ignore it).
EXTENSION_KEY = "tensorfile"
EXTENSION_VERSION = 1
#: Key of the re-signing hints inside the predicate (OMS verifiers ignore it):
#: each file's size and modification time when it was hashed, so that
#: ``sign --update`` re-hashes only files that changed since.
HINTS_KEY = "tensorfile_hints"


#: A file modified less than this long before it was stat'ed gets no hint:
#: a write later in the same timestamp tick (2 s on FAT, a kernel tick on
#: ext4) would leave its size and times unchanged ("racy git").
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class FileHint:
    """A file's size, modification and status-change times (ns) and inode
    number when it was hashed. Only a hint for re-signing: never used to
    decide that a model verifies. The status-change time cannot be set back
    by a program (unlike the modification time), and the inode changes when a
    file is replaced by a rename, as every atomic writer does."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    def to_json(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns,
                "inode": self.inode}


@dataclass(frozen=True)
class Serialization:
    """How the manifest was made (the predicate's ``serialization`` object)."""

    method: str = "files"
    #: Algorithm of every file digest (:data:`~tensorfile.integrity.hashing.ALGORITHMS`).
    hash_type: str = DEFAULT_FILE_ALGORITHM
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORED

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "hash_type": self.hash_type,
            "allow_symlinks": self.allow_symlinks,
            "ignore_paths": sorted(self.ignore_paths),
        }


@dataclass(frozen=True)
class Manifest:
    """A model's files and digests, in resource order."""

    model_name: str
    files: tuple[FileDigest, ...]
    serialization: Serialization = field(default_factory=Serialization)
    #: Re-signing hints by file name (:class:`FileHint`); signed, but only hints.
    hints: Mapping[str, FileHint] = field(default_factory=dict, compare=False)

    @cached_property
    def by_name(self) -> Mapping[str, FileDigest]:
        return {f.name: f for f in self.files}

    @property
    def is_single_file(self) -> bool:
        return len(self.files) == 1 and self.files[0].name == SINGLE_FILE_NAME

    @property
    def root_digest(self) -> str:
        """SHA-256 over the raw bytes of every file digest, in resource order
        (whatever the file digests' algorithm, as model-signing computes it)."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(bytes.fromhex(f.digest))
        return h.hexdigest()

    @property
    def tensor_count(self) -> int:
        return sum(len(f.safetensors.tensors) for f in self.files if f.safetensors)

    @cached_property
    def tensor_algorithm(self) -> str | None:
        """The algorithm of the header and tensor digests (one for the whole
        manifest, as the extension records it), or None without any."""
        algorithms = {f.safetensors.algorithm for f in self.files if f.safetensors}
        if len(algorithms) > 1:
            raise ManifestError(f"tensor digests mix algorithms: {', '.join(sorted(algorithms))}")
        return algorithms.pop() if algorithms else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``tensorfile hash --json`` prints)."""
        return {
            "model_name": self.model_name,
            "root_digest": self.root_digest,
            "serialization": self.serialization.to_dict(),
            "files": [
                {
                    "name": f.name,
                    f.algorithm: f.digest,
                    **({"size": f.size} if f.size is not None else {}),
                    **(
                        {"header": f.safetensors.header, "tensors": dict(f.safetensors.tensors),
                         "tensor_algorithm": f.safetensors.algorithm}
                        if f.safetensors
                        else {}
                    ),
                }
                for f in self.files
            ],
        }

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 that OMS v1.0 signs."""
        predicate: dict[str, Any] = {
            "serialization": self.serialization.to_dict(),
            "resources": [
                {"name": f.name, "algorithm": f.algorithm, "digest": f.digest} for f in self.files
            ],
        }
        ext = {f.name: _extension_entry(f.safetensors) for f in self.files if f.safetensors}
        if ext:
            predicate[EXTENSION_KEY] = {
                "version": EXTENSION_VERSION,
                "algorithm": self.tensor_algorithm,
                "files": ext,
            }
        if self.hints:
            predicate[HINTS_KEY] = {
                "version": EXTENSION_VERSION,
                "files": {n: h.to_json() for n, h in self.hints.items()},
            }
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }

    @classmethod
    def from_statement(cls, obj: object, *, v02: bool = False) -> Manifest:
        """Parse and check a statement. Raises :class:`BundleError` for a
        malformed one, :class:`UnsupportedAlgorithmError` for one tensorfile
        cannot check, :class:`ManifestError` when the digests disagree.

        ``v02``: the signature verified in model-signing 0.2.0's encoding
        (:func:`~tensorfile.integrity.bundle.pae_v02`); then, and only then,
        the statement is read as 0.2's ``Digests/v0.1`` predicate."""
        st = json_obj(obj, "statement")
        if st.get("_type") != STATEMENT_TYPE:
            raise BundleError(f"statement _type is {st.get('_type')!r}, expected {STATEMENT_TYPE!r}")
        ptype = st.get("predicateType")
        if v02 and ptype != PREDICATE_TYPE_V0:
            raise BundleError(
                f"predicate {ptype!r:.80} signed in the wrong DSSE encoding: model-signing 0.2's "
                f"encoding goes only with its predicate {PREDICATE_TYPE_V0}"
            )
        if ptype == PREDICATE_TYPE_V0:
            if not v02:
                raise UnsupportedAlgorithmError(
                    f"predicate {PREDICATE_TYPE_V0} (model-signing 0.2) is read only as 0.2 "
                    "signed it, in its own DSSE encoding; this one is in the standard encoding"
                )
            return _from_v01(st)
        if ptype != PREDICATE_TYPE:
            raise UnsupportedAlgorithmError(f"unknown predicateType {ptype!r}")
        subjects = json_list(st.get("subject"), "subject")
        if len(subjects) != 1:
            raise BundleError(f"statement must have exactly one subject, has {len(subjects)}")
        subject = json_obj(subjects[0], "subject[0]")
        name = json_str(subject.get("name"), "subject name")
        root = hex64(json_obj(subject.get("digest"), "subject digest").get("sha256"),
                    "subject sha256 digest")
        predicate = json_obj(st.get("predicate"), "predicate")
        serialization = _serialization(predicate.get("serialization"))
        resources = json_list(predicate.get("resources"), "predicate resources")
        digests: dict[str, str] = {}
        for i, item in enumerate(resources):
            res = json_obj(item, f"resources[{i}]")
            rname = _resource_name(res.get("name"), i)
            alg = res.get("algorithm")
            if alg not in ALGORITHMS:
                raise UnsupportedAlgorithmError(f"resource {rname!r}: unsupported algorithm {alg!r}")
            if alg != serialization.hash_type:
                raise BundleError(
                    f"resource {rname!r} is hashed with {alg!r} but the serialization's "
                    f"hash_type is {serialization.hash_type!r}"
                )
            if rname in digests:
                raise BundleError(f"resource {rname!r} is listed twice")
            digests[rname] = hex64(res.get("digest"), f"resource {rname!r} digest")
        if SINGLE_FILE_NAME in digests and len(digests) != 1:
            raise BundleError("resource '.' (a single-file model) must be the only resource")
        ext = _extension(predicate.get(EXTENSION_KEY), digests)
        files = tuple(FileDigest(n, d, None, ext.get(n), serialization.hash_type)
                      for n, d in digests.items())
        manifest = cls(name, files, serialization, _hints(predicate.get(HINTS_KEY), digests))
        if manifest.root_digest != root:
            raise ManifestError(
                f"signed payload is inconsistent: its resources hash to {manifest.root_digest} "
                f"but the subject's root digest is {root}"
            )
        return manifest


def _from_v01(st: dict[str, Any]) -> Manifest:
    """model-signing 0.2's statement: one subject per file with its SHA-256,
    no model name, no root digest, no serialization (files, SHA-256, no
    symlinks: what 0.2 signed and what model-signing reads it as)."""
    digests: dict[str, str] = {}
    for i, item in enumerate(json_list(st.get("subject"), "subject")):
        sub = json_obj(item, f"subject[{i}]")
        name = _resource_name(sub.get("name"), i)
        ann = sub.get("annotations", {})
        alg = json_obj(ann, f"subject[{i}] annotations").get(
            "actual_hash_algorithm", _V0_FILE_ALGORITHM
        )
        if alg != _V0_FILE_ALGORITHM:
            raise UnsupportedAlgorithmError(
                f"model-signing 0.2 subject {name!r}: hash {alg!r:.40} is not supported "
                f"(only {_V0_FILE_ALGORITHM!r})"
            )
        if name in digests:
            raise BundleError(f"subject {name!r} is listed twice")
        digests[name] = hex64(json_obj(sub.get("digest"), f"subject[{i}] digest").get("sha256"),
                              f"subject {name!r} sha256 digest")
    if not digests:
        raise BundleError("model-signing 0.2 statement has no subjects")
    if SINGLE_FILE_NAME in digests and len(digests) != 1:
        raise BundleError("subject '.' (a single-file model) must be the only subject")
    # 0.2 listed files sorted by name; the root digest is recomputed in this order.
    files = tuple(FileDigest(n, d, None, None, "sha256") for n, d in digests.items())
    return Manifest("", files, Serialization(ignore_paths=()))


def _extension_entry(d: SafetensorsDigests) -> dict[str, Any]:
    return {"header": d.header, "tensors": dict(d.tensors)}


def _resource_name(x: object, i: int) -> str:
    name = json_str(x, f"resources[{i}] name")
    if name == SINGLE_FILE_NAME:
        return name
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise BundleError(f"resources[{i}] name {name!r} is not a plain relative path")
    return name


def _serialization(x: object) -> Serialization:
    s = json_obj(x, "predicate serialization")
    method = s.get("method")
    if method != "files":
        raise UnsupportedAlgorithmError(
            f"serialization method {method!r} is not supported (tensorfile verifies 'files')"
        )
    hash_type = s.get("hash_type")
    if hash_type not in ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"hash_type {hash_type!r} is not supported (use one of {', '.join(ALGORITHMS)})"
        )
    allow = s.get("allow_symlinks", False)
    if type(allow) is not bool:
        raise BundleError("serialization allow_symlinks must be true or false")
    ignore = json_list(s.get("ignore_paths", []), "serialization ignore_paths")
    for p in ignore:
        if type(p) is not str or ".." in p.split("/") or p.startswith("/"):
            raise BundleError(f"serialization ignore_paths has an invalid entry {p!r:.80}")
    return Serialization(method, hash_type, allow, tuple(ignore))


def _extension(x: object, digests: Mapping[str, str]) -> dict[str, SafetensorsDigests]:
    if x is None:
        return {}
    ext = json_obj(x, f"predicate {EXTENSION_KEY}")
    algorithm = ext.get("algorithm")
    if ext.get("version") != EXTENSION_VERSION or algorithm not in ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"{EXTENSION_KEY} extension version {ext.get('version')!r} with algorithm "
            f"{ext.get('algorithm')!r} is not supported"
        )
    out: dict[str, SafetensorsDigests] = {}
    for fname, entry in json_obj(ext.get("files"), f"{EXTENSION_KEY} files").items():
        if fname not in digests:
            raise ManifestError(f"{EXTENSION_KEY} extension names {fname!r}, not a signed resource")
        e = json_obj(entry, f"{EXTENSION_KEY} entry for {fname!r}")
        tensors = json_obj(e.get("tensors"), f"{EXTENSION_KEY} tensors of {fname!r}")
        out[fname] = SafetensorsDigests(
            header=hex64(e.get("header"), f"header digest of {fname!r}"),
            tensors={t: hex64(d, f"digest of tensor {t!r} in {fname!r}")
                     for t, d in tensors.items()},
            algorithm=str(algorithm),
        )
    return out


def _hints(x: object, digests: Mapping[str, str]) -> dict[str, FileHint]:
    """The re-signing hints, read as strictly as the rest (a tensorfile signer
    writes them well-formed); names must be signed resources."""
    if x is None:
        return {}
    obj = json_obj(x, f"predicate {HINTS_KEY}")
    if obj.get("version") != EXTENSION_VERSION:
        raise UnsupportedAlgorithmError(f"{HINTS_KEY} version {obj.get('version')!r:.20}")
    out: dict[str, FileHint] = {}
    for name, entry in json_obj(obj.get("files"), f"{HINTS_KEY} files").items():
        if name not in digests:
            raise ManifestError(f"{HINTS_KEY} names {name!r}, not a signed resource")
        e = json_obj(entry, f"{HINTS_KEY} entry for {name!r}")
        fields = ("size", "mtime_ns", "ctime_ns", "inode")
        values = [e.get(k) for k in fields]
        if set(e) != set(fields) or any(type(v) is not int or v < 0 for v in values):
            raise BundleError(
                f"{HINTS_KEY} entry for {name!r} needs exactly the non-negative integers "
                f"{', '.join(fields)}"
            )
        out[name] = FileHint(*(v for v in values if isinstance(v, int)))
    return out


# ---------------------------------------------------------------- building a manifest


def model_name_of(path: Path) -> str:
    """The subject name model-signing gives a model: its folder or file name."""
    return path.name or os.path.basename(os.path.realpath(path))


def hash_model(
    path: str | os.PathLike[str],
    options: HashOptions = DEFAULT_HASH_OPTIONS,
    *,
    signature: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Hash the model at ``path`` (a file or a folder) into a :class:`Manifest`.

    ``.git``, ``.gitattributes``, ``.github`` and ``.gitignore`` are ignored
    (unless ``options.ignore_git_paths`` is false, as model-signing's
    ``--no-ignore-git-paths``), plus ``options.ignore_paths`` (relative to the
    folder) and ``signature`` when it lies inside the folder; all of them are
    recorded in the manifest's ``ignore_paths``. ``options.tensors`` adds
    header and per-tensor digests (``options.tensor_algorithm``: ``"blake3"``
    or ``"sha256"``) for every ``.safetensors`` file, in the same pass over its
    bytes. ``options.file_algorithm`` (``"sha256"``, or ``"blake3"``, which OMS
    verifiers other than model-signing may not know) hashes the files themselves.

    Each file's size, times and inode, taken before it is hashed, are
    recorded as re-signing hints (:func:`hash_model_update`).
    """
    return hash_model_update(path, None, options, signature=signature, progress=progress)[0]


def hash_model_update(
    path: str | os.PathLike[str],
    previous: Manifest | None,
    options: HashOptions = DEFAULT_HASH_OPTIONS,
    *,
    signature: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    written: Manifest | None = None,
) -> tuple[Manifest, tuple[str, ...]]:
    """:func:`hash_model`, reusing ``previous``'s digests (a manifest whose
    signature the caller verified) for every file whose size, times and
    inode equal its hint there, when they are of the kind ``options`` asks
    for (same file algorithm; same tensor digests). Returns the manifest and
    the names of the files that were hashed.

    A hint is not proof: a file changed in place with its size and both times
    kept (which needs the clock set back) keeps its old digest, and the new
    signature then fails to verify on it. A hint can never make a signature
    cover bytes that were not hashed with this manifest's options.

    ``written`` is a manifest of files this process has just written and
    hashed on the way (:meth:`tensorfile.StreamWriter.manifest`): each of its
    digests is reused while the file's size, times and inode equal its hint
    there, even when the file is too recent for a re-signing hint."""
    root = Path(path)
    ignored = (set(DEFAULT_IGNORED) if options.ignore_git_paths else set()) | {
        check_ignore_path(p) for p in options.ignore_paths
    }
    if signature is not None and root.is_dir():
        rel = relative_inside(Path(signature), root)
        if rel is not None:
            ignored.add(rel)
    files = list_model_files(root, ignore_paths=ignored, allow_symlinks=options.allow_symlinks)
    # Stat before hashing: a file written while it is hashed then has a newer
    # mtime than its hint, so the next update hashes it again.
    now = time.time_ns()
    hints = {f.name: _stat_hint(f, now) for f in files}
    reused = {f.name: d for f in files
              if (d := _reusable(previous, f, hints[f.name], options)
                  or _reusable(written, f, stat_hint(f.path), options)) is not None}
    todo = [f for f in files if f.name not in reused]
    hashed = {d.name: d for d in hash_files(todo, options, progress)}
    manifest = Manifest(
        model_name_of(root),
        tuple(reused.get(f.name) or hashed[f.name] for f in files),
        Serialization(hash_type=options.file_algorithm, allow_symlinks=options.allow_symlinks,
                      ignore_paths=tuple(sorted(ignored))),
        {n: h for n, h in hints.items() if h is not None},
    )
    return manifest, tuple(f.name for f in todo)


def stat_hint(path: Path) -> FileHint | None:
    """The file's size, times and inode now, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileHint(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _stat_hint(f: ModelFile, now: int) -> FileHint | None:
    """``f``'s hint, or None if it cannot be stat'ed (hashing reports why) or
    was modified too recently to be told apart from a later write."""
    hint = stat_hint(f.path)
    # A later write sets the modification time to its own time: unseen only
    # if that falls in the tick of the recorded one, so only recent ones are racy.
    if hint is None or hint.mtime_ns > now - RACY_NS:
        return None
    return hint


def _reusable(previous: Manifest | None, f: ModelFile, hint: FileHint | None,
              options: HashOptions) -> FileDigest | None:
    """``previous``'s digest of ``f`` if the file has not changed by its hint
    and the digest is of the kind ``options`` asks for."""
    if previous is None or hint is None or previous.hints.get(f.name) != hint:
        return None
    old = previous.by_name.get(f.name)
    if old is None or old.algorithm != options.file_algorithm:
        return None
    if options.tensors and is_safetensors(f) and (
        old.safetensors is None or old.safetensors.algorithm != options.tensor_algorithm
    ):
        return None
    return FileDigest(f.name, old.digest, hint.size,
                      old.safetensors if options.tensors else None, old.algorithm)


def check_ignore_path(path: str) -> str:
    """``path`` (relative to the model folder, ``/``-separated) without a
    trailing ``/``; :class:`ModelPathError` for an absolute path or one with
    ``..``, which cannot name anything inside the folder."""
    p = path.replace(os.sep, "/").rstrip("/")
    parts = p.split("/")
    if not p or p.startswith("/") or any(x in ("", "..") for x in parts):
        raise ModelPathError(
            f"ignore path {path!r} must be relative to the model folder, without '..'"
        )
    return "/".join(x for x in parts if x != ".") or "."


def relative_inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` with ``/``, or None when it is outside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.replace(os.sep, "/")
