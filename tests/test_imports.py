"""The import graph of core/ is acyclic: top-level and function-level imports of core modules."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = CORE) -> dict[str, set[str]]:
    """module -> the core modules it imports anywhere in its body (functions included).

    `from core.sun import head_adapter` resolves to core.sun.head_adapter when that is a module;
    `from core.sun.solver import solve` to core.sun.solver; relative imports are resolved too.
    """
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    packages = {name for name, p in files.items() if p.name == "__init__.py"}
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = graph.setdefault(name, set())
        package = name if name in packages else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..sun import y
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import core.sun.solver as s` etc.
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == top and target != name:
                    edges.add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "core"
    (pkg / "sun").mkdir(parents=True)
    for f in ("__init__.py", "sun/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "sampler.py").write_text("def f():\n    from core.sun import head\n")
    (pkg / "sun" / "head.py").write_text("from core.sampler import f\n")
    graph = import_graph(pkg)
    assert graph["core.sampler"] == {"core.sun.head"}
    assert find_cycle(graph) == ["core.sampler", "core.sun.head", "core.sampler"]
    (pkg / "sun" / "head.py").write_text("from ..config import x\nimport core.sun\n")
    (pkg / "config.py").write_text("")
    assert import_graph(pkg)["core.sun.head"] == {"core.config", "core.sun"}
    assert find_cycle(import_graph(pkg)) is None


def test_core_import_graph_is_acyclic():
    graph = import_graph()
    assert "core.head_sampler" in graph["core.sampler"]  # the graph sees core's real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core/: " + " -> ".join(cycle)
