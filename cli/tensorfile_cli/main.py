"""The ``tensorfile`` command line: a thin Typer layer over the library.

Each command parses its arguments, calls one library function, and hands the
result to :class:`~tensorfile_cli._output.Output`, which prints it as text or
as JSON and exits with the shared exit codes (``_exit.py``). Nothing here
decides anything about the model itself.

Start-up time matters (``tensorfile scan`` is benchmarked as a whole process),
so this module imports only Typer and the standard library; the library,
rich and cryptography are imported inside the command that needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tensorfile_cli._output import Output, guarded

app = typer.Typer(
    name="tensorfile",
    help=(
        "Safe model weights: inspect, scan, convert, hash, sign and verify.\n\n"
        "Exit codes (every command): 0 ok, 1 a finding (dangerous or unknown pickle, "
        "failed verification), 2 usage error or unreadable input."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
    """Safe model weights: inspect, scan, convert, hash, sign and verify."""


# -- inspect ------------------------------------------------------------------------
@app.command(
    epilog="Example: tensorfile inspect model.safetensors --json | jq '.result.totals'",
)
def inspect(
    file: Annotated[Path, typer.Argument(help="A .safetensors file (or a pickle checkpoint).")],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a file's tensors (name, dtype, shape, bytes, offset), metadata and totals.

    Nothing is loaded: only the header is read.
    """
    out = Output("inspect", json_out=json_out, quiet=quiet, debug=debug)
    with guarded(out, file):
        from tensorfile import safe_open

        with safe_open(file) as f:
            result = _describe_safetensors(file, f)
    from tensorfile_cli import _render

    out.finish(result, _render.inspect)


def _describe_safetensors(path: Path, f: Any) -> dict[str, Any]:
    """The ``inspect`` result for an open safetensors file (schemas/inspect.json)."""
    header = f.header
    tensors = []
    dtypes: dict[str, int] = {}
    for name in f.offset_keys():
        info = f.info(name)
        start, end = f.byte_range(name)
        tensors.append(
            {
                "name": name,
                "dtype": info.dtype.name,
                "shape": list(info.shape),
                "numel": info.numel,
                "nbytes": info.nbytes,
                "offset": start,
                "end": end,
            }
        )
        dtypes[info.dtype.name] = dtypes.get(info.dtype.name, 0) + info.nbytes
    return {
        "path": str(path),
        "format": "safetensors",
        "file_size": path.stat().st_size,
        "header_size": header.length,
        "data_offset": header.data_offset,
        "metadata": f.metadata(),
        "tensors": tensors,
        "totals": {
            "tensors": len(tensors),
            "parameters": sum(t["numel"] for t in tensors),
            "bytes": sum(t["nbytes"] for t in tensors),
            "bytes_by_dtype": dtypes,
        },
    }


def main() -> None:
    """Console-script entry point (``tensorfile``)."""
    app(prog_name="tensorfile")
