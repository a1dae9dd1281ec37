"""Human renderings of command results (the JSON form is the result itself).

Each function takes the :class:`~tensorfile_cli._output.Output` and the same
result dict that ``--json`` prints, so what people read and what scripts
parse never disagree. Tables use rich, imported here and only here.
"""

from __future__ import annotations

from typing import Any

from tensorfile_cli._output import Output


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, as file managers show sizes)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _kv_table(title: str, rows: dict[str, str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows.items():
        table.add_row(k, v)
    return table


def inspect(out: Output, result: dict[str, Any]) -> None:
    from rich.table import Table

    console = out.console
    totals = result["totals"]
    table = Table(title=f"{result['path']}  ({result['format']})", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("bytes", justify="right")
    table.add_column("offset", justify="right")
    for t in result["tensors"]:
        table.add_row(
            t["name"],
            t["dtype"],
            "[" + ", ".join(str(d) for d in t["shape"]) + "]",
            f"{t['nbytes']:,}",
            f"{t['offset']:,}",
        )
    console.print(table)
    meta = result["metadata"]
    if meta:
        console.print(_kv_table("metadata", meta))
    by_dtype = ", ".join(f"{k} {human_bytes(v)}" for k, v in totals["bytes_by_dtype"].items())
    console.print(
        _kv_table(
            "totals",
            {
                "tensors": f"{totals['tensors']:,}",
                "parameters": f"{totals['parameters']:,}",
                "data": f"{human_bytes(totals['bytes'])} ({by_dtype})" if by_dtype else "0 B",
                "header": f"{result['header_size']:,} bytes",
                "file": human_bytes(result["file_size"]),
            },
        )
    )
