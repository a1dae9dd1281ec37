"""The ``tensorfile`` command line: a thin Typer layer over the library.

Each command parses its arguments, calls one library function, and hands the
result to :class:`~tensorfile_cli._output.Output`, which prints it as text or
as JSON and exits with the shared exit codes (``_exit.py``). Nothing here
decides anything about the model itself.

Start-up time matters (``tensorfile scan`` is benchmarked as a whole process),
so this module imports only Typer and the standard library; the library,
rich and cryptography are imported inside the command that needs them. A
plain ``tensorfile scan`` does not even import this module: the console
script (:mod:`tensorfile_cli.main`) runs :func:`tensorfile_cli._scan.run`,
the body of :func:`scan` below, directly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from enum import Enum
from itertools import repeat
from pathlib import Path
from typing import Annotated, Any

import typer

from tensorfile_cli import _args, _check
from tensorfile_cli._args import PASSWORD_ENV
from tensorfile_cli._exit import ExitCode
from tensorfile_cli._output import Output, gc_paused, guarded

app = typer.Typer(
    name="tensorfile",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- options every command takes ------------------------------------------------
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object on stdout instead of text (schemas in tensorfile_cli/schemas/).",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing on success; the exit code tells.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]

# -- options shared by the commands that hash, sign or read keys ---------------------
SignatureOpt = Annotated[
    Path | None,
    typer.Option(
        "--signature",
        "-s",
        help="Signature file (default: model.sig in the model folder, or next to the file).",
        readable=False,
    ),
]
SymlinksOpt = Annotated[
    bool,
    typer.Option(
        "--allow-symlinks", help="Hash symlinks that stay inside the model folder (refused by default)."
    ),
]


IgnorePathsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--ignore-paths",
        help="Leave this file or folder out (repeat; a path as the shell sees it, inside the "
        "model folder), as model-signing's --ignore-paths.",
        readable=False,
    ),
]
#: Environment variable holding fsspec storage options (JSON) for a URL.
STORAGE_ENV = "TENSORFILE_STORAGE_OPTIONS"
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        envvar=STORAGE_ENV,
        help="For a URL (s3://, https://, any fsspec scheme): fsspec storage options as a JSON "
        "object: credentials, endpoint, e.g. '{\"client_kwargs\": {\"endpoint_url\": "
        "\"http://127.0.0.1:9000\"}}'.",
    ),
]


def _storage(value: str | None) -> dict[str, Any] | None:
    """``--storage-options`` as a dict (None when not given)."""
    if value is None:
        return None
    import json

    try:
        options = json.loads(value)
    except ValueError as e:
        raise typer.BadParameter(f"not JSON: {e}", param_hint="'--storage-options'") from None
    if not isinstance(options, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="'--storage-options'")
    return options


def _is_url(path: str) -> bool:
    from tensorfile._io.remote import is_url

    return is_url(path)


IgnoreGitOpt = Annotated[
    bool,
    typer.Option(
        "--ignore-git-paths/--no-ignore-git-paths",
        help="Leave out .git, .gitattributes, .github and .gitignore.",
    ),
]


class DigestAlgorithm(str, Enum):
    # The values of tensorfile.integrity.ALGORITHMS (not imported: the CLI's
    # start-up stays free of the integrity modules).
    blake3 = "blake3"
    sha256 = "sha256"


TensorAlgorithmOpt = Annotated[
    DigestAlgorithm,
    typer.Option(
        "--tensor-algorithm",
        help="Digest of each safetensors header and tensor: blake3 (fast, parallel even for one "
        "tensor) or sha256.",
    ),
]
FileAlgorithmOpt = Annotated[
    DigestAlgorithm,
    typer.Option(
        "--file-algorithm",
        help="Digest of each file (the OMS hash_type): sha256, which every OMS verifier accepts, "
        "or blake3, which model-signing's API verifies too.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help=f"Read the private key's password from this file (or set {PASSWORD_ENV}).",
        readable=False,
    ),
]


OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace (or remove) existing output files; the report lists each."),
]


def _version(value: bool) -> None:
    if value:
        from tensorfile import __version__

        typer.echo(f"tensorfile {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Safe model weights: inspect, scan, convert, hash, sign and verify.

    Exit codes (every command): 0 ok, 1 a finding (dangerous or unknown pickle,
    failed verification), 2 usage error or unreadable input.
    """


