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


@pytest.fixture(scope="session")
def source_weeks():
    """The whole data set (raw rows) and the week label of every row, read once."""
    from mlops.config import load_schema
    from mlops.data import load_source, week_labels

    schema = load_schema()
    frame = load_source(schema)
    return frame, week_labels(frame, schema)


@pytest.fixture()
def fresh_data(world: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder of its own, set as MLOPS_DATA_DIR, no threshold from the shell."""
    return world.fresh_data_dir(tmp_path, monkeypatch)


@pytest.fixture()
def schema_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write configs/flights.yaml with some top-level sections replaced and use it
    (MLOPS_SCHEMA) for one test."""
    import yaml

    from mlops.config import REPO_ROOT

    def make(**sections) -> Path:
        raw = yaml.safe_load((REPO_ROOT / "configs" / "flights.yaml").read_text())
        raw.update(sections)
        path = tmp_path / "schema.yaml"
        path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MLOPS_SCHEMA", str(path))
        return path

    return make
