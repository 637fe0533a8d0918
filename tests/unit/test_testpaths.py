"""pyproject.toml's testpaths name every test folder (they are collected in that order, the fault
suite last), so a new folder cannot be left out of `make test` unnoticed."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_testpaths_cover_every_test_folder_and_end_with_the_fault_suite() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    listed = options["testpaths"]
    folders = sorted(f"tests/{d.name}" for d in (REPO / "tests").iterdir()
                     if d.is_dir() and any(d.rglob("test_*.py")))
    assert listed[-1] == "tests/faults"
    # tests/compose runs only with `make test-compose` (--ignore in addopts).
    assert sorted([*listed, "tests/compose"]) == folders, (listed, folders)
    assert "--ignore=tests/compose" in options["addopts"]