# -- inspect ------------------------------------------------------------------------
@app.command(
    short_help="Show the tensors, metadata and totals of a file or model.",
    epilog="Example: tensorfile inspect model.safetensors --json | jq '.result.totals'",
)
def inspect(
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="A .safetensors file, a model folder or its model.safetensors.index.json "
            "(every shard), or a pickle checkpoint; or the URL of a .safetensors file, an "
            "index or a model folder (only the headers are fetched).",
        ),
    ],
    storage_options: StorageOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a file's or model's tensors (name, dtype, shape, bytes, where), metadata and totals.

    Nothing is loaded: only headers are read. For a sharded model the index is
    checked against every shard's header first.
    """
    out = Output("inspect", json_out=json_out, quiet=quiet, debug=debug)
    options = _storage(storage_options)
    # Without the collector while millions of rows are built (see gc_paused),
    # but not while a pickle is scanned.
    with guarded(out, target):
        if not _is_url(target):
            _args.exists(target)
        from tensorfile import safe_open
        from tensorfile.errors import FormatError
        from tensorfile.sharded import is_sharded_path

        file = Path(target)
        if _is_url(target) and is_sharded_path(target):
            with gc_paused():
                result, code = _describe_model(target, options), ExitCode.OK
        elif _is_url(target):
            with safe_open(target, storage_options=options) as f, gc_paused():
                result, code = _describe_safetensors(target, f), ExitCode.OK
        elif is_sharded_path(file):
            with gc_paused():
                result, code = _describe_model(file), ExitCode.OK
        else:
            try:
                with safe_open(file) as f, gc_paused():
                    result, code = _describe_safetensors(file, f), ExitCode.OK
            except FormatError as not_safetensors:
                result, code = _describe_pickle(file, not_safetensors)
    from tensorfile_cli import _render

    with gc_paused():
        out.finish(result, _render.inspect, code)


def _describe_pickle(path: Path, not_safetensors: Exception) -> tuple[dict[str, Any], ExitCode]:
    """The ``inspect`` result for a pickle checkpoint: the scanner's static view,
    with the scanner's exit code (a dangerous pickle is a finding here too).

    Raises ``not_safetensors`` again when the file is not a pickle container
    either, since then the safetensors error is the useful one.
    """
    from tensorfile.pickles import ScanReport
    from tensorfile.scan.pickle.containers import scan_file

    # named=False: content that no unpickler could start on (text, JSON, a
    # damaged safetensors file) comes back as "not-pickle" instead of an error.
    report = ScanReport([scan_file(path, named=False)])
    (file_report,) = report.files
    if file_report.format in _NOT_A_CHECKPOINT:
        raise not_safetensors
    return {"path": str(path), "format": "pickle", "scan": file_report.to_dict()}, ExitCode(
        report.exit_code
    )


#: Scanner formats meaning "no pickle container here" (FileReport.format).
_NOT_A_CHECKPOINT = frozenset({"not-pickle", "unknown", "empty", "unreadable"})


def _describe_safetensors(path: Path | str, f: Any) -> dict[str, Any]:
    """The ``inspect`` result for an open safetensors file (schemas/inspect.json)."""
    from math import prod
    from operator import add, attrgetter, sub

    header = f.header
    base = header.data_offset
    # Column by column (map in C), without a TensorInfo per tensor: 1.4
    # million tiny tensors took 18 s built row by row, 3x the reference's open.
    cols = header.tensors.columns()
    numels = list(map(prod, cols.shapes))
    nbytes = list(map(sub, cols.ends, cols.starts))
    dtypes = list(map(attrgetter("name"), cols.dtypes))
    tensors = [
        {"name": name, "dtype": dtype, "shape": list(shape), "numel": numel, "nbytes": size,
         "offset": start, "end": end}
        for name, dtype, shape, numel, size, start, end in zip(
            cols.names, dtypes, cols.shapes, numels, nbytes,
            map(add, cols.starts, repeat(base)), map(add, cols.ends, repeat(base)), strict=True,
        )
    ]
    return {
        "path": str(path),
        "format": "safetensors",
        "file_size": f.file_size,
        "header_size": header.length,
        "data_offset": header.data_offset,
        "metadata": f.metadata(),
        "tensors": tensors,
        "totals": _totals(dtypes, numels, nbytes),
    }


def _describe_model(path: Path | str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``inspect`` result for a model folder or index, local or a URL
    (schemas/inspect.json): every shard's tensors in file order, read from
    the headers alone."""
    from tensorfile.sharded import open_sharded

    with open_sharded(path, storage_options=storage_options) as model:
        handles = sorted((model[n] for n in model.keys()), key=lambda h: (h.shard, h.info.start))
        tensors: list[dict[str, Any]] = [
            {"name": h.name, "dtype": h.dtype.name, "shape": list(h.shape), "numel": h.info.numel,
             "nbytes": h.nbytes, "shard": h.shard}
            for h in handles
        ]
        shards: dict[str, dict[str, Any]] = {
            s: {"file": s, "file_size": model.shard_size(s), "tensors": 0, "bytes": 0}
            for s in model.index.shard_files
        }
        for t in tensors:
            shards[t["shard"]]["tensors"] += 1
            shards[t["shard"]]["bytes"] += t["nbytes"]
        return {
            "path": str(path),
            "format": "sharded",
            "index": None if model.index.path is None else str(model.index.path),
            "declared_total_size": model.index.total_size,
            "metadata": model.metadata(),
            "shards": list(shards.values()),
            "tensors": tensors,
            "totals": {**_row_totals(tensors), "shards": len(shards)},
        }


