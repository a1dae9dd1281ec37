"""Strict JSON for untrusted signature files: parsing and typed field readers.

Every reader raises :class:`BundleError` naming the field, so a malformed
bundle or payload never surfaces as a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import re
from typing import Any

from tensorfile._format.strict_json import loads_strict as _loads
from tensorfile.errors import BundleError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def loads_strict(data: bytes, what: str) -> object:
    """Strict JSON (see :mod:`tensorfile._format.strict_json`), refused as :class:`BundleError`."""
    return _loads(data, what, BundleError)


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
