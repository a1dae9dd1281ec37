"""Human renderings of command results (the JSON form is the result itself).

Each function takes the :class:`~tensorfile_cli._output.Output` and the same
result dict that ``--json`` prints, so what people read and what scripts
parse never disagree. Tables use rich, imported here and only here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from tensorfile_cli._output import VERDICT_STYLES, Output, terminal_width


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, as file managers show sizes)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(n: int, word: str) -> str:
    """``plural(1, "file")`` -> ``1 file``; ``plural(3, "file")`` -> ``3 files``."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _kv_table(title: str, rows: dict[str, str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    from rich.text import Text

    for k, v in rows.items():  # Text: a name from a file is never rich markup
        table.add_row(Text(k), Text(v))
    return table


#: Past this many rows a table is printed as plain aligned text: rich
#: measures and wraps every cell, and 143,000 tensors took 15 minutes.
_RICH_ROWS = 2_000


def _plain_table(
    out: Output, head: tuple[str, ...], columns: Sequence[list[str]], right: tuple[bool, ...]
) -> None:
    """``columns`` under ``head`` in aligned columns, written in one go; text
    that is not printable is escaped (a name cannot start a line of its own).
    Padded and joined a column at a time, in C: 1.4 million rows, row by row,
    took 20 s."""
    def clean(cell: str) -> str:
        return cell if cell.isprintable() else cell.encode("unicode_escape").decode("ascii")

    cols = [col if "".join(col).isprintable() else list(map(clean, col)) for col in columns]
    padded = []
    for h, col, rj in zip(head, cols, right, strict=True):
        width = max(len(h), max(map(len, col), default=0))
        pad = str.rjust if rj else str.ljust
        padded.append([pad(h, width), *map(pad, col, repeat(width))])
    if out.human:
        sys.stdout.write("\n".join(map(str.rstrip, map("  ".join, zip(*padded, strict=True)))) + "\n")


def inspect(out: Output, result: dict[str, Any]) -> None:
    if result["format"] == "pickle":
        _inspect_pickle(out, result["scan"])
        return
    from operator import itemgetter

    from rich.table import Table

    console = out.console
    totals = result["totals"]
    sharded = result["format"] == "sharded"
    what = (f"safetensors model, {plural(totals['tensors'], 'tensor')} in "
            f"{plural(totals['shards'], 'shard')}") if sharded else (
            f"safetensors, {plural(totals['tensors'], 'tensor')}")
    out.line(f"{result['path']}: {what}")
    heads = ("name", "dtype", "shape", "bytes", "shard" if sharded else "offset")
    tensors = result["tensors"]

    def column(key: str) -> list[Any]:
        return list(map(itemgetter(key), tensors))

    # A shape list of ints prints as "[2, 3]" (a column at a time, in C).
    columns = [column("name"), column("dtype"), list(map(str, column("shape"))),
               list(map("{:,}".format, column("nbytes"))),
               column("shard") if sharded else list(map("{:,}".format, column("offset")))]
    cells = list(zip(*columns, strict=True)) if len(tensors) <= _RICH_ROWS else []
    longest = [max([len(r[i]) for r in cells] + [len(h)]) for i, h in enumerate(heads)]
    if not cells and tensors:  # rich measures every cell: plain rows past a few thousand
        _plain_table(out, heads, columns, right=(False, False, False, True, not sharded))
    # A name is never split: the table only when each row fits on one line
    # (borders and padding take 16 columns), else a name per line.
    elif sum(longest) + 16 <= console.width:
        from rich.text import Text

        table = Table()
        table.add_column("name", no_wrap=True)
        table.add_column("dtype", no_wrap=True)
        table.add_column("shape", no_wrap=True)
        table.add_column("bytes", justify="right", no_wrap=True)
        table.add_column(heads[4], justify="left" if sharded else "right", no_wrap=True)
        for r in cells:
            table.add_row(*(Text(c) for c in r))
        console.print(table)
    else:
        for name, dtype, shape, nbytes, where in cells:
            out.line(name)
            out.line(f"    {dtype} {shape}, {nbytes} bytes, "
                     f"{'in ' + where if sharded else 'at byte ' + where}")
    meta = result["metadata"]
    if meta:
        console.print(_kv_table("metadata", meta))
    by_dtype = ", ".join(f"{k} {human_bytes(v)}" for k, v in totals["bytes_by_dtype"].items())
    rows = {
        "tensors": f"{totals['tensors']:,}",
        "parameters": f"{totals['parameters']:,}",
        "data": f"{human_bytes(totals['bytes'])} ({by_dtype})" if by_dtype else "0 B",
    }
    if sharded:
        size = sum(s["file_size"] for s in result["shards"])
        rows["shards"] = f"{totals['shards']:,} files, {human_bytes(size)}"
        rows["index"] = result["index"] or "none (a folder with one file)"
    else:
        rows["header"] = f"{result['header_size']:,} bytes"
        rows["file"] = human_bytes(result["file_size"])
    console.print(_kv_table("totals", rows))