def _row_totals(tensors: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`_totals` of ``inspect``'s tensor rows."""
    from operator import itemgetter

    return _totals(*(list(map(itemgetter(k), tensors)) for k in ("dtype", "numel", "nbytes")))


def _totals(dtypes: list[str], numels: list[int], nbytes: list[int]) -> dict[str, Any]:
    """Counts, parameters and bytes (also by dtype) of ``inspect``'s tensor
    rows, given as columns."""
    by_dtype: dict[str, int] = {}
    for dtype, size in zip(dtypes, nbytes, strict=True):
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    return {
        "tensors": len(nbytes),
        "parameters": sum(numels),
        "bytes": sum(nbytes),
        "bytes_by_dtype": by_dtype,
    }


# -- scan -------------------------------------------------------------------------------
@app.command(
    short_help="Check pickle checkpoints without loading them.",
    epilog="Example: tensorfile scan ./my-model/*  (exit 0 only if everything is safe)"
)
def scan(
    paths: Annotated[
        list[str],
        typer.Argument(help="Files or folders (scanned recursively) to check, or URLs of "
                       "files (https://, s3://...: read by range requests).", show_default=False),
    ],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks",
            help="Scan symlinked folders inside the folders given (skipped otherwise).",
        ),
    ] = False,
    allow_not_assessed: Annotated[
        bool,
        typer.Option(
            "--allow-not-assessed",
            help="Exit 0 although some model files are `not-assessed` (a format "
            "the scanner does not read).",
        ),
    ] = False,
    output_format: _check.FormatOpt = _check.ReportFormat.text,
    storage_options: StorageOpt = None,
) -> None:
    """Check pickle checkpoints (.bin .pt .pth .ckpt .pkl .npy, any name) without loading them.

    `safe`: the pickle provably only rebuilds tensors and plain data; a file
    that is not a pickle at all (JSON, text) is `safe (not-pickle)`, a valid
    .safetensors file `safe (safetensors)`. `dangerous`: a known code-execution,
    file or network gadget. `unknown`: something outside the allowlist, named.
    `error`: malformed, ambiguous or not readable to the end. `incomplete`
    (whole scan only): a path was skipped (symlinked folder, FIFO/device).
    GGUF, ONNX, Keras, SavedModel files and chat templates are read too;
    `not-assessed`: a model format whose loader can run code and which the
    scanner does not read. Nothing is ever imported or executed. Exit 0
    everything read and safe; 1 something dangerous or unknown; 2 an error,
    a skipped path or a not-assessed file.
    """
    from tensorfile_cli import _scan

    _scan.run(
        [p if _is_url(p) else Path(p) for p in paths], json_out=json_out, quiet=quiet,
        debug=debug, follow_symlinks=follow_symlinks, allow_not_assessed=allow_not_assessed,
        output_format=output_format.value, storage_options=_storage(storage_options),
    )


