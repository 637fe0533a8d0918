"""Every metric a dashboard panel or an alert queries is produced by the StatsD mapping, Flower,
MLflow or Prometheus itself; the failure message lists any that are not."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from testkit.promql import metric_names
from testkit.statsd_mapping import StatsdMapping
from testkit.airflow_names import metric_type, seen_names
from testkit.grafana import dashboard_queries

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# prometheus_flask_exporter families with MLflow's defaults_prefix (mlflow/server/prometheus_exporter.py);
# only served with `mlflow server --expose-prometheus <dir>`.
MLFLOW = {"mlflow_http_request_total", "mlflow_http_request_exceptions_total", "mlflow_exporter_info",
          *(f"mlflow_http_request_duration_seconds{s}" for s in HISTOGRAM_SUFFIXES)}
# Every scrape target gets these from Prometheus; the prometheus job serves its process metrics;
# ALERTS holds the rules' pending and firing alerts.
PROMETHEUS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "process_start_time_seconds", "ALERTS"}
SRC = Path(__file__).resolve().parents[2] / "src"
# What the Pushgateway adds to every pushed group.
PUSHGATEWAY = {"push_time_seconds", "push_failure_time_seconds"}
# The prediction service's /metrics (scrape job `serving`; names fixed in docs/architecture.md).
SERVING = {"mlops_serving_requests_total", "mlops_serving_rows_total", "mlops_serving_model_version",
           "mlops_serving_registry_check_age_seconds", "mlops_serving_registry_champion_version", "mlops_serving_model_load_failures_total",
           "mlops_serving_prediction_log_dropped_total",
           *(f"mlops_serving_{h}{s}" for h in ("request_duration_seconds", "score")
             for s in HISTOGRAM_SUFFIXES)}
# The exporters' own families that a panel or rule reads (prometheus-redis-exporter 1.45's key
# lengths of -check-single-keys; prometheus-process-exporter 0.7's name groups). Checked live
# against the real exporters by tests/stack/test_stack_6_quiet.py.
EXPORTERS = {"redis_up", "redis_key_size", "pg_up", "namedprocess_namegroup_num_procs",
             "namedprocess_namegroup_cpu_seconds_total", "namedprocess_namegroup_memory_bytes",
             "namedprocess_namegroup_states"}
QUERIES = Path(__file__).resolve().parents[2] / "observability" / "postgres-exporter" / "queries.yml"


def query_families() -> set[str]:
    """`<query>_<column>` of every GAUGE/COUNTER column of the postgres-exporter's custom queries."""
    queries = yaml.safe_load(QUERIES.read_text())
    return {f"{name}_{column}" for name, query in queries.items() for metric in query["metrics"]
            for column, spec in metric.items() if spec["usage"] in ("GAUGE", "COUNTER")}


def _package_file(package: str, name: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0]) / name


def flower_families() -> set[str]:
    """Metric families declared in the installed Flower's events module."""
    source = _package_file("flower", "events.py").read_text()
    out = set()
    for kind, name in re.findall(r"(Counter|Histogram|Gauge)\(\s*'(flower_\w+)'", source):
        out |= {name + s for s in HISTOGRAM_SUFFIXES} if kind == "Histogram" else {name}
    return out


def mapping_families(mapping: StatsdMapping) -> set[str]:
    """Families the exporter produces from the StatsD names a real stack sent (not every rule:
    e.g. task.queued_duration has a rule but Airflow 3.3's Task SDK path never sends it)."""
    out = set()

    def add(name: str, histogram: bool) -> None:
        out.update({name + s for s in HISTOGRAM_SUFFIXES} if histogram else {name})

    for name in seen_names():
        kind = metric_type(name)
        hit = mapping.match(name, kind)
        if hit is not None and not hit.dropped:
            add(hit.name, kind == "observer" and hit.rule.observer_type == "histogram")
    return out


def pushed_families() -> set[str]:
    """Metric names the ML code pushes (`Sample("name", ...)` in src/), plus the last-success time."""
    from mlops.metrics import LAST_SUCCESS

    out = {LAST_SUCCESS}
    for path in SRC.rglob("*.py"):
        out |= set(re.findall(r'Sample\(\s*"(mlops_\w+)"', path.read_text()))
    return out


def test_every_pushed_metric_has_help_and_a_job() -> None:
    from mlops import metrics

    pushed = pushed_families()
    assert len(pushed) > 20 and "mlops_drift_detected" in pushed
    assert pushed == set(metrics.HELP), pushed ^ set(metrics.HELP)
    assert all(job.startswith("mlops_") or job == "serving_monitor" for job in metrics.JOBS.values())


def test_ml_metrics_match_the_architecture_contract(repo: Path) -> None:
    """docs/architecture.md ("ML metrics") names every pushed metric and every grouping job."""
    from mlops import metrics

    doc = (repo / "docs" / "architecture.md").read_text()
    section = doc.split("## ML metrics", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:mlops|serving)_[a-z_]+)[`{]", section))
    jobs = set(metrics.JOBS.values())
    assert jobs <= named, jobs - named
    assert named - jobs == pushed_families(), (named - jobs) ^ pushed_families()


def test_flower_families_match_the_shared_notes() -> None:
    assert {"flower_events_total", "flower_worker_online", "flower_task_runtime_seconds_bucket",
            "flower_worker_number_of_currently_executing_tasks"} <= flower_families()
    mlflow_src = _package_file("mlflow", "server/prometheus_exporter.py").read_text()
    assert 'defaults_prefix="mlflow"' in mlflow_src


def test_every_queried_metric_is_produced(mapping: StatsdMapping, alert_rules: list[dict]) -> None:
    produced = (mapping_families(mapping) | flower_families() | MLFLOW | PROMETHEUS | pushed_families()
                | PUSHGATEWAY | SERVING | EXPORTERS | query_families())
    queries = dashboard_queries() + [(f"alert {r['alert']}", r["expr"]) for r in alert_rules]
    missing = [f"{where}: {name}" for where, expr in queries for name in sorted(metric_names(expr))
               if name not in produced]
    assert not missing, "metrics nothing produces:\n" + "\n".join(missing)


def test_the_coverage_check_catches_a_typo(mapping: StatsdMapping) -> None:
    produced = mapping_families(mapping) | flower_families()
    assert "airflow_task_instances" in produced and "airflow_dagrun_duration_seconds_bucket" in produced
    assert metric_names('sum(rate(airflow_ti_finsh_total{state="failed"}[5m]))') - produced == {
        "airflow_ti_finsh_total"}
