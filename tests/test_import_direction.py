"""Imports point one way: errors/config <- data, models <- lora <- train, eval <- cli.

Checked statically with ``ast`` so that a new import against the direction fails here, not in a
review. Settings modules are leaves (they may import only settings_base, errors and other
settings), which lets ``furlora.config`` compose every section without import cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "furlora"

#: area -> furlora areas it must not import.
FORBIDDEN: dict[str, set[str]] = {
    "errors": {"*"},
    "settings_base": {"*"},
    "models": {"data", "lora", "tokens", "train", "eval", "memory", "pretrain", "cli"},
    "data": {"lora", "tokens", "train", "eval", "memory", "pretrain", "cli"},
    "lora": {"data", "tokens", "train", "eval", "pretrain", "cli"},
    "tokens": {"lora", "train", "eval", "pretrain", "cli"},
    "train": {"eval", "pretrain", "cli"},
    "eval": {"train", "pretrain", "cli"},
    "memory": {"eval", "pretrain", "cli"},
    "pretrain": {"eval", "cli"},
}
SETTINGS_ALLOWED = {"settings_base", "errors"}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(file: Path) -> list[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [m for m in found if m == "furlora" or m.startswith("furlora.")]


def test_imports_point_one_way():
    problems = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        area = _area(module)
        for imported in _imports(file):
            target = _area(imported)
            if file.stem == "settings":
                if not (target in SETTINGS_ALLOWED or imported.endswith(".settings")):
                    problems.append(f"{module} (a settings leaf) imports {imported}")
                continue
            if imported.endswith(".settings") or target == area:
                continue
            forbidden = FORBIDDEN.get(area, set())
            if "*" in forbidden or target in forbidden:
                problems.append(f"{module} imports {imported}")
            if target == "cli" and area != "cli":
                problems.append(f"{module} imports the CLI ({imported})")
    assert not problems, "imports against the layer direction:\n" + "\n".join(problems)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from furlora.eval.metrics import psnr\nimport furlora.cli.main\n")
    assert _imports(bad) == ["furlora.eval.metrics", "furlora.cli.main"]
    assert _area("furlora.train.trainer") == "train"


def _module_graph() -> dict[str, set[str]]:
    """module -> furlora modules it imports (any import, at module level or inside a function).

    ``from furlora.a import b`` counts as importing ``furlora.a.b`` when that is a module, else
    ``furlora.a``; a package's ``__init__`` is the package's name.
    """
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                found |= subs or {node.module}
        graph[module] = found - {module}
    return graph


def _cycles_inside_areas(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among modules of one area (strongly connected groups of more than one module)."""
    cycles = []
    for area in sorted({_area(m) for m in graph if m.count(".") >= 2}):
        members = {m for m in graph if m.count(".") >= 2 and _area(m) == area}
        edges = {m: graph[m] & members for m in members}
        cycles += _strongly_connected(edges)
    return cycles


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of nodes that reach each other (Kosaraju), groups of size > 1 only, sorted."""
    order: list[str] = []
    seen: set[str] = set()
    for start in sorted(edges):
        if start in seen:
            continue
        stack = [(start, iter(sorted(edges[start])))]
        seen.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(sorted(edges[child]))))
    reverse: dict[str, set[str]] = {n: set() for n in edges}
    for node, targets in edges.items():
        for target in targets:
            reverse[target].add(node)
    groups, assigned = [], set()
    for node in reversed(order):
        if node in assigned:
            continue
        group, todo = [], [node]
        assigned.add(node)
        while todo:
            current = todo.pop()
            group.append(current)
            for nxt in reverse[current] - assigned:
                assigned.add(nxt)
                todo.append(nxt)
        if len(group) > 1:
            groups.append(sorted(group))
    return sorted(groups)


def test_no_import_cycles_inside_an_area():
    cycles = _cycles_inside_areas(_module_graph())
    assert not cycles, "modules of one area that import each other (move the shared part down, or the " \
        "orchestration up to the caller):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle():
    graph = {"furlora.eval.report": {"furlora.eval.compare"}, "furlora.eval.compare": {"furlora.eval.report"},
             "furlora.eval.grid": {"furlora.eval.image_io"}, "furlora.eval.image_io": set(),
             "furlora.train.a": {"furlora.eval.grid"}}
    assert _cycles_inside_areas(graph) == [["furlora.eval.compare", "furlora.eval.report"]]
