"""Prometheus config, alert rules and their promtool unit tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
UNIT_TESTS = sorted((PROM / "tests").glob("*_test.yml"))
# The conditions of issue 13: scheduler heartbeat, a failed DAG run, a task failing repeatedly,
# tasks queued too long per queue, no worker on a queue, drift, the champion's AUC under a floor,
# a rejected batch, no successful ml_pipeline_dag run for longer than its schedule allows.
REQUIRED_ALERTS = {
    "AirflowSchedulerHeartbeatStalled", "AirflowDagRunFailed", "AirflowTaskFailingRepeatedly",
    "AirflowTasksQueuedTooLong", "AirflowQueueHasNoWorker", "MlDriftDetected", "MlChampionAucBelowFloor",
    "MlBatchRejected", "MlPipelineRunOverdue", "ScrapeTargetDown",
    # issue 21: the prediction service and the monitoring of what it served
    "ServingDown", "ServingErrorRate", "ServingStaleModel", "ServingModelLoadRefused",
    "MlServedAucBelowFloor",
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_promtool_check_config(promtool: str) -> None:
    out = _run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 3 rule files found" in out.stdout


def test_scrape_targets_alerting_and_rule_files() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"statsd-exporter:9102", "flower:5555", "mlflow-metrics:5001", "localhost:9090",
                       "pushgateway:9091", "alertmanager:9093", "postgres-exporter:9187", "redis-exporter:9121",
                       "process-exporter:9256", "model-server:8000"}
    assert sum(len(sc["targets"]) for job in jobs.values() for sc in job["static_configs"]) == len(targets)
    # Pushed series keep the job of their grouping key (mlops_drift, ...), nothing else does.
    assert [name for name, job in jobs.items() if job.get("honor_labels")] == ["pushgateway"]
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert config["rule_files"] == ["rules/*.yml"]


def test_promtool_check_rules(promtool: str) -> None:
    files = sorted(str(p) for p in (PROM / "rules").glob("*.yml"))
    out = _run([promtool, "check", "rules", *files])
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules(promtool: str) -> None:
    assert [p.name for p in UNIT_TESTS] == ["alerts_days_test.yml", "alerts_test.yml", "serving_test.yml"]
    out = _run([promtool, "test", "rules", *map(str, UNIT_TESTS)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_required_alerts_exist_with_severity(alert_rules: list[dict]) -> None:
    names = {r["alert"] for r in alert_rules}
    assert REQUIRED_ALERTS <= names, REQUIRED_ALERTS - names
    for rule in alert_rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing(alert_rules: list[dict]) -> None:
    fires, quiet = set(), set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules}
    assert names - fires == set(), f"alerts never tested firing: {names - fires}"
    assert names - quiet == set(), f"alerts never tested silent: {names - quiet}"


def test_a_broken_alert_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The promtool tests catch a wrong threshold (here: the heartbeat alert never fires)."""
    (tmp_path / "rules").mkdir()
    for path in (PROM / "rules").glob("*.yml"):
        text = path.read_text().replace("> 120  # 2m", "> 1200  # 20m")
        (tmp_path / "rules" / path.name).write_text(text)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "alerts_test.yml").write_text((PROM / "tests" / "alerts_test.yml").read_text())
    out = _run([promtool, "test", "rules", str(tmp_path / "tests" / "alerts_test.yml")])
    assert out.returncode != 0
    assert "AirflowSchedulerHeartbeatStalled" in out.stdout + out.stderr


def test_no_airflow_rule_outside_the_statsd_group_needs_statsd(alert_rules: list[dict]) -> None:
    """The native stack may run without StatsD: only the group `airflow-statsd` reads its series
    (airflow_* other than the postgres-exporter's airflow_db_*), and no rule uses absent() on them
    (that fired AirflowSchedulerHeartbeatStalled on a healthy native stack)."""
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                statsd = re.findall(r"\bairflow_(?!db_)\w+", rule["expr"])
                if group["name"] != "airflow-statsd":
                    assert not statsd, (rule["alert"], statsd)
                absent = re.findall(r"absent\((\w+)", rule["expr"])
                assert all(name.startswith(("airflow_db_", "mlops_")) for name in absent), (rule["alert"], absent)
                if absent:
                    assert "up{job=" in rule["expr"], f"{rule['alert']}: absent() only under a job that answers"


def test_the_test_stacks_alert_clock_keeps_every_rule_valid(promtool: str, tmp_path: Path) -> None:
    """The test stack runs these rules with every duration shortened (testkit/alert_clock.py):
    the result passes promtool, each duration is capped, each time()-comparison's seconds constant
    carries its duration in a comment (so it is shortened too) and agrees with it."""
    from testkit.alert_clock import TEST_ALERT_CLOCK, compress_rules, duration_seconds, marked_constants

    clock = TEST_ALERT_CLOCK
    for path in sorted((PROM / "rules").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for rule in (r for g in doc["groups"] for r in g["rules"]):
            if "time()" in rule["expr"]:
                marked = marked_constants(rule["expr"])
                assert marked, f"{rule['alert']}: a time() comparison without a `<seconds>  # <duration>` constant"
                assert all(n == duration_seconds(d) for n, d in marked), (rule["alert"], marked)
        fast = compress_rules(doc, clock)
        for rule in (r for g in fast["groups"] for r in g["rules"]):
            assert duration_seconds(rule.get("for", "0s")) <= clock.max_for_s, rule
            for text in re.findall(r"\[(\w+)\]|offset (\w+)", rule["expr"]):
                assert duration_seconds("".join(text)) <= clock.max_window_s, (rule["alert"], text)
            assert all(n <= clock.max_window_s for n, _ in marked_constants(rule["expr"])), rule["expr"]
        (tmp_path / path.name).write_text(yaml.safe_dump(fast))
    out = _run([promtool, "check", "rules", *map(str, sorted(tmp_path.glob("*.yml")))])
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_marked_constant_that_disagrees_with_its_duration_is_refused() -> None:
    from testkit.alert_clock import compress_expr

    assert compress_expr("time() - x > 691200  # 8d", 60) == "time() - x > 60  # 8d, capped at 60s"
    with pytest.raises(ValueError, match="marked as 8d"):
        compress_expr("time() - x > 600000  # 8d", 60)
