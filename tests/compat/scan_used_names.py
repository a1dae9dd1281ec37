"""Find every ``safetensors`` name a library's source touches (writes used_names.py).

    python tests/compat/scan_used_names.py LIBRARY VERSION ROOT [LIBRARY VERSION ROOT ...]

Each ROOT is a folder of Python source (an unpacked wheel, a source checkout,
an installed package). The output, a Python module, goes to stdout; it is how
``used_names.py`` was made (see its header for the exact sources).

What counts as a use, found with the ``ast`` module (no regular expressions):

* ``from safetensors[.sub] import name [as alias]``: ``safetensors[.sub].name``;
* ``import safetensors[.sub] [as alias]``, then ``alias.name`` (or
  ``safetensors.sub.name`` through the package): ``safetensors.sub.name``;
  bare use of a module (passing ``safetensors.torch`` around) is not a name;
* a name bound, in the same function, to what ``safe_open(...)`` returns
  (``with safe_open(...) as f`` or ``f = safe_open(...)``), then ``f.method``:
  ``safetensors.safe_open().method``; the same for what ``f.get_slice(...)``
  returns: ``safetensors.safe_open().get_slice().method``.

A scan over-approximates where a library reuses a variable name for other
things in one function: such names are kept (they are cheap to check: a name
neither the reference nor tensorfile has is just recorded as absent in both).
"""

from __future__ import annotations

import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

MODULES = ("safetensors", "safetensors.numpy", "safetensors.torch", "safetensors.flax",
           "safetensors.tensorflow", "safetensors.paddle", "safetensors.mlx",
           "safetensors._safetensors_rust")
HANDLE = "safetensors.safe_open()"
SLICE = "safetensors.safe_open().get_slice()"
_OPENERS = {"safetensors.safe_open", "safetensors.torch.safe_open", "safetensors.numpy.safe_open",
            "safetensors._safe_open_handle", "safetensors._safetensors_rust.safe_open"}


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _split(qualified: str) -> str | None:
    """``safetensors.torch.load_file.__doc__`` -> ``safetensors.torch.load_file``."""
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in MODULES:
            return ".".join(parts[: cut + 1])
    return None


class _Scope(ast.NodeVisitor):
    """One module or function: its aliases and safe_open handles."""

    def __init__(self, aliases: dict[str, str], found: set[str]) -> None:
        self.aliases = dict(aliases)  # local name -> qualified safetensors name
        self.handles: dict[str, str] = {}  # local name -> HANDLE or SLICE
        self.found = found

    # -- bindings
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "safetensors" or a.name.startswith("safetensors."):
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    self.aliases["safetensors"] = "safetensors"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level == 0 and (mod == "safetensors" or mod.startswith("safetensors.")):
            for a in node.names:
                qualified = f"{mod}.{a.name}"
                self.aliases[a.asname or a.name] = qualified
                if qualified not in MODULES:
                    self.found.add(qualified)

    def _resolve(self, node: ast.expr) -> str | None:
        parts = _dotted(node)
        if not parts or parts[0] not in self.aliases:
            return None
        return ".".join([self.aliases[parts[0]], *parts[1:]])

    def _kind_of_call(self, node: ast.expr) -> str | None:
        if not isinstance(node, ast.Call):
            return None
        target = self._resolve(node.func)
        if target in _OPENERS:
            return HANDLE
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "get_slice"
                and isinstance(func.value, ast.Name) and self.handles.get(func.value.id) == HANDLE):
            return SLICE
        return None

    def _bind(self, target: ast.expr, value: ast.expr) -> None:
        kind = self._kind_of_call(value)
        if kind and isinstance(target, ast.Name):
            self.handles[target.id] = kind

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            if item.optional_vars is not None:
                self._bind(item.optional_vars, item.context_expr)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)  # the value's own uses first
        for t in node.targets:
            self._bind(t, node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        inner = _Scope(self.aliases, self.found)
        for stmt in node.body:
            inner.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- uses
    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts and parts[0] in self.handles and len(parts) >= 2:
            self.found.add(f"{self.handles[parts[0]]}.{parts[1]}")
            return
        # safe_open(...).get_tensor(...) without a variable
        if isinstance(node.value, ast.Call) and self._kind_of_call(node.value):
            self.found.add(f"{self._kind_of_call(node.value)}.{node.attr}")
        qualified = self._resolve(node)
        if qualified is not None:
            name = _split(qualified)
            if name is not None and name not in MODULES:
                self.found.add(name)
            return
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        # f.get_slice(k)[...] and a slice object's s[...]
        if isinstance(node.value, ast.Name) and self.handles.get(node.value.id) == SLICE:
            self.found.add(f"{SLICE}.__getitem__")
        elif isinstance(node.value, ast.Call) and self._kind_of_call(node.value) == SLICE:
            self.found.add(f"{SLICE}.__getitem__")
        self.generic_visit(node)


def scan_file(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if "safetensors" not in text:
        return set()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    found: set[str] = set()
    scope = _Scope({}, found)
    # Imports outside functions (also under ``if``/``try``) bind for every
    # function, wherever in the file they sit.
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            scope.visit(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    scope.visit(tree)
    return found


def scan(library: str, version: str, root: Path) -> dict[str, list[tuple[str, str, str]]]:
    uses: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for name in scan_file(path):
            uses[name].append((library, version, rel))
    return uses


HEADER = '''"""Every ``safetensors`` name that libraries importing it really use, with where.

Made by ``tests/compat/scan_used_names.py`` (do not edit by hand; rerun it)
over: transformers 5.25.0, huggingface_hub 2.4.0 and torch 2.13.0 as
installed by the ``test`` extra (torch's uses are
``torch.distributed.checkpoint``'s Hugging Face storage and
``torch.serialization``); huggingface_hub 1.28.0, diffusers 0.42.1,
accelerate 1.15.0, peft 0.21.2, timm 1.0.31, sentence-transformers 6.3.0,
vllm 0.33.0 and mlx-lm 0.32.2 from their PyPI wheels (``pip download
--no-deps``, unpacked); text-generation-inference at commit db931fcf
(v3.3.7-1, ``server/`` and ``backends/gaudi/server/``). mlx-lm reads
safetensors through ``mlx.core.load`` and imports nothing of ``safetensors``.

``test_used_names.py`` checks each name against the reference by name,
signature, return type and raised exception types.
"""

from __future__ import annotations

#: (library, version, file under the scanned root)
Source = tuple[str, str, str]
'''


def _q(text: str) -> str:
    return json.dumps(text)  # a double-quoted Python string for these plain names


def main(argv: list[str]) -> None:
    if len(argv) % 3 or not argv:
        raise SystemExit(__doc__)
    uses: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for i in range(0, len(argv), 3):
        for name, where in scan(argv[i], argv[i + 1], Path(argv[i + 2])).items():
            uses[name].extend(where)
    print(HEADER)
    print("#: (library, version) of every source scanned, with or without uses.")
    print("SCANNED: tuple[tuple[str, str], ...] = (")
    for i in range(0, len(argv), 3):
        print(f"    ({_q(argv[i])}, {_q(argv[i + 1])}),")
    print(")")
    print()
    print("#: Every name used -> where: (library, version, file under its package root).")
    print("USED: dict[str, tuple[Source, ...]] = {")
    for name in sorted(uses):
        print(f"    {_q(name)}: (")
        for src in sorted(set(uses[name])):
            print(f"        ({', '.join(map(_q, src))}),")
        print("    ),")
    print("}")


if __name__ == "__main__":
    main(sys.argv[1:])
