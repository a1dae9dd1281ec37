"""The policy ``tensorfile check`` applies: what it reads, how it is found, what it means.

A policy lives in ``tensorfile.toml``, or in the ``[tool.tensorfile]`` table of
``pyproject.toml``, found as ruff and pytest find theirs: the nearest such
file in the target's folder or one above it, then in the working folder or
one above it (a ``pyproject.toml`` without the table does not count). Every
key is optional; with no file at all the default policy applies (scan and
validate everything, fail on anything not proven safe, require no trust)::

    fail-on = ["dangerous", "unknown", "error", "incomplete", "not-assessed"]
    ignore = ["*.md", "logs/*"]          # fnmatch; no "/": the file name anywhere
    follow-symlinks = false
    allow."argparse.Namespace" = "Lightning hparams from save_hyperparameters()"

    [limits]                             # bytes: an integer or "20GiB", "500MB"
    max-file-size = "50GiB"
    max-total-size = "200GiB"
    max-files = 10000
    max-depth = 8                        # the scanner's bounds (ScanLimits)
    max-streams = 10000
    max-entries = 100000
    max-inflate = "64MiB"

    [trust]                              # any one of these that verifies will do
    keys = ["keys/release.pub"]          # paths relative to the policy file
    cert-roots = ["ca.pem"]
    trusted-root = "trusted_root.json"   # keyless (Sigstore), with:
    keyless = [{identity = "ci@example.com", issuer = "https://accounts.google.com"}]
    pins = "model.sha256"                # or trusted digests instead of a signature
    signature = "model.sig"              # default: model.sig in the model folder
    allow-extra-files = false

Parsing is strict: an unknown key, a wrong type, an allowed global without a
reason or one that is a known gadget, and a policy that would let
``dangerous`` pass are errors (:class:`~tensorfile.errors.PolicyError`)
naming the file, the line where it can be found, and the key.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfile._io.files import PathLike, read_bounded
from tensorfile._picklevm._allowed import allow_problem
from tensorfile._report import Verdict
from tensorfile.errors import PolicyError
from tensorfile.scan.pickle.containers import ScanLimits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the backport, as pytest and ruff users have
    import tomli as tomllib

#: File names searched for, nearest first within one folder.
POLICY_FILE = "tensorfile.toml"
PYPROJECT = "pyproject.toml"
#: Largest policy file read (they are a few lines).
MAX_POLICY_BYTES = 1 << 20
#: Most dotted parts of an allowed global (``allow.a.b.c`` nests tables in TOML).
MAX_NAME_PARTS = 32

#: Verdicts a policy may fail the run on. ``not-assessed`` is the scanner's
#: verdict for formats it does not look into; it is listed here so that a
#: policy may name it before and after that verdict reaches ``Verdict``.
VERDICTS = frozenset({v.value for v in Verdict if v is not Verdict.SAFE} | {"not-assessed"})
DEFAULT_FAIL_ON = VERDICTS

#: Every key a policy may hold, by the table it is in ("" for the top level): the
#: strict reader refuses any other, and spec/CHECK.md documents exactly these.
KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"allow", "fail-on", "ignore", "follow-symlinks", "limits", "trust"}),
    "limits": frozenset({"max-file-size", "max-total-size", "max-files", "max-depth",
                         "max-streams", "max-entries", "max-inflate"}),
    "trust": frozenset({"keys", "cert-roots", "trusted-root", "keyless", "pins", "signature",
                        "allow-extra-files"}),
    "trust.keyless": frozenset({"identity", "issuer"}),
}

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Keyless:
    """A Sigstore signer the policy trusts: its identity and OIDC issuer."""

    identity: str
    issuer: str


@dataclass(frozen=True)
class Trust:
    """What a model must verify against; any one entry that verifies is enough."""

    keys: tuple[Path, ...] = ()
    cert_roots: tuple[Path, ...] = ()
    trusted_root: Path | None = None
    keyless: tuple[Keyless, ...] = ()
    pins: Path | None = None
    signature: Path | None = None
    allow_extra_files: bool = False

    @property
    def required(self) -> bool:
        """Whether the policy asks for any verification at all."""
        return bool(self.keys or self.cert_roots or self.keyless or self.pins)


@dataclass(frozen=True)
class Bounds:
    """Size bounds on what is checked (None: no bound), and the scanner's own."""

    max_file_size: int | None = None
    max_total_size: int | None = None
    max_files: int | None = None
    scan: ScanLimits = field(default_factory=ScanLimits)


