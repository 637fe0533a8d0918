"""The test stack's switches (the statsd-exporter test double, the compressed alert clock) are set
only by a test stack's env file: a product stack (`make up`, from `.env.example`) never runs the
double and keeps the production timings of Prometheus and Alertmanager."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import components, config, envfile, render
from testkit import alert_clock

REPO = Path(__file__).resolve().parents[2]
DOUBLE = str(REPO / "tests" / "lib" / "testkit" / "statsd_double.py")


def _cfg(tmp_path: Path, **overrides: str) -> config.StackConfig:
    env_file = tmp_path / "stack.env"
    envfile.ensure(env_file, config.EXAMPLE_ENV, overrides={"STACK_HOME": str(tmp_path / "home"), **overrides})
    return config.load(env_file)


def test_the_example_env_file_has_no_test_switch() -> None:
    names = envfile.parse(config.EXAMPLE_ENV)
    assert not [n for n in names if n.startswith("MLOPS_TEST_")]


def test_a_product_stack_never_runs_the_double_and_keeps_production_timings(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert components.statsd_double(cfg) is None
    assert not any("statsd_double" in " ".join(c.command) for c in components.components(cfg))
    doc, origin = render.render_prometheus(cfg)
    assert doc["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"} and "TEST" not in origin
    assert doc["rule_files"] == [str(REPO / "observability" / "prometheus" / "rules" / "*.yml")]
    route = render.render_alertmanager(cfg)["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "12h")


def test_a_test_stack_runs_the_double_on_the_statsd_ports_with_a_compressed_alert_clock(tmp_path: Path) -> None:
    if config.optional_binary("statsd_exporter", "statsd-exporter"):
        pytest.fail("a real statsd_exporter is on PATH: the stack would use it instead of the double")
    clock_file = alert_clock.write(tmp_path / "alert-clock")
    cfg = _cfg(tmp_path, MLOPS_TEST_STATSD_DOUBLE=DOUBLE, MLOPS_TEST_FAST_ALERTS=str(clock_file))
    exporter = components.by_name(cfg)["statsd-exporter"]
    assert exporter.present and exporter.command[1] == DOUBLE
    assert f"--statsd.listen-udp=127.0.0.1:{cfg.ports['STATSD_PORT']}" in exporter.command
    assert f"--double.record-file={components.statsd_double_record(cfg)}" in exporter.command
    doc, origin = render.render_prometheus(cfg)
    clock = alert_clock.TEST_ALERT_CLOCK
    assert doc["global"]["evaluation_interval"] == clock.evaluation_interval and "TEST stack" in origin
    assert doc["rule_files"] == [str(cfg.home / "prometheus" / "rules" / "*.yml")]
    assert {t for job in doc["scrape_configs"] for s in job["static_configs"] for t in s["targets"]} >= {
        f"127.0.0.1:{cfg.ports['STATSD_EXPORTER_PORT']}", f"127.0.0.1:{cfg.ports['PUSHGATEWAY_PORT']}"}
    assert doc["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": [f"127.0.0.1:{cfg.ports['ALERTMANAGER_PORT']}"]}]
    routes = render.render_alertmanager(cfg)["route"]
    assert routes["group_wait"] == clock.group_wait
    assert {r["repeat_interval"] for r in routes["routes"]} == {clock.repeat_interval}


def test_a_fast_alerts_switch_that_names_no_clock_file_is_refused(tmp_path: Path) -> None:
    from stack.run import StackError

    cfg = _cfg(tmp_path, MLOPS_TEST_FAST_ALERTS="1")
    with pytest.raises(StackError, match="MLOPS_TEST_FAST_ALERTS=1 in .*stack.env: not an alert clock file"):
        render.render_prometheus(cfg)
