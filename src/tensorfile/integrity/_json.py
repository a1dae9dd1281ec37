"""Strict JSON for untrusted signature files: parsing and typed field readers.

Every reader raises :class:`BundleError` naming the field, so a malformed
bundle or payload never surfaces as a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tensorfile.errors import BundleError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise BundleError("JSON object has a duplicate key")
    return d


def _reject_constant(name: str) -> Any:
    raise BundleError(f"JSON contains {name}, which is not valid JSON")


def loads_strict(data: bytes, what: str) -> object:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{what} is not UTF-8 text") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        raise BundleError(f"{what} is not valid JSON (truncated?): {e.msg} at {e.pos}") from None
    except RecursionError:
        raise BundleError(f"{what} is nested too deeply") from None
    except BundleError as e:
        raise BundleError(f"{what}: {e}") from None


def json_obj(x: object, what: str) -> dict[str, Any]:
    if type(x) is not dict:
        raise BundleError(f"{what} must be a JSON object, got {type(x).__name__}")
    return x


def json_list(x: object, what: str) -> list[Any]:
    if type(x) is not list:
        raise BundleError(f"{what} must be a JSON array, got {type(x).__name__}")
    return x


def json_str(x: object, what: str) -> str:
    if type(x) is not str or not x:
        raise BundleError(f"{what} must be a non-empty string")
    return x


def hex64(x: object, what: str) -> str:
    if type(x) is not str or not _HEX64.fullmatch(x):
        raise BundleError(f"{what} must be 64 lowercase hex digits, got {x!r:.80}")
    return x
