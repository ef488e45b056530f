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
