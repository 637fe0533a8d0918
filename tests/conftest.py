"""Fixtures shared by the ML-core tests (tests/data and tests/model): the session's small world
of real data, built once by testkit/world.py. The native test stack's session fixtures
(testkit/stack_session.py) are registered here, so tests/stack and tests/faults share one stack.

Test helpers are the package ``testkit`` (tests/lib/testkit), on pytest's ``pythonpath``
(pyproject.toml); test modules import it and nothing else of tests/."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from testkit import world as _world

pytest_plugins = ["testkit.stack_session"]


@pytest.fixture(scope="session")
def world() -> ModuleType:
    """Helpers of testkit/world.py (build a data folder, run the CLI, digest folders)."""
    return _world


@pytest.fixture(scope="session")
def shared_world(world: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared world: W01-W03 accepted, W04 in landing, a champion (see world.shared)."""
    return world.shared(tmp_path_factory)