@dataclass(frozen=True)
class Policy:
    """A parsed policy. ``source`` is where it came from (``None``: the default)."""

    source: str | None = None
    allow: Mapping[str, str] = field(default_factory=dict)
    fail_on: frozenset[str] = DEFAULT_FAIL_ON
    ignore: tuple[str, ...] = ()
    follow_symlinks: bool = False
    bounds: Bounds = field(default_factory=Bounds)
    trust: Trust = field(default_factory=Trust)

    def ignores(self, relative: str) -> bool:
        """Whether the path (relative to the model folder, ``/``-separated) is left out."""
        name = relative.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(relative if "/" in g else name, g) for g in self.ignore)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (schemas/check.json, ``policy``)."""
        t = self.trust
        return {
            "source": self.source,
            "allow": dict(self.allow),
            "fail_on": sorted(self.fail_on),
            "ignore": list(self.ignore),
            "trust": {
                "required": t.required,
                "keys": [str(k) for k in t.keys],
                "cert_roots": [str(c) for c in t.cert_roots],
                "keyless": [{"identity": k.identity, "issuer": k.issuer} for k in t.keyless],
                "pins": None if t.pins is None else str(t.pins),
            },
        }


# -- finding the file ------------------------------------------------------------------
def find_policy(target: PathLike, cwd: PathLike | None = None) -> Path | None:
    """The policy file for ``target``: nearest ``tensorfile.toml`` or ``pyproject.toml``
    with ``[tool.tensorfile]`` from the target's folder up, then from ``cwd`` up."""
    start = Path(os.path.abspath(target))
    if not start.is_dir():
        start = start.parent
    for origin in (start, Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))):
        for folder in (origin, *origin.parents):
            candidate = folder / POLICY_FILE
            if candidate.is_file():
                return candidate
            project = folder / PYPROJECT
            if project.is_file() and _has_tool_table(project):
                return project
    return None


def _has_tool_table(path: Path) -> bool:
    doc, _ = _toml(path)
    tool = doc.get("tool")
    return isinstance(tool, dict) and "tensorfile" in tool


