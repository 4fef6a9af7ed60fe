"""The package's layering (docs/guide.md, "Layout"): one stage per module, arrows only down.

Every module of `numbascan/` is parsed with `ast` (nothing is imported) and three rules are
checked on the import statements:

  * the graph of imports between numbascan modules has no cycle (an import inside a function
    counts: it only hides the cycle);
  * no import of a numbascan module sits inside a function or method body (an import of an
    optional third-party package there, numba.cuda or scipy, is a lazy import and fine);
  * each module imports only modules of its own sub-package or of a lower rank in `RANKS`:
    two sub-packages of the same rank (ad and codegen) do not import each other.

`python tests/test_layering.py` prints the ranks, the import graph and the lines per package.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path


def _root() -> Path:
    """The package next to tests/, else the one on the path (found, not imported)."""
    here = Path(__file__).resolve().parents[1] / "numbascan"
    if (here / "__init__.py").exists():
        return here
    spec = importlib.util.find_spec("numbascan")
    return Path(spec.origin).parent if spec is not None and spec.origin else here


ROOT = _root()

# lower rank = lower stage; a module's rank is that of the longest prefix listed here
RANKS = {
    "numbascan._version": 0,     # the version string (what generated code and caches are keyed on)
    "numbascan.random": 0,       # Philox, RandomStreams: generated code imports it; imports nothing
    "numbascan.core": 1,         # IR, primitives, layouts, IR passes, the traces being recorded
    "numbascan.shared": 2,       # ns.shared and Updates: read by traces, so below them
    "numbascan.trace": 3,        # NumPy -> IR
    "numbascan.loop": 4,         # scan arguments, the traced step, the scan primitive, the oracle
    "numbascan.ad": 5,           # IR -> IR derivatives
    "numbascan.codegen": 5,      # IR -> source
    "numbascan.runtime": 6,      # caches, drivers, compiled calls
    "numbascan.api": 7,          # ns.scan, ns.jit, ns.vmap, ns.grad ...
    "numbascan.lax": 8,          # `import numbascan.lax`: the public name of api/lax.py
    "numbascan": 9,              # the package's public names (it imports numbascan.lax: ns.lax)
}


# ------------------------------------------------------------------------------------------------
# reading the package


def modules(root: Path | None = None) -> dict[str, Path]:
    """Dotted name -> path of every module of the package."""
    root = root or ROOT
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """(node, where) for every import statement; where: "module", "type_checking" or
    "function" (inside a function, method or class body)."""
    out = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, where))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                    ast.ClassDef)):
                visit(child, "function")
            elif isinstance(child, ast.If) and where == "module" and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "type_checking")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "module")
            else:
                visit(child, where)
    visit(tree, "module")
    return out


def _targets(name: str, node, is_package: bool, known: dict) -> list[str]:
    """The numbascan modules an import statement of module `name` imports."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "numbascan"]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "numbascan":
        return []
    out = []
    for a in node.names:
        sub = f"{source}.{a.name}"
        out.append(sub if sub in known else source)
    return out


def import_graph(root: Path | None = None):
    """(edges, type-checking edges, function-level imports): edges map a module to
    {imported module: line}; function-level imports are (module, line, imported module)."""
    known = modules(root or ROOT)
    edges = {m: {} for m in known}
    typing_edges = {m: {} for m in known}
    local = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, where in _imports(tree):
            for target in _targets(name, node, _is_package(path), known):
                if where == "function":
                    local.append((name, node.lineno, target))
                elif where == "type_checking":
                    typing_edges[name].setdefault(target, node.lineno)
                elif target != name:
                    edges[name].setdefault(target, node.lineno)
    return edges, typing_edges, local


def rank(module: str):
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in RANKS:
            return prefix, RANKS[prefix]
    return None, None


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return out


def lines_per_package(root: Path | None = None) -> dict[str, int]:
    """Lines of code per sub-package (top-level modules count on their own)."""
    root = root or ROOT
    counts = defaultdict(int)
    for name, path in modules(root).items():
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 1 else name
        if len(parts) == 2 and not _is_package(path) and path.parent == root:
            key = name
        counts[key] += len(path.read_text().splitlines())
    return dict(sorted(counts.items(), key=lambda kv: (rank(kv[0])[1] or 0, kv[0])))


def report(root: Path | None = None) -> str:
    edges, _, _ = import_graph(root)
    out = ["lines per package (rank):"]
    total = 0
    for pkg, n in lines_per_package(root).items():
        out.append(f"  {pkg:<22} {rank(pkg)[1]!s:>4}  {n:6d}")
        total += n
    out.append(f"  {'total':<22}       {total:6d}")
    out.append("imports between packages:")
    between = defaultdict(set)
    for m, targets in edges.items():
        for t in targets:
            a, b = rank(m)[0], rank(t)[0]
            if a != b:
                between[a].add(b)
    for a in sorted(between, key=lambda p: -(rank(p)[1] or 0)):
        out.append(f"  {a} -> {', '.join(sorted(between[a], key=lambda p: -(rank(p)[1] or 0)))}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# the rules


def test_every_module_has_a_rank():
    assert "numbascan.core.ir" in modules() or "numbascan.ir" in modules(), ROOT
    unranked = [m for m in modules() if rank(m)[0] in (None, "numbascan") and m != "numbascan"]
    assert not unranked, (f"modules outside the ranked sub-packages (add them to a stage or to "
                          f"RANKS): {unranked}")


def test_no_import_cycles():
    edges, _, local = import_graph()
    edges = {m: dict(targets) for m, targets in edges.items()}
    for m, line, t in local:             # a cycle dodged by an import inside a function is one
        if t != m:
            edges[m].setdefault(t, f"{line} (in a function)")
    found = cycles(edges)
    details = []
    for comp in found:
        members = set(comp)
        details.append(" <-> ".join(comp) + ": " + "; ".join(
            f"{m}:{line} imports {t}" for m in comp for t, line in sorted(edges[m].items())
            if t in members))
    assert not found, "import cycles:\n  " + "\n  ".join(details)


def test_no_function_level_imports_of_numbascan():
    _, _, local = import_graph()
    assert not local, ("imports of numbascan modules inside functions (import at module level; "
                       "a cycle it dodged needs a design fix):\n  " +
                       "\n  ".join(f"{m}:{line} imports {t}" for m, line, t in local))


def test_imports_point_down():
    edges, typing_edges, _ = import_graph()
    bad = []
    for kind, graph in (("imports", edges), ("imports (TYPE_CHECKING)", typing_edges)):
        for m, targets in graph.items():
            pm, rm = rank(m)
            for t, line in targets.items():
                pt, rt = rank(t)
                if rm is None or rt is None:
                    continue              # reported by test_every_module_has_a_rank
                if pt == pm:
                    continue
                if rt > rm or (rt == rm and pt != pm):
                    bad.append(f"{m}:{line} {kind} {t} ({pm} rank {rm} -> {pt} rank {rt})")
    assert not bad, "imports that do not point down:\n  " + "\n  ".join(sorted(bad))


def test_report_lines_per_package(capsys):
    text = report()
    with capsys.disabled():
        print("\n" + text)
    assert "total" in text


if __name__ == "__main__":
    print(report())
