"""Shared fixtures of the observability and compose checks (no Docker engine, no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from testkit.statsd_mapping import StatsdMapping, load_mapping

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "observability"


def _tool(name: str) -> str:
    """Absolute path of a required command; fail (never skip) with the fix when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: run `make system-deps` (scripts/system-deps.sh)")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's `prometheus` package."""
    return _tool("promtool")


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose (parses and validates compose files without an engine)."""
    return _tool("docker-compose")


@pytest.fixture(scope="session")
def mapping() -> StatsdMapping:
    """The project's statsd_exporter mapping, validated."""
    return load_mapping(OBS / "statsd" / "mapping.yml")


@pytest.fixture(scope="session")
def alert_rules() -> list[dict]:
    """Every alerting rule of observability/prometheus/rules/*.yml."""
    rules = []
    for path in sorted((OBS / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules
