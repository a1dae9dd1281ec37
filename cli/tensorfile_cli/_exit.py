"""Exit codes and the one table that maps errors to them.

Every command exits with the same codes, so a pipeline can branch on them
without knowing which command ran:

====  =====================================================================
code  meaning
====  =====================================================================
0     ok: the work was done and nothing was found
1     a finding: a dangerous or unknown pickle, a failed verification
2     the work could not be done: a usage error or unreadable input
====  =====================================================================

This module imports only the standard library at import time; the library's
error classes are looked up when an error is being classified, by which time
the library is loaded anyway.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class ExitCode(IntEnum):
    OK = 0
    FINDING = 1
    UNUSABLE = 2


class ErrorClass(NamedTuple):
    """How one kind of error is reported: its exit code and what to do about it."""

    code: ExitCode
    hint: str


# Checked in order, first match wins: subclasses before their bases. Names
# are attributes of tensorfile.errors (resolved lazily, see _library_errors).
_TABLE: tuple[tuple[str, ErrorClass], ...] = (
    (
        "InputNotFoundError",
        ErrorClass(ExitCode.UNUSABLE, "check the path (a typo, or the wrong folder?)"),
    ),
    (
        "OutputExistsError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "nothing was replaced: pass --overwrite to replace it, or choose another output",
        ),
    ),
    (
        "KeyPasswordError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "the key is encrypted: give its password with --password-file FILE or the "
            "TENSORFILE_KEY_PASSWORD environment variable (on a terminal, tensorfile asks)",
        ),
    ),
    (
        "UnsupportedAlgorithmError",
        ErrorClass(
            ExitCode.FINDING,
            "the signature uses a method tensorfile cannot check, so the model is not verified",
        ),
    ),
    (
        "UnexpectedFileError",
        ErrorClass(
            ExitCode.FINDING,
            "remove the files the signature does not cover, or pass --allow-extra-files if you trust them",
        ),
    ),
    (
        "NotSignedError",
        ErrorClass(
            ExitCode.FINDING,
            "do not trust what the signature does not cover; pass --signature if the signature file is elsewhere",
        ),
    ),
    (
        "VerificationError",
        ErrorClass(
            ExitCode.FINDING,
            "do not use this model: get it again from its source, or ask the publisher for a new signature",
        ),
    ),
    (
        "PinsError",
        ErrorClass(
            ExitCode.FINDING,
            "the pins file is not one tensorfile reads: `tensorfile hash --json` output, "
            "`sha256sum` lines, a JSON object of file name to SHA-256, or a Git LFS pointer",
        ),
    ),
    (
        "BundleError",
        ErrorClass(
            ExitCode.FINDING,
            "the signature file is damaged or not a signature bundle: get a fresh one from the publisher",
        ),
    ),
    (
        "NotAPickleError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "nothing was written; `tensorfile inspect FILE` shows its tensors",
        ),
    ),
    (
        "UnsafePickleError",
        ErrorClass(
            ExitCode.FINDING,
            "refused: the message says what was found (dangerous: a known gadget; unknown: outside "
            "the allowlist); `tensorfile scan` lists every finding; do not torch.load the file "
            "unless you trust where it came from",
        ),
    ),
    (
        "TrustedRootError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "--trusted-root takes a Sigstore trusted_root.json (or model-signing's --trust_config "
            "file), not a key or certificate",
        ),
    ),
    (
        "KeyLoadError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "check the file: keys and certificates are PEM files (`tensorfile keygen` makes "
            "a key pair)",
        ),
    ),
    (
        "EmptyModelError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "no model there, so nothing is called safe, signed or verified: check the path, "
            "or download the model again",
        ),
    ),
    (
        "ModelPathError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "check that the path exists and holds only regular files; a symlink needs --allow-symlinks and must stay inside the folder",
        ),
    ),
    (
        "ScanError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "the file could not be read completely, so it is not known to be safe: do not load it",
        ),
    ),
    (
        "ConversionError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "nothing was written; run `tensorfile scan` on the input to see what it holds",
        ),
    ),
    (
        "RemoteError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "nothing read from the server was used: check the URL, the endpoint and credentials "
            "(--storage-options), and retry if the object was being replaced",
        ),
    ),
    (
        "ShardIndexError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "a sharded model needs a model.safetensors.index.json that matches its shards; "
            "pass one .safetensors file to look at it alone",
        ),
    ),
    (
        "FormatError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "this is not a valid safetensors file; if it is a pickle checkpoint, run `tensorfile scan` on it",
        ),
    ),
    (
        "PolicyError",
        ErrorClass(
            ExitCode.UNUSABLE,
            "fix the policy file where the message says (tensorfile.toml, or [tool.tensorfile] "
            "in pyproject.toml; its keys are in the README), or pass --no-policy",
        ),
    ),
    (
        "TensorfileError",
        ErrorClass(ExitCode.UNUSABLE, "check the arguments; see `tensorfile COMMAND --help`"),
    ),
)

_OS_ERRORS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "check the path"),
    (IsADirectoryError, "pass a file, not a folder"),
    (NotADirectoryError, "pass a folder, not a file"),
    (PermissionError, "check the file's permissions"),
)

#: Hints for OSErrors told apart only by errno (a full or read-only disk).
_ERRNO_HINTS = {
    "ENOSPC": "the disk is full: free some space, or choose an output on another disk; "
    "no existing file was replaced",
    "EDQUOT": "over the disk quota: free some space, or choose an output on another disk; "
    "no existing file was replaced",
    "EROFS": "the file system is read-only: choose an output on a writable disk",
    "EIO": "the disk reported an input/output error: check the disk, then run again",
}

#: What a bug in tensorfile is reported as: it could not do the work.
INTERNAL = ErrorClass(
    ExitCode.UNUSABLE,
    "this is a bug in tensorfile: rerun with --debug and report the traceback",
)


def classify(exc: BaseException) -> ErrorClass:
    """Exit code and hint for an exception raised while a command ran."""
    import tensorfile.errors as errors

    for name, cls in _TABLE:
        if isinstance(exc, getattr(errors, name)):
            return cls
    for os_type, hint in _OS_ERRORS:
        if isinstance(exc, os_type):
            return ErrorClass(ExitCode.UNUSABLE, hint)
    if isinstance(exc, OSError):
        import errno

        name = errno.errorcode.get(exc.errno or 0, "")
        return ErrorClass(ExitCode.UNUSABLE, _ERRNO_HINTS.get(
            name, "the operating system refused to read or write a file: the message says which"))
    return INTERNAL


def is_expected(exc: BaseException) -> bool:
    """Whether the error is about the input (shown as one line) rather than a bug."""
    return classify(exc) is not INTERNAL
