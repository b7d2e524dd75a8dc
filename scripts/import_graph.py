"""Print the import graph of hpcsr and preprocessing between areas (hpcsr.<first part>), read
with ast: each area's dependencies, those imported only inside functions marked '(in function)',
the cycles between areas, imports of an area in a higher layer (LAYERS), and whether hpcsr imports
preprocessing. Exit code 1 on any of those.

    .venv/bin/python scripts/import_graph.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hpcsr", "preprocessing")
# The one-way layering, bottom first: an area imports only areas of its own layer or below (the
# README's layout section and docs/ARCHITECTURE.md draw it). hpcsr.config assembles the sections'
# schemas by name (hpcsr.config.SECTIONS) and the launcher finds stages through entry points, so
# neither counts as an import of the areas they load.
LAYERS = (
    (
        "hpcsr",
        "hpcsr.factors",
        "hpcsr.coarsen",
        "hpcsr.atomic",
        "hpcsr.exits",
        "hpcsr.artifacts",
        "hpcsr.cf",
        "hpcsr.dist",
        "hpcsr.diffusion",
        "hpcsr.symmetry",
        "hpcsr.pixel_size",
    ),
    ("hpcsr.mass", "hpcsr.motion", "hpcsr.data", "hpcsr.models", "hpcsr.spread"),
    ("hpcsr.config",),
    ("hpcsr.export",),
    ("hpcsr.train", "hpcsr.sampling", "hpcsr.evaluate"),
    ("hpcsr.transfer", "hpcsr.sample"),
    ("hpcsr.launch",),
    ("hpcsr.demo", "hpcsr.cli", "hpcsr.__main__"),
    ("preprocessing",),
)


def area(module: str) -> str | None:
    """hpcsr.train.trainer -> hpcsr.train; preprocessing.cli -> preprocessing; others None."""
    parts = module.split(".")
    if parts[0] == "hpcsr":
        return ".".join(parts[:2]) if len(parts) > 1 else "hpcsr"
    return "preprocessing" if parts[0] == "preprocessing" else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                yield from ((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                yield from ((f"{base}.{a.name}", inner) for a in child.names)
            yield from visit(child, inner)

    yield from visit(tree, False)


def graph() -> tuple[dict, int]:
    """{area: {dependency: True when only imported inside functions}}, count of function-level imports."""
    edges: dict[str, dict[str, bool]] = defaultdict(dict)
    in_functions = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            src = area(module_name(path))
            for target, inner in imports(path):
                dst = area(target)
                if dst is None or dst == src:
                    continue
                in_functions += inner
                edges[src][dst] = edges[src].get(dst, True) and inner
    return edges, in_functions


def cycles(edges: dict) -> list[list[str]]:
    """Strongly connected components with more than one area (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for d in edges.values() for w in d}):
        if v not in index:
            strong(v)
    return out


def upward(edges: dict) -> list[str]:
    """'src -> dst' for every import of an area in a higher layer than its own, or of one in no layer."""
    level = {a: i for i, layer in enumerate(LAYERS) for a in layer}
    out = []
    for src, deps in sorted(edges.items()):
        for dst in sorted(deps):
            if level.get(src, -1) < level.get(dst, len(LAYERS)):
                out.append(f"{src} -> {dst}")
    return out


def main() -> int:
    sys.setrecursionlimit(10000)
    edges, in_functions = graph()
    for src in sorted(edges):
        deps = [f"{d} (in function)" if inner else d for d, inner in sorted(edges[src].items())]
        print(f"{src} -> {', '.join(deps)}")
    found = cycles(edges)
    reverse = sorted(src for src, deps in edges.items() if src.startswith("hpcsr") and "preprocessing" in deps)
    against = upward(edges)
    print(f"imports inside functions between areas: {in_functions}")
    print(f"cycles: {'; '.join(' <-> '.join(c) for c in found) or 'none'}")
    print(f"imports against the layers: {', '.join(against) or 'none'}")
    print(f"hpcsr importing preprocessing: {', '.join(reverse) or 'none'}")
    return 1 if found or reverse or against else 0


if __name__ == "__main__":
    sys.exit(main())
