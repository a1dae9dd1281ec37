"""Measure the shape of the package: the import graph, its cycles, module sizes, public names.

Run from the repository root: ``python tools/import_graph.py [--json] [--src DIR]``. It parses every module under
src/tensorfile with ``ast`` (nothing is imported), records both module-level imports and imports made
inside functions (marked ``lazy``; imports under ``if TYPE_CHECKING:`` are left
out, they never run), and reports the strongly connected components of the graph with
more than one module: each is an import cycle, whether or not a function-local import hides it.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
if "--src" in sys.argv:  # measure another checkout: --src path/to/src
    ROOT = Path(sys.argv[sys.argv.index("--src") + 1]).resolve()
PACKAGE = "tensorfile"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base.pop()
    for _ in range(node.level - 1):
        base.pop()
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, bool]:
    """The package modules ``name`` imports -> True if only inside functions."""
    found: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                # Read by type checkers only: never imported at run time.
                for other in child.orelse:
                    visit(other, lazy)
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = resolve(name, path.name == "__init__.py", child)
                # `from pkg import sub` imports the module pkg.sub (pkg itself is
                # imported by every import of anything inside it: not an edge).
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in child.names
                ]
            for target in targets:
                # `from mod import func` names the module.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found[target] = found.get(target, True) and lazy
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def collect(modules: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """module -> {imported module: True if only imported inside a function}."""
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Tarjan's strongly connected components, keeping those with two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def public_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            return sorted(value)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return sorted(n for n in names if not n.startswith("_"))


def main() -> int:
    modules = {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
    edges = collect(modules)
    found = cycles(edges)
    lazy_edges = sorted(
        (src, dst) for src, targets in edges.items() for dst, lazy in targets.items() if lazy
    )
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    public = {name: public_names(path) for name, path in modules.items()}
    if "--json" in sys.argv:
        json.dump(
            {
                "cycles": found,
                "lazy_edges": lazy_edges,
                "lines": sizes,
                "public": public,
                "edges": {k: sorted(v) for k, v in edges.items()},
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 1 if found else 0
    print(f"modules: {len(modules)}  edges: {sum(len(v) for v in edges.values())}  "
          f"function-local edges: {len(lazy_edges)}")
    print(f"cycles (strongly connected components > 1): {len(found)}")
    for component in found:
        print(f"  {len(component)} modules: {', '.join(component)}")
        members = set(component)
        for src in component:
            for dst, lazy in sorted(edges[src].items()):
                if dst in members:
                    print(f"    {src} -> {dst}{'  (function-local)' if lazy else ''}")
    print("function-local imports inside the package:")
    for src, dst in lazy_edges:
        print(f"  {src} -> {dst}")
    print(f"lines per module (total {sum(sizes.values())}; over 800: "
          f"{[n for n, s in sizes.items() if s > 800] or 'none'}):")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"  {size:6d}  {name}  ({len(public[name])} public)")
    print(f"public names: {sum(len(v) for v in public.values())} over every module (a name a "
          "package re-exports counts again)")
    surface = {n: v for n, v in public.items() if not any(p.startswith("_") for p in n.split("."))}
    print(f"public surface: {sum(len(v) for v in surface.values())} names in {len(surface)} modules "
          "whose dotted path has no _private part")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