def _toml(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed document and its text (read once, bounded)."""
    data = read_bounded(path, MAX_POLICY_BYTES, PolicyError, "the policy file")
    try:
        text = data.decode("utf-8")
        return tomllib.loads(text), text
    except UnicodeDecodeError as e:
        raise PolicyError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML: {e}") from None
    except RecursionError as e:
        # tomllib parses nested arrays and inline tables recursively; tomli 2.5
        # (the backport on 3.10) also refuses a dotted key of over 1000 parts
        # with this exception, and its message says so.
        raise PolicyError(f"{path}: not valid TOML: arrays, tables or keys nested too deeply "
                          f"({str(e)[:200]})") from None


# -- reading it ----------------------------------------------------------------------------
def load_policy(path: PathLike) -> Policy:
    """Parse a policy file: ``tensorfile.toml``, or a ``pyproject.toml``'s
    ``[tool.tensorfile]`` (any other name is read as a ``tensorfile.toml``)."""
    path = Path(path)
    doc, text = _toml(path)
    if path.name == PYPROJECT:
        tool = doc.get("tool", {})
        if not isinstance(tool, dict) or not isinstance(tool.get("tensorfile"), dict):
            raise PolicyError(f"{path}: no [tool.tensorfile] table")
        return _Reader(path, text, "tool.tensorfile").policy(tool["tensorfile"])
    return _Reader(path, text, "").policy(doc)


class _Reader:
    """Turns one TOML table into a :class:`Policy`, naming file, line and key on errors."""

    def __init__(self, path: Path, text: str, prefix: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.prefix = prefix
        self.base = path.parent

    def fail(self, key: str, why: str) -> PolicyError:
        full = ".".join(p for p in (self.prefix, key) if p)
        line = self._line_of(key.rsplit(".", 1)[-1])
        where = f"{self.path}:{line}" if line else str(self.path)
        return PolicyError(f"{where}: {full}: {why}")

    def _line_of(self, key: str) -> int | None:
        """Line of the first place ``key`` is written as a key (best effort: TOML
        parsers give no positions for valid documents)."""
        bare = re.escape(key)
        pattern = re.compile(rf'(^|[\s.\[{{,])("{bare}"|\'{bare}\'|{bare})\s*(=|\.|\])')
        for number, line in enumerate(self.lines, 1):
            if pattern.search(line.split("#", 1)[0] if '"' not in line else line):
                return number
        return None

    def keys(self, table: Mapping[str, Any], where: str) -> None:
        known = KEYS[where]
        for key in table:
            if key not in known:
                name = f"{where}.{key}" if where else key
                raise self.fail(name, f"unknown key (known here: {', '.join(sorted(known))})")

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        self.keys(doc, "")
        fail_on = frozenset(self.strings(doc, "fail-on", list(DEFAULT_FAIL_ON)))
        for verdict in fail_on - VERDICTS:
            raise self.fail("fail-on", f"unknown verdict {verdict!r} (known: "
                            f"{', '.join(sorted(VERDICTS))})")
        if "dangerous" not in fail_on:
            raise self.fail("fail-on", "must include 'dangerous': a known gadget always fails")
        source = str(self.path) + (f" [{self.prefix}]" if self.prefix else "")
        return Policy(source, self.allow(doc.get("allow", {})), fail_on,
                      tuple(self.strings(doc, "ignore", [])),
                      self.boolean(doc, "follow-symlinks"), self.bounds(doc.get("limits", {})),
                      self.trust(doc.get("trust", {})))

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {type(value).__name__}")
        return value

    def strings(self, doc: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
        value = doc.get(key, default)
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            raise self.fail(key, "must be a list of non-empty strings")
        return list(value)

    def boolean(self, doc: Mapping[str, Any], key: str, where: str = "") -> bool:
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}" if where else key, "must be true or false")
        return value

    def allow(self, raw: object, prefix: str = "") -> dict[str, str]:
        """``module.Name = reason`` entries; an unquoted dotted key nests tables in
        TOML (``allow.argparse.Namespace = ...``), so nested tables are joined."""
        table = self.table(raw, f"allow{prefix}")
        out = {}
        for key, reason in table.items():
            name = f"{prefix[1:]}.{key}" if prefix else key
            if isinstance(reason, dict):
                if name.count(".") >= MAX_NAME_PARTS:  # a hostile file: bound the recursion
                    raise self.fail(f"allow.{'.'.join(name.split('.')[:3])}...",
                                    f"a global name has at most {MAX_NAME_PARTS} parts")
                out.update(self.allow(reason, f".{name}"))
                continue
            if not isinstance(reason, str) or not reason.strip():
                raise self.fail(f"allow.{name}", "needs a reason: a non-empty string saying "
                                "why loading it is acceptable")
            problem = allow_problem(name)
            if problem is not None:
                raise self.fail(f"allow.{name}", f"cannot be allowed: {problem}")
            out[name] = reason.strip()
        return out

    def size(self, table: Mapping[str, Any], key: str) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        match = _SIZE.fullmatch(value) if isinstance(value, str) else None
        if match is None or match.group(2).lower() not in _UNITS:
            raise self.fail(f"limits.{key}", f"{value!r} is not a size (an integer of bytes, "
                            "or a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
        return int(match.group(1)) * _UNITS[match.group(2).lower()]

    def bounds(self, raw: object) -> Bounds:
        table = self.table(raw, "limits")
        self.keys(table, "limits")
        sizes = {key: self.size(table, key) for key in table}
        d = ScanLimits()

        def given(key: str, default: int) -> int:
            value = sizes.get(key)
            return default if value is None else value

        limits = d._replace(max_depth=given("max-depth", d.max_depth),
                            max_streams=given("max-streams", d.max_streams),
                            max_entries=given("max-entries", d.max_entries),
                            max_inflate=given("max-inflate", d.max_inflate))
        return Bounds(sizes.get("max-file-size"), sizes.get("max-total-size"),
                      sizes.get("max-files"), limits)

    def path_of(self, value: object, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a path (a non-empty string)")
        return self.base / os.path.expanduser(value)

    def trust(self, raw: object) -> Trust:
        table = self.table(raw, "trust")
        self.keys(table, "trust")
        keys = tuple(self.path_of(k, "trust.keys") for k in self.strings(table, "keys", []))
        roots = tuple(self.path_of(c, "trust.cert-roots")
                      for c in self.strings(table, "cert-roots", []))
        keyless = []
        raw_keyless = table.get("keyless", [])
        if not isinstance(raw_keyless, list):
            raise self.fail("trust.keyless", "must be a list of {identity, issuer} tables")
        for entry in raw_keyless:
            entry = self.table(entry, "trust.keyless")
            self.keys(entry, "trust.keyless")
            identity, issuer = entry.get("identity"), entry.get("issuer")
            if not (isinstance(identity, str) and identity and isinstance(issuer, str) and issuer):
                raise self.fail("trust.keyless", "each entry needs identity and issuer strings")
            keyless.append(Keyless(identity, issuer))
        trusted_root = (None if "trusted-root" not in table
                        else self.path_of(table["trusted-root"], "trust.trusted-root"))
        if bool(keyless) != (trusted_root is not None):
            raise self.fail("trust.keyless", "keyless signers and trusted-root go together")
        pins = None if "pins" not in table else self.path_of(table["pins"], "trust.pins")
        signature = (None if "signature" not in table
                     else self.path_of(table["signature"], "trust.signature"))
        if pins is not None and (keys or roots or keyless or signature is not None):
            raise self.fail("trust.pins", "pins check no signature: give pins, or signers")
        return Trust(keys, roots, trusted_root, tuple(keyless), pins, signature,
                     self.boolean(table, "allow-extra-files", "trust"))
