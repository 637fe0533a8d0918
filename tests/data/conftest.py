"""Fixtures of the data tests (the shared world itself is in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture()
def data_dir(world: ModuleType, shared_world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared world's data folder, set as MLOPS_DATA_DIR for one test."""
    world.use_data_dir(shared_world, monkeypatch)
    return shared_world


@pytest.fixture(scope="session")
def corpus_world(world: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    """W01-W08 accepted with every check, the training table built, and the genuine weeks the
    corpus mutates (see world.corpus)."""
    saved = dict(os.environ)
    try:
        return world.corpus(tmp_path_factory.mktemp("corpus"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture()
def corpus(world: ModuleType, corpus_world, monkeypatch: pytest.MonkeyPatch):
    """The corpus world's data folder (MLOPS_DATA_DIR for one test) and its genuine weeks."""
    data, weeks = corpus_world
    world.use_data_dir(data, monkeypatch)
    return data, weeks
