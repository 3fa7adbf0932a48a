"""What benchmarks/design_goals.py and the import tests read from the sources with `ast` (nothing imported): the
modules of src/ and of benchmarks/, their import graph and its cycles, and edits of `sys.path`."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from common.results import BENCHMARKS

SRC = BENCHMARKS.parent / "src"


@functools.cache  # several readings of one tree in a run; the trees are only read
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def src_modules() -> dict[str, Path]:
    """The noisecraft modules by their dotted names (a package by its own name)."""
    files = sorted((SRC / "noisecraft").rglob("*.py"))
    return {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def benchmark_modules() -> dict[str, Path]:
    """The scripts by their names (a script imports `common` and, for figures.py, scripts as top-level modules)."""
    mods = {p.stem: p for p in BENCHMARKS.glob("*.py")}
    common = (BENCHMARKS / "common").glob("*.py")
    return mods | {("common" if p.stem == "__init__" else f"common.{p.stem}"): p for p in common}


def _imports(tree: ast.Module, module_level: bool) -> list[tuple[str | None, list[str], int]]:
    """(module, imported names, level) of each import; module_level: only those at the top of the module, else
    also those inside functions."""
    nodes = tree.body if module_level else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            out.append((node.module, [a.name for a in node.names], node.level))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], 0) for a in node.names]
    return out


def import_graph(modules: dict[str, Path], module_level: bool) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports (`from a import b` counts a, and a.b when b is a module)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for module, names, level in _imports(parse(path), module_level):
            if level:  # relative: from the package `level - 1` above this one
                base = package.split(".")[:len(package.split(".")) - (level - 1)] if package else []
                module = ".".join(base + ([module] if module else []))
            if not module:
                continue
            deps.add(module)
            deps.update(f"{module}.{n}" for n in names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds at least one cycle."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def sys_path_edits(files: list[Path]) -> list[dict]:
    """Each use of `sys.path` (an insert, an append, an assignment), benchmarks/ must have none."""
    return [{"where": f"{p.relative_to(BENCHMARKS.parent)}:{n.lineno}"} for p in files for n in ast.walk(parse(p))
            if isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
            and n.value.id == "sys"]
