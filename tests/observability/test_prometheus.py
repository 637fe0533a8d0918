"""Prometheus config, alert rules and their promtool unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
REQUIRED_ALERTS = {
    "AirflowSchedulerHeartbeatStalled", "AirflowTasksQueuedTooLong", "AirflowQueueHasNoWorker",
    "AirflowDagRunFailed", "MlDriftDetected", "MlChampionMetricDropped",
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_promtool_check_config(promtool: str) -> None:
    out = _run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 2 rule files found" in out.stdout


def test_scrape_targets_and_rule_files() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"statsd-exporter:9102", "flower:5555", "mlflow-metrics:5001", "localhost:9090"}
    assert config["rule_files"] == ["rules/*.yml"]
    text = (PROM / "prometheus.yml").read_text()
    for target in targets:  # the native stack rewrites these strings: each must be unique
        assert text.count(target) == 1, target


def test_promtool_check_rules(promtool: str) -> None:
    files = sorted(str(p) for p in (PROM / "rules").glob("*.yml"))
    out = _run([promtool, "check", "rules", *files])
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules(promtool: str) -> None:
    out = _run([promtool, "test", "rules", str(PROM / "tests" / "alerts_test.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_required_alerts_exist_with_severity(alert_rules: list[dict]) -> None:
    names = {r["alert"] for r in alert_rules}
    assert REQUIRED_ALERTS <= names, REQUIRED_ALERTS - names
    for rule in alert_rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing(alert_rules: list[dict]) -> None:
    doc = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules}
    assert names - fires == set(), f"alerts never tested firing: {names - fires}"
    assert names - quiet == set(), f"alerts never tested silent: {names - quiet}"


def test_a_broken_alert_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The promtool tests catch a wrong threshold (here: the heartbeat alert never fires)."""
    (tmp_path / "rules").mkdir()
    for path in (PROM / "rules").glob("*.yml"):
        text = path.read_text().replace("[2m])) < 1", "[2m])) < -1")
        (tmp_path / "rules" / path.name).write_text(text)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "alerts_test.yml").write_text((PROM / "tests" / "alerts_test.yml").read_text())
    out = _run([promtool, "test", "rules", str(tmp_path / "tests" / "alerts_test.yml")])
    assert out.returncode != 0
    assert "AirflowSchedulerHeartbeatStalled" in out.stdout + out.stderr
