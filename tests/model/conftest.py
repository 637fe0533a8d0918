"""Fixtures of the model tests (the world itself is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture()
def model_dir(world: ModuleType, shared_world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared world's data folder, set as MLOPS_DATA_DIR for one test."""
    world.use_data_dir(shared_world, monkeypatch)
    return shared_world