def hash_manifest(out: Output, result: dict[str, Any]) -> None:
    files = result["files"]
    algorithm = result["serialization"]["hash_type"]
    out.line(f"{result['model_name']}: {plural(len(files), 'file')} ({algorithm})")
    rows = [(f["name"], "" if f.get("size") is None else f"{f['size']:,}", f[algorithm],
             "" if f.get("tensors") is None else f"{len(f['tensors']):,}") for f in files]
    widths = [max([len(r[i]) for r in rows] + [len(h)])
              for i, h in enumerate(("file", "bytes", algorithm, "tensors"))]
    if sum(widths) + 13 <= (terminal_width() or 200):  # borders and padding: 13 columns
        from rich.table import Table
        from rich.text import Text

        table = Table()
        table.add_column("file", no_wrap=True)
        table.add_column("bytes", justify="right", no_wrap=True)
        table.add_column(algorithm, no_wrap=True)
        table.add_column("tensors", justify="right", no_wrap=True)
        for r in rows:
            table.add_row(*(Text(c) for c in r))
        out.console.print(table)
    else:
        # What sha256sum prints (and `sha256sum -c` reads, from the model folder).
        for name, _size, digest, _tensors in rows:
            out.line(f"{digest}  {result['model_name'] if name == '.' else name}")
    out.line(f"root digest: {result['root_digest']}")


def keygen(out: Output, result: dict[str, Any]) -> None:
    out.line(
        f"wrote {result['algorithm']} key pair: private {result['private_key']}"
        f"{' (encrypted)' if result['encrypted'] else ''}, public {result['public_key']}"
    )
    out.line(f"fingerprint: {result['fingerprint']}")
    if result["encrypted"]:
        out.line(f"sign with:   tensorfile sign MODEL --key {result['private_key']} "
                 "--password-file FILE")
        out.line("             (or set TENSORFILE_KEY_PASSWORD; on a terminal sign asks for it)")
    else:
        out.line(f"sign with:   tensorfile sign MODEL --key {result['private_key']}")
    out.line(f"verify with: tensorfile verify MODEL --key {result['public_key']}")


def sign(out: Output, result: dict[str, Any]) -> None:
    kind = "certificate" if result["certificate"] else "key"
    out.line(f"signed {result['model']} with a {kind}: {result['signature']}"
             f"{' (replaced the file that was there)' if result['replaced'] else ''}")
    update = result.get("update")
    if update is not None:
        out.line(f"updated: re-hashed {len(update['rehashed'])} of {update['files']} files "
                 f"({update['bytes_hashed']:,} bytes), reused {update['reused']}")