# -- convert ----------------------------------------------------------------------------
@app.command(
    short_help="Convert a pickle checkpoint to safetensors, running nothing.",
    epilog=(
        "Example: tensorfile convert pytorch_model.bin  (writes model.safetensors beside it; "
        "a Hugging Face folder converts in place)"
    )
)
def convert(
    src: Annotated[
        str,
        typer.Argument(help="A .bin/.pt/.pth checkpoint, a Hugging Face model folder, or the "
                       "URL of a checkpoint file (https://, s3://...; DST needed).",
                       show_default=False),
    ],
    dst: Annotated[
        str | None,
        typer.Argument(
            help="Output file, or folder (an existing one, or a name ending in /). Default: "
            "model.safetensors for pytorch_model.bin, else SRC with a .safetensors suffix; "
            "a folder converts in place.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Convert only this sub-tree of a training checkpoint, e.g. state_dict of a "
            "Lightning checkpoint (dotted paths allowed). It is converted when allowlisted "
            "operations rebuild all of it and nothing else in the file could change it, "
            "whatever the rest holds (hyper-parameter objects, callbacks); the report lists "
            "what was left and why. A file with a dangerous finding is still refused.",
        ),
    ] = None,
    salvage_tensors: Annotated[
        bool,
        typer.Option(
            "--salvage-tensors",
            help="Recover numbers from any checkpoint, even one the scanner calls dangerous: "
            "every tensor whose storage and view are literal values of the pickle, named by "
            "its path in the object tree. Nothing is executed; the output holds tensors only "
            "(no plain values, no classes, no code) and the report lists every call that was "
            "not performed. Use only to rescue weights you cannot get another way.",
        ),
    ] = False,
    sign_key: Annotated[
        list[Path] | None,
        typer.Option("--sign", help="Sign the result with this private key (PEM); model.sig.", readable=False),
    ] = None,
    password_file: PasswordFileOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    storage_options: StorageOpt = None,
) -> None:
    """Convert a pickle checkpoint to safetensors without running it (torch not needed).

    The input is scanned first: anything but `safe` is refused (exit 1) and
    nothing is written, unless --key names a part that can be taken out on its
    own, or --salvage-tensors is given. Tied weights are written once with
    aliases; plain values go to the metadata (a leaf that is not plain JSON
    is dropped alone and listed). Tensors safetensors cannot hold (complex128,
    complex32, quantized) are listed as not converted, with a warning on
    stderr, and the rest is written (exit 0). A Hugging Face Trainer checkpoint folder
    converts its model weights; the report says what was done with each
    other file (pickles such as optimizer.pt are never copied).
    """
    signing = _args.one(sign_key, "--sign")
    out = Output("convert", json_out=json_out, quiet=quiet, debug=debug)
    source: Path | str = src if _is_url(src) else Path(src)
    with guarded(out, source, dst, signing):
        _args.exists(None if isinstance(source, str) else source, signing, password_file)
        private = None if signing is None else _args.private_key(signing, password_file)
        from tensorfile.pickles.convert import convert as convert_checkpoint

        with out.progress("converting") as progress:
            report = convert_checkpoint(
                source,
                dst,
                storage_options=_storage(storage_options),
                key=key,
                salvage_tensors=salvage_tensors,
                sign=private,
                progress=progress,
                overwrite=overwrite,
            )
    if report.tensors_left and not json_out:
        # Even with --quiet: a tensor missing from the output must not go unnoticed.
        sys.stderr.write(f"tensorfile convert: warning: {len(report.tensors_left)} tensor(s) "
                         "not converted (no safetensors dtype): "
                         f"{', '.join(d.name for d in report.tensors_left[:10])}\n")
    from tensorfile_cli import _render

    out.finish(report.to_dict(), _render.convert)


