"""The shape of the code: the packages' one rule each (docs/architecture.md) and no import circle.

Every import of every module of theory/, solvers/, verify/ and validation/ is read from its
source (module level and inside functions alike: a lazy import that closes a circle is still a
circle), and the graph between our modules must have no cycle. Negative control: a graph with a
planted circle is found to have one.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "solvers", "verify", "validation")
#: what each package may import of ours besides itself (README "The map")
ALLOWED = {"validation": set(), "theory": {"validation"}, "solvers": {"validation"},
           "verify": {"theory", "solvers", "validation"}}


def _modules() -> dict:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict:
    """{module: set of our modules it imports anywhere in its source}."""
    mods = _modules()

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, path in mods.items():
        deps = set()
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps.add(full if full in mods else resolve(base))
        deps.discard(None)
        deps.discard(m)
        graph[m] = deps
    return graph


def cycles(graph) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_circle():
    graph = dict(import_graph())
    graph["verify.gpu.command"] = graph["verify.gpu.command"] | {"verify.fewshot.gpu_check"}
    graph["verify.fewshot.gpu_check"] = graph["verify.fewshot.gpu_check"] | {"verify.gpu.command"}
    assert ["verify.fewshot.gpu_check", "verify.gpu.command"] in cycles(graph)


def test_each_package_imports_only_what_its_rule_allows():
    bad = [(m, d) for m, deps in import_graph().items() for d in deps
           if d.split(".")[0] not in ALLOWED[m.split(".")[0]] | {m.split(".")[0]}]
    assert bad == []
    # negative control: the rule is read, not assumed (solvers must not see theory)
    assert "theory" not in ALLOWED["solvers"] and "verify" not in ALLOWED["theory"]