def verify(out: Output, result: dict[str, Any]) -> None:
    signer = result["signer"]
    who = f"{signer['kind']} {signer['algorithm']} {signer['key_fingerprint'][:16]}…"
    if signer["kind"] == "pins":
        who = f"pinned {signer['algorithm']} digests: {result['signature']} (sha256 {signer['key_fingerprint'][:16]}…)"
    cert = signer.get("certificate")
    if cert:
        who += f" ({cert['subject']}, issued by {cert['issuer']})"
    keyless = signer.get("sigstore")
    if keyless:
        who = (f"identity {keyless['identity']} from {keyless['issuer']} (Sigstore keyless, "
               f"certificate issued by {cert['issuer'] if cert else '?'}; logged at "
               f"{keyless['integrated_time']}, log index {keyless['log_index']})")
    out.line(
        f"{out.style('verified', 'green', 'bold')}: {result['model']}: "
        f"{plural(result['files_checked'], 'file')}, {plural(result['tensors_checked'], 'tensor')}, "
        f"{human_bytes(result['bytes_hashed'])} hashed"
    )
    by_file = len(result["by_file_digest"])
    by_parts = result["files_checked"] - by_file
    how = []
    if by_parts:
        how.append(f"{plural(by_parts, 'file')} by {result['tensor_algorithm']} header and tensor digests")
    if by_file:
        how.append(f"{plural(by_file, 'file')} by {result['serialization']['hash_type']} of the whole file")
    if how:
        out.line(f"checked every byte: {'; '.join(how)}")
    out.line(who if signer["kind"] == "pins" else f"signed by {who}")
    if result.get("part_of"):
        out.line(f"one file of the model signed as the folder {result['part_of']}: "
                 "verify the folder to check the others")
    if result["extra_files"]:
        out.line(f"not covered by the signature (ignored): {', '.join(result['extra_files'])}")
    # Only what is there and was not checked is news to a reader; the JSON
    # lists every path left out, present or not.
    present = set(result["ignored_present"])
    present.discard(os.path.relpath(result["signature"], result["model"]))  # itself, obviously
    by_signature = [p for p in result["ignored_by_signature"] if p in present]
    by_verifier = [p for p in result["ignored_by_verifier"] if p in present]
    if by_signature:
        by = "pins" if signer["kind"] == "pins" else "signature"
        out.line(f"left out by the {by} (present, not checked): {', '.join(by_signature)}")
    if by_verifier:
        out.line(f"left out on this check (present, not checked): {', '.join(by_verifier)}")


# -- scanner results --------------------------------------------------------------------
def _verdict(out: Output, verdict: str) -> str:
    return out.style(verdict, *VERDICT_STYLES.get(verdict, ()))