# -- hash -----------------------------------------------------------------------------
@app.command(
    "hash",
    short_help="Print the digests `sign` would sign.",
    epilog="Example: tensorfile hash ./my-model --json > manifest.json",
)
def hash_(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PATH",
            help="A model file or folder; or the URL of a file, or of a sharded model's index "
            "or folder (its index and shards; streamed, nothing written).",
        ),
    ],
    tensors: Annotated[
        bool,
        typer.Option("--tensors/--no-tensors", help="Also digest each safetensors header and tensor."),
    ] = True,
    tensor_algorithm: TensorAlgorithmOpt = DigestAlgorithm.blake3,
    file_algorithm: FileAlgorithmOpt = DigestAlgorithm.sha256,
    signature: SignatureOpt = None,
    allow_symlinks: SymlinksOpt = False,
    ignore_paths: IgnorePathsOpt = None,
    ignore_git_paths: IgnoreGitOpt = True,
    storage_options: StorageOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print the manifest of a model file or folder (file, header and tensor digests): what `sign` would sign.

    Nothing is signed or written; the signature file is left out, as `sign` leaves it out.
    """
    out = Output("hash", json_out=json_out, quiet=quiet, debug=debug)
    path = Path(target)
    if _is_url(target):
        with guarded(out, target):
            from tensorfile.integrity import HashOptions
            from tensorfile.remote import RemoteOptions, hash_remote

            manifest = hash_remote(target, HashOptions(
                tensors=tensors, tensor_algorithm=tensor_algorithm.value,
                file_algorithm=file_algorithm.value,
            ), RemoteOptions(_storage(storage_options) or {}))
        from tensorfile_cli import _render

        out.finish(manifest.to_dict(), _render.hash_manifest)
    ignored = _args.ignored(path, ignore_paths)  # a usage error, before any work
    with guarded(out, path), out.progress("hashing") as progress:
        _args.exists(path)
        from tensorfile.integrity import HashOptions, hash_model
        from tensorfile.integrity.sign import default_signature_path

        options = HashOptions(
            tensors=tensors,
            tensor_algorithm=tensor_algorithm.value,
            file_algorithm=file_algorithm.value,
            allow_symlinks=allow_symlinks,
            ignore_paths=tuple(ignored),
            ignore_git_paths=ignore_git_paths,
        )
        manifest = hash_model(
            path, options, signature=signature or default_signature_path(path), progress=progress
        )
    from tensorfile_cli import _render

    out.finish(manifest.to_dict(), _render.hash_manifest)


# -- keygen ---------------------------------------------------------------------------
class KeyType(str, Enum):
    ecdsa_p256 = "ecdsa-p256"
    ecdsa_p384 = "ecdsa-p384"
    ecdsa_p521 = "ecdsa-p521"
    ed25519 = "ed25519"


@app.command(
    short_help="Write a new signing key pair (PEM).",
    epilog="Example: tensorfile keygen signing-key.pem  (writes signing-key.pem and signing-key.pem.pub)"
)
def keygen(
    private_key: Annotated[
        Path, typer.Argument(help="Where to write the private key (mode 0600).", readable=False)
    ] = Path("signing-key.pem"),
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", "-p", help="Where to write the public key (default: PRIVATE_KEY.pub).", readable=False),
    ] = None,
    key_type: Annotated[
        KeyType,
        typer.Option(
            "--type",
            "-t",
            help="ECDSA keys interoperate with model-signing; ed25519 is a tensorfile extension.",
        ),
    ] = KeyType.ecdsa_p256,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Encrypt the private key (asks for a password).")
    ] = False,
    password_file: PasswordFileOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing key files.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a new signing key pair (PEM) for `sign` and `verify`."""
    if encrypt and password_file is None and PASSWORD_ENV not in os.environ and not sys.stdin.isatty():
        raise typer.BadParameter(
            f"no terminal to ask for the password: use --password-file or set {PASSWORD_ENV}",
            param_hint="'--encrypt'",
        )
    out = Output("keygen", json_out=json_out, quiet=quiet, debug=debug)
    with guarded(out, private_key, public_key, password_file):
        _args.exists(password_file)
        from tensorfile.integrity import generate_key

        password = _args.key_password(password_file, ask=True, confirm=True) if encrypt or password_file else None
        pair = generate_key(
            private_key, public_key, key_type=key_type.value, password=password, overwrite=overwrite
        )
        result = {
            "private_key": str(pair.private_key),
            "public_key": str(pair.public_key),
            "algorithm": pair.algorithm,
            "fingerprint": pair.hint,
            "encrypted": bool(password),
        }
    from tensorfile_cli import _render

    out.finish(result, _render.keygen)


