"""Strict JSON for untrusted bytes: the one loader behind headers, indexes, bundles and pins.

Strict means UTF-8 only, standard JSON only (no ``NaN``/``Infinity``), no
duplicate keys (two readers could keep different values), and bounded nesting.
Every refusal is raised as the caller's error type, with a message that names
``what`` was being read and where (a byte offset).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tensorfile.errors import TensorfileError


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class _Constant(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def loads_strict(
    data: bytes,
    what: str,
    error: type[TensorfileError],
    *,
    duplicate: type[TensorfileError] | None = None,
    offset: int = 0,
    parse_int: Callable[[str], Any] | None = None,
) -> Any:
    """``data`` parsed as strict JSON; refusals raise ``error`` (``duplicate`` for
    a repeated key, if given) naming ``what``; byte positions count from ``offset``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} is not valid UTF-8 (byte {offset + e.start})") from None
    try:
        return json.loads(
            text, object_pairs_hook=_unique_pairs, parse_constant=_reject_constant, parse_int=parse_int
        )
    except _Duplicate as e:
        raise (duplicate or error)(f"{what} names {e.key!r} more than once (a duplicate key)") from None
    except _Constant as e:
        raise error(f"{what} contains {e.name}, which is not valid JSON") from None
    except json.JSONDecodeError as e:
        # e.pos counts characters; report the byte offset.
        byte = offset + len(text[: e.pos].encode("utf-8"))
        raise error(f"{what} is not valid JSON at byte {byte}: {e.msg}") from None
    except RecursionError:
        raise error(f"{what} has JSON nested too deeply") from None
    except TensorfileError:
        raise
    except ValueError as e:  # int() refuses integers of more than 4300 digits
        raise error(f"{what} has a number out of range: {e}") from None