def _finding_lines(findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(verdict, "os.system (GLOBAL at byte 2, REDUCE at byte 24): reason")``
    per global: the opcodes that import and call one global are one finding
    to a reader (the JSON keeps each), with the first one's reason."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i, f in enumerate(findings):
        key = (f["verdict"], f["global"]) if f["global"] else (f["verdict"], f"#{i}")
        groups.setdefault(key, []).append(f)
    lines = []
    for (verdict, _), group in groups.items():
        where = ", ".join(" ".join(
            ([f["opcode"]] if f["opcode"] else [])
            + ([f"at byte {f['offset']}"] if f["offset"] is not None else [])) for f in group)
        subject = group[0]["global"] or ""
        located = f" ({where})" if where.strip(", ") else ""
        reason = group[0]["reason"]
        lines.append((verdict, f"{subject}{located}: {reason}" if subject or located else reason))
    return lines


#: How the scan line names formats that hold no pickle stream.
_FORMAT_WORDS = {
    "empty": "0 bytes",
    "folder": "folder",
    "not-pickle": "not-pickle: unpickling it fails before importing or calling anything",
    "safetensors": "safetensors",
}


def _file_lines(out: Output, f: dict[str, Any]) -> None:
    """One line per file, then one per finding or unreadable part."""
    streams = f["streams"]
    what = _FORMAT_WORDS.get(f["format"]) or f"{f['format']}, {plural(len(streams), 'pickle stream')}"
    out.para(f"{f['path']}: {f['verdict']} ({what})", styled=(f["verdict"],))
    if f["error"]:
        out.para(f"  {f['error']}", "  ")
    _stream_lines(out, streams, "  ")


def _stream_lines(out: Output, streams: list[dict[str, Any]], indent: str) -> None:
    """A line per unreadable stream and per finding, wrapped at whole words."""
    for s in streams:
        where = f"{s['location']} @ {s['offset']}"
        if s["error"]:
            out.para(f"{indent}{where}: {s['verdict']}: {s['error']}", indent,
                     styled=(s["verdict"],))
        for verdict, text in _finding_lines(s["findings"]):
            out.para(f"{indent}{where}: {verdict}: {text}", indent, styled=(verdict,))


def scan(out: Output, result: dict[str, Any]) -> None:
    files = result["files"]
    for f in files:
        _file_lines(out, f)
    skipped = result["skipped"]
    for s in skipped:
        out.line(f"{s['path']}: {_verdict(out, 'skipped')}: {s['reason']}")
    counts: dict[str, int] = {}
    for f in files:
        counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
    summary = ", ".join(f"{n} {_verdict(out, v)}" for v, n in sorted(counts.items()))
    if skipped:
        summary = f"{summary or 'nothing read'}; {plural(len(skipped), 'path')} skipped"
    out.line(f"{plural(len(files), 'file')} scanned: {summary}; overall {_verdict(out, result['verdict'])}")


def _inspect_pickle(out: Output, f: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    out.line(f"{f['path']}: {f['format']} checkpoint, read by the scanner (nothing was loaded)")
    table = Table()
    table.add_column("stream", overflow="fold")
    table.add_column("offset", justify="right")
    table.add_column("verdict")
    table.add_column("globals", overflow="fold")
    styles = {"safe": "green", "unknown": "yellow", "error": "yellow", "dangerous": "bold red"}
    for s in f["streams"]:
        table.add_row(
            Text(s["location"]),
            f"{s['offset']:,}",
            Text(s["verdict"], style=styles.get(s["verdict"], "")),
            Text(", ".join(s["globals"]) or "-"),
            end_section=True,
        )
    out.console.print(table)
    _stream_lines(out, f["streams"], "")
    out.line(f"verdict: {_verdict(out, f['verdict'])}")


def convert(out: Output, result: dict[str, Any]) -> None:
    outputs = result["outputs"]
    out.line(
        f"converted {result['source']} ({result['format']}) -> {', '.join(outputs)}: "
        f"{plural(len(result['tensors']), 'tensor')}, {human_bytes(result['bytes_written'])}"
    )
    for alias, kept in result["aliases"].items():
        out.line(f"  tied: {alias} -> {kept} (written once)")
    if result["values"]:
        out.line(f"  kept in metadata: {', '.join(result['values'])}")
    if result["salvage"]:
        out.line(f"  {out.style('salvaged', 'yellow', 'bold')}: the output holds numbers only; "
                 "nothing was executed, and these were not performed:")
        for n in result["not_performed"]:
            at = f" (at {n['at']})" if n["at"] else ""
            name = f" {n['global']}" if n["global"] else ""
            out.line(f"    {n['opcode']}{name}, byte {n['offset']}{at}: {n['verdict']}: "
                     f"{n['reason']}")
        if result["not_listed"]:
            out.line(f"    ... and {result['not_listed']:,} more")
    for d in result["dropped"]:
        out.line(f"  {out.style('dropped', 'yellow')}: {d['name']} ({d['reason']})")
    for d in result["left"]:
        out.line(f"  left: {d['name']}: {d['reason']}")
    for f in result["files"]:
        detail = f" ({f['detail']})" if f["detail"] else ""
        out.line(f"  file {f['name']}: {f['action']}{detail}")
    for d in result["tensors_left"]:
        out.line(f"  {out.style('tensor not converted', 'yellow', 'bold')}: {d['name']} "
                 f"({d['reason']})")
    for name, digest in result["source_sha256"].items():
        out.line(f"  source sha256 {digest}  {name}")
    for name in result["replaced"]:
        out.line(f"  {out.style('replaced', 'yellow')}: {name} (it existed; --overwrite)")
    if result["signature"]:
        out.line(f"signed: {result['signature']}")