# -- sign -------------------------------------------------------------------------------
@app.command(
    short_help="Sign a model file or folder (OMS v1.0 bundle).",
    epilog=(
        "Example: tensorfile sign ./my-model --key signing-key.pem  "
        "Keys held elsewhere (--signer): a PKCS#11 token or HSM, "
        "pkcs11:token=T;object=K?module-path=LIB with the PIN in pin-value, pin-source "
        "or TENSORFILE_PKCS11_PIN; an AWS KMS key, awskms:///KEY-ID (or "
        "awskms://HOST:PORT/KEY-ID for another endpoint)."
    ),
)
def sign(
    path: Annotated[Path, typer.Argument(help="The model file or folder to sign.", readable=False)],
    key: Annotated[
        list[Path] | None,
        typer.Option("--key", "-k", help="Private key (PEM); or give --signer.", readable=False),
    ] = None,
    signer_uri: Annotated[
        str | None,
        typer.Option(
            "--signer",
            help="A key held elsewhere instead of --key: a PKCS#11 URI (pkcs11:...) or an "
            "AWS KMS key (awskms://...); forms below.",
        ),
    ] = None,
    signature: SignatureOpt = None,
    certificate: Annotated[
        list[Path] | None,
        typer.Option(
            "--certificate",
            "-c",
            help="Sign with a certificate: the leaf holding KEY's public key, then any intermediates (repeat).",
            readable=False,
        ),
    ] = None,
    password_file: PasswordFileOpt = None,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Re-sign, hashing only files whose size, times or inode changed since "
            "the current signature (which must verify with this key).",
        ),
    ] = False,
    tensor_algorithm: TensorAlgorithmOpt = DigestAlgorithm.blake3,
    file_algorithm: FileAlgorithmOpt = DigestAlgorithm.sha256,
    allow_symlinks: SymlinksOpt = False,
    ignore_paths: IgnorePathsOpt = None,
    ignore_git_paths: IgnoreGitOpt = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing signature file.")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Sign a model file or folder: an OpenSSF model-signing (OMS v1.0) bundle.

    `model_signing verify key` accepts the result; tensorfile also records a
    digest per tensor for verify-on-load. An existing signature file is kept
    (exit 2) unless --overwrite.
    """
    signing = _args.one(key, "--key")
    if (signing is None) == (signer_uri is None):
        raise typer.BadParameter("give --key or --signer (exactly one)", param_hint="'--key'")
    ignored = _args.ignored(path, ignore_paths)  # a usage error, before any work
    out = Output("sign", json_out=json_out, quiet=quiet, debug=debug)
    with guarded(out, path, signing, signature), out.progress("hashing") as progress, \
            contextlib.ExitStack() as held:
        _args.exists(path, signing, password_file, *(certificate or ()))
        from tensorfile.integrity import resign
        from tensorfile.integrity import sign as sign_model
        from tensorfile.integrity.sign import default_signature_path, opened_signer

        # The key is loaded (its password checked, asked for on a terminal)
        # before any hashing. A token session is closed here, not whenever the
        # signer is collected: a second login while it lingers fails
        # (CKR_USER_ALREADY_LOGGED_IN).
        who = (_args.private_key(signing, password_file) if signing is not None
               else held.enter_context(opened_signer(str(signer_uri))))
        target = signature if signature is not None else default_signature_path(path)
        replaced = os.path.lexists(target)
        options: dict[str, Any] = {
            "certificate_chain": [str(c) for c in certificate] if certificate else None,
            "tensor_algorithm": tensor_algorithm.value,
            "file_algorithm": file_algorithm.value,
            "allow_symlinks": allow_symlinks,
            "ignore_paths": ignored,
            "ignore_git_paths": ignore_git_paths,
            "progress": progress,
        }
        # --update replaces the signature it updates (asked for by the flag).
        updated = resign(path, who, signature, **options) if update else None
        written = (updated.signature if updated
                   else sign_model(path, who, signature, overwrite=overwrite, **options))
    from tensorfile_cli import _render

    result: dict[str, Any] = {"model": str(path), "signature": str(written),
                              "certificate": bool(certificate), "replaced": replaced}
    if updated is not None:
        result["update"] = updated.to_dict()
    out.finish(result, _render.sign)


# -- verify -----------------------------------------------------------------------------
@app.command(
    short_help="Check a model against its signature or pins.",
    epilog=(
        "Example: tensorfile verify ./my-model --key signing-key.pem.pub  "
        "(exit 1 if anything differs from what was signed)"
    )
)
def verify(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PATH",
            help="The model file or folder to check; or the URL of a .safetensors file, a "
            "sharded model's index or its folder (checked as it streams, nothing written "
            "to disk).",
        ),
    ],
    keys: Annotated[
        list[Path] | None,
        typer.Option("--key", "-k", help="The signer's public key (PEM).", readable=False),
    ] = None,
    cert_chain: Annotated[
        Path | None,
        typer.Option(
            "--cert-chain", help="Trusted root certificate(s) (PEM) for a certificate-signed model.",
            readable=False,
        ),
    ] = None,
    allow_ca_signer: Annotated[
        bool,
        typer.Option(
            "--allow-ca-signer",
            help="With --cert-chain: accept a signing certificate that is a CA allowed to issue "
            "certificates, as model-signing does.",
        ),
    ] = False,
    trusted_root: Annotated[
        Path | None,
        typer.Option(
            "--trusted-root",
            "--trust-config",
            help="Sigstore keyless bundle: the trusted_root.json (or model-signing --trust_config) "
            "to verify its certificate and transparency log entry against, offline. Needs "
            "--identity and --identity-provider.",
            readable=False,
        ),
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option("--identity", help="Keyless: the signer's expected identity (e-mail or URI)."),
    ] = None,
    identity_provider: Annotated[
        str | None,
        typer.Option(
            "--identity-provider",
            help="Keyless: the expected OpenID Connect issuer (e.g. https://accounts.google.com).",
        ),
    ] = None,
    pins: Annotated[
        Path | None,
        typer.Option(
            "--pins",
            help="Check against trusted SHA-256s instead of a signature: `tensorfile hash --json` "
            "output, `sha256sum` lines, JSON {file: sha256}, the Hub's model info, or a Git LFS pointer.",
            readable=False,
        ),
    ] = None,
    signature: SignatureOpt = None,
    allow_extra_files: Annotated[
        bool,
        typer.Option(
            "--allow-extra-files",
            "--ignore-unsigned-files",
            help="Ignore files the signature does not cover (model-signing's --ignore_unsigned_files).",
        ),
    ] = False,
    deep: Annotated[
        bool, typer.Option(
            "--deep",
            help="Check files signed with tensor digests by their whole-file digest too "
            "(twice the hashing).",
        )
    ] = False,
    allow_symlinks: SymlinksOpt = False,
    ignore_paths: IgnorePathsOpt = None,
    ignore_git_paths: IgnoreGitOpt = True,
    storage_options: StorageOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Check a model against its signature: every byte, file name and tensor name.

    Give --key, --cert-chain, --trusted-root (keyless, with --identity and
    --identity-provider) or --pins: exactly one. Exit 0 only if everything matched.
    """
    key = _args.one(keys, "--key")
    if sum(x is not None for x in (key, cert_chain, pins, trusted_root)) != 1:
        raise typer.BadParameter(
            "give --key, --cert-chain, --trusted-root or --pins (exactly one)", param_hint="'--key'"
        )
    if (trusted_root is None) != (identity is None) or (trusted_root is None) != (
        identity_provider is None
    ):
        raise typer.BadParameter(
            "--trusted-root, --identity and --identity-provider go together",
            param_hint="'--trusted-root'",
        )
    if pins is not None and signature is not None:
        raise typer.BadParameter("--pins checks no signature", param_hint="'--signature'")
    out = Output("verify", json_out=json_out, quiet=quiet, debug=debug)
    path = Path(target)
    if _is_url(target):
        _verify_url(out, target, key, cert_chain, pins, signature, _storage(storage_options))
    ignored = _args.ignored(path, ignore_paths)  # a usage error, before any work
    with guarded(out, path, key, cert_chain, pins, trusted_root, signature), out.progress(
        "verifying"
    ) as progress:
        _args.exists(path, key, cert_chain, pins, trusted_root, signature)
        from tensorfile.integrity import SigstoreTrust, verify_pins
        from tensorfile.integrity import verify as verify_model

        options: dict[str, Any] = {
            "allow_extra_files": allow_extra_files,
            "allow_symlinks": allow_symlinks,
            "ignore_paths": ignored,
            "ignore_git_paths": ignore_git_paths,
            "deep": deep,
            "progress": progress,
        }
        if pins is not None:
            report = verify_pins(path, pins, **options)
        elif trusted_root is not None:
            assert identity is not None and identity_provider is not None
            report = verify_model(
                path, signature=signature,
                sigstore=SigstoreTrust(trusted_root, identity, identity_provider), **options,
            )
        else:
            roots: Any = cert_chain
            if cert_chain is not None and allow_ca_signer:
                from tensorfile.integrity import CertificateTrust

                roots = CertificateTrust.from_pem(cert_chain, allow_ca_signer=True)
            report = verify_model(path, key, roots, signature=signature, **options)
    from tensorfile_cli import _render

    out.finish(report.to_dict(), _render.verify)


def _verify_url(
    out: Output, url: str, key: Path | None, cert_chain: Path | None, pins: Path | None,
    signature: Path | None, storage_options: dict[str, Any] | None,
) -> None:
    """``tensorfile verify URL``: the signature, header and every tensor
    checked as the bytes stream in (tensorfile.remote.verify_remote)."""
    with guarded(out, url, key, cert_chain, pins, signature):
        from tensorfile.integrity import Pins, TrustPolicy
        from tensorfile.remote import RemoteOptions, verify_remote

        if key is None and cert_chain is None and pins is None:
            raise typer.BadParameter(
                "a URL is verified with --key, --cert-chain or --pins", param_hint="'--key'"
            )
        trust: Any = (
            Pins.from_file(pins) if pins is not None
            else TrustPolicy(key=key, cert_roots=cert_chain, signature=signature)
        )
        report = verify_remote(url, trust, RemoteOptions(storage_options or {}))
    from tensorfile_cli import _render

    out.finish(report.to_dict(), _render.verify)


app.command(
    short_help="Scan, validate and verify a model as its policy says.", epilog=_check.EPILOG,
)(_check.check)  # tensorfile check (its own module)
