"""Imports inside src/mlops run one way: no module imports another that (directly or through
others) imports it back, counting imports inside functions too. The registry only moves aliases
and writes tags: it depends on no training, evaluation or promotion code."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mlops"


def _imports(path: Path) -> set[str]:
    """mlops modules imported anywhere in a file (module level or inside functions)."""
    names = {p.stem for p in PACKAGE.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "mlops":
                found |= {a.name for a in node.names if a.name in names}
            elif node.module.startswith("mlops."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("mlops.") and a.name.split(".")[1] in names}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_no_import_cycle_in_the_package() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, dep])}")
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_registry_and_evaluation_depend_on_no_decision_code() -> None:
    edges = graph()
    assert not edges["registry"] & {"train", "evaluate", "promotion", "drift", "cli", "demo"}
    assert "promotion" not in edges["evaluate"] and "promotion" not in edges["train"]
    assert "promotion" in edges["cli"]  # the CLI's evaluate/deploy go through the one owner


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from mlops.registry import deploy\n    from mlops import train\n")
    assert _imports(sample) == {"registry", "train"}


def test_nothing_in_mlops_imports_the_airflow_or_serving_packages() -> None:
    """mlops is imported by mlops_airflow and mlops_serving, never the other way round."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad = [n for n in names if n.split(".")[0] in ("mlops_airflow", "mlops_serving")]
            assert not bad, f"{path} imports {bad}"
