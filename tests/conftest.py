"""Fixtures shared by the ML-core tests (tests/data and tests/model): the session's small world
of real data, built once by tests/data/world.py. The native test stack's session fixtures
(tests/stack/stack_session.py) are registered here, so tests/stack and tests/faults share one stack."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).parent / "stack"))
pytest_plugins = ["stack_session"]


def _load_world() -> ModuleType:
    name = "mlops_test_world"
    if name not in sys.modules:
        path = Path(__file__).parent / "data" / "world.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def world() -> ModuleType:
    """Helpers of tests/data/world.py (build a data folder, run the CLI, digest folders)."""
    return _load_world()


@pytest.fixture(scope="session")
def shared_world(world: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared world: W01-W03 accepted, W04 in landing, a champion (see world.shared)."""
    return world.shared(tmp_path_factory)
