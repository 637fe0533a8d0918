"""The import rules of src/ are import-linter contracts (pyproject.toml [tool.importlinter]): the
ML core never imports its Airflow glue or the prediction service, validation never depends on
drift, the registry, promotion or training, nothing but the training step's users import
``mlops.train``, and the modules of ``mlops`` form layers (imports inside functions count). Here
`lint-imports` runs on the tree as it is, and on a copy with violations, which it must report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports with ``root``'s pyproject.toml, importing the packages of ``root``/src."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in done.stdout, done.stdout


def test_the_contracts_cover_every_package_and_module_of_src() -> None:
    packages = sorted(p.parent.name for p in (REPO / "src").glob("*/__init__.py"))
    assert sorted(CONFIG["root_packages"]) == packages
    layers = next(c for c in CONFIG["contracts"] if c["type"] == "layers" and c["containers"] == ["mlops"])
    layered = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    modules = {p.stem for p in (REPO / "src" / "mlops").glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in (REPO / "src" / "mlops").glob("*/__init__.py")}
    # Every module has its layer: a new one must be placed (and a layers contract has no cycles).
    assert modules == layered, (sorted(modules - layered), sorted(layered - modules))


def test_lint_imports_reports_each_broken_contract(tmp_path: Path) -> None:
    """A copy of src/ with one violation per contract, some through functions or other modules."""
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    src = tmp_path / "src"

    def append(module: str, code: str) -> None:
        path = src.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(path.read_text() + "\n\n" + code + "\n")

    append("mlops.util", "def _probe():\n    from mlops_serving import rows  # noqa")
    append("mlops_airflow.policy", "def _probe():\n    import mlops_serving.app  # noqa")
    # Indirect: validation -> data -> (a new import) promotion.
    append("mlops.data", "def _probe():\n    from mlops import promotion  # noqa")
    append("mlops_serving.rows", "def _probe():\n    from mlops.train import train_model  # noqa")
    done = _lint(tmp_path)
    assert done.returncode != 0
    names = {c["id"]: " ".join(c["name"].split()) for c in CONFIG["contracts"]}
    out = " ".join(done.stdout.split())
    for cid in ("core-apart", "airflow-apart-from-serving", "validation-apart", "train-is-a-step", "core-layers"):
        assert f"{names[cid]} BROKEN" in out, (cid, done.stdout)
    assert "mlops.validation" in done.stdout and "mlops.promotion" in done.stdout
    assert f"Contracts: 0 kept, {len(CONFIG['contracts'])} broken." in done.stdout, done.stdout
