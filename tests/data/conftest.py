"""Fixtures of the data tests: the session's small ML world."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_world() -> ModuleType:
    name = "mlops_test_world"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("world.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def world() -> ModuleType:
    """Helpers of tests/data/world.py (build a data folder, run the CLI, digest folders)."""
    return _load_world()


@pytest.fixture(scope="session")
def data_world(world: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared world (see tests/data/world.py: W01-W03 accepted, W04 in landing, champion)."""
    return world.shared(tmp_path_factory)


@pytest.fixture()
def data_dir(world: ModuleType, data_world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared world's data folder, set as MLOPS_DATA_DIR for one test."""
    world.use_data_dir(data_world, monkeypatch)
    return data_world
