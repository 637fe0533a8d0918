"""The StatsD names Airflow 3.3 sends (a capture of a clean run, tests/observability/
statsd_names_seen.txt, plus the failure-only names) and their metric type from Airflow's own
metrics registry."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

import yaml

SEEN = Path(__file__).resolve().parents[3] / "tests" / "observability" / "statsd_names_seen.txt"
# Airflow's own list of metric names and legacy names (located without importing airflow: slow).
_AIRFLOW = Path(importlib.util.find_spec("airflow").submodule_search_locations[0])
REGISTRY = _AIRFLOW / "_shared" / "observability" / "metrics" / "metrics_template.yaml"

# Sent only when something fails, so absent from a clean run's capture (shared notes).
FAILURE_ONLY = [
    "airflow.ti_failures",
    "airflow.ti.finish.<dag_id>.<task_id>.failed",
    "airflow.dagrun.duration.failed",
    "airflow.dagrun.duration.failed.<dag_id>",
    "airflow.operator_failures",
    "airflow.operator_failures__PythonDecoratedOperator",
]
# Placeholder values: a task-group id arrives as `group__task` (Airflow replaces `.`).
PLACEHOLDERS = {"<dag_id>": "flights_training", "<task_id>": "prep__validate",
                "<queue>": "heavy", "<file>": "flights_pipeline"}
REGISTRY_TYPES = {"counter": "counter", "gauge": "gauge", "timer": "observer"}


def _concrete(name: str) -> str:
    for key, value in PLACEHOLDERS.items():
        name = name.replace(key, value)
    return name


@cache
def _registry() -> list[dict]:
    return yaml.safe_load(REGISTRY.read_text())["metrics"]


def _template_re(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", template)
    body = "".join(r"[^.]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rf"airflow\.{body}")


@cache
def _registry_patterns() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for entry in _registry():
        kind = REGISTRY_TYPES[entry["type"]]
        out.append((_template_re(entry["name"]), kind))
        if entry["legacy_name"] != "-":
            out.append((_template_re(entry["legacy_name"]), kind))
    return out


def metric_type(name: str) -> str:
    """The exporter metric type of a StatsD name, from Airflow's own metrics registry."""
    kinds = {kind for pattern, kind in _registry_patterns() if pattern.fullmatch(name)}
    assert len(kinds) == 1, f"{name}: not exactly one type in Airflow's registry: {kinds}"
    return kinds.pop()


def seen_names() -> list[str]:
    """The fixture's names plus the failure-only names, with concrete ids."""
    lines = [ln.strip() for ln in SEEN.read_text().splitlines()]
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    return [_concrete(n) for n in names + FAILURE_ONLY]
