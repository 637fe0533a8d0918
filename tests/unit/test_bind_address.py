"""BIND_ADDRESS: loopback by default; when set, the listeners other hosts use (broker, api-server,
MLflow, StatsD, log server, Flower, Prometheus) bind it and every client URL points at it, while
PostgreSQL and the metrics exporter stay on loopback. Wildcards and names are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import config as stack_config
from stack import envfile, render, workerhost
from stack.components import components, program_env

SERVED = {"REDIS_PORT", "AIRFLOW_API_PORT", "MLFLOW_PORT", "AIRFLOW_LOG_SERVER_PORT", "FLOWER_PORT",
          "PROMETHEUS_PORT", "GRAFANA_PORT", "STATSD_PORT", "PUSHGATEWAY_PORT", "SERVING_PORT"}


def _cfg(tmp_path: Path, address: str) -> stack_config.StackConfig:
    env_file = tmp_path / "stack.env"
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        "STACK_HOME": str(tmp_path / "home"), "MLOPS_DATA_DIR": str(tmp_path / "data"), "BIND_ADDRESS": address})
    return stack_config.load(env_file)


def test_loopback_is_the_default(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "")
    assert cfg.bind_address == cfg.control_address == "127.0.0.1"
    assert {lst.host(cfg) for c in components(cfg) for lst in c.listeners} == {"127.0.0.1"}
    assert "bind 127.0.0.1\n" in render.render_template("redis.conf.j2", cfg=cfg)


def test_served_listeners_and_urls_follow_the_bind_address(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "10.0.0.5")
    hosts = {lst.var: lst.host(cfg) for c in components(cfg) for lst in c.listeners}
    assert {var for var, host in hosts.items() if host == "10.0.0.5"} == SERVED & set(hosts)
    assert hosts["POSTGRES_PORT"] == hosts["MLFLOW_METRICS_PORT"] == hosts["ALERTMANAGER_PORT"] == "127.0.0.1"
    by_name = {c.name: c for c in components(cfg)}
    assert by_name["mlflow"].command[by_name["mlflow"].command.index("--host") + 1] == "10.0.0.5"
    assert by_name["postgres"].command[by_name["postgres"].command.index("-h") + 1] == "127.0.0.1"
    assert "bind 10.0.0.5\n" in render.render_template("redis.conf.j2", cfg=cfg)
    env = program_env(cfg, by_name["worker-heavy1"])
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://10.0.0.5:{cfg.ports['AIRFLOW_API_PORT']}/execution/"
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith(f"@10.0.0.5:{cfg.ports['REDIS_PORT']}/0")
    assert env["MLFLOW_TRACKING_URI"] == cfg.mlflow_url == f"http://10.0.0.5:{cfg.ports['MLFLOW_PORT']}"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == env["MLOPS_STACK_BIND_ADDRESS"] == "10.0.0.5"
    assert env["MLOPS_PUSHGATEWAY_URL"] == f"http://10.0.0.5:{cfg.ports['PUSHGATEWAY_PORT']}"


@pytest.mark.parametrize("bad", ["0.0.0.0", "my-host", "10.0.0.300", "::1"])
def test_bind_address_must_be_an_address_of_this_host(tmp_path: Path, bad: str) -> None:
    with pytest.raises(envfile.EnvFileError, match="BIND_ADDRESS"):
        _cfg(tmp_path, bad)


def test_worker_host_env_holds_only_what_a_worker_host_needs(tmp_path: Path) -> None:
    main = _cfg(tmp_path, "10.0.0.5")
    text = workerhost.export_env(main, "10.0.0.6", tmp_path / "host2")
    (tmp_path / "host2.env").write_text(text)
    cfg = workerhost.load_worker_host(tmp_path / "host2.env")
    for secret in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "FLOWER_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                   "MLFLOW_PIPELINE_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"):
        assert main.env[secret] not in text, secret
    assert (cfg.bind_address, cfg.control_address, cfg.data_dir) == ("10.0.0.6", "10.0.0.5", main.data_dir)
    table = {c.name: c for c in workerhost.components(cfg)}
    assert set(table) == {"log-server", "worker-heavy2"}
    log_server = table["log-server"]
    assert log_server.command[log_server.command.index("--host") + 1] == "10.0.0.6"
    env = program_env(cfg, table["worker-heavy2"])
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and "@10.0.0.5:" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["MLOPS_STACK_BIND_ADDRESS"] == "10.0.0.6" and env["MLOPS_DATA_DIR"] == str(main.data_dir)
    assert "AIRFLOW__API__SECRET_KEY" not in env and "AIRFLOW__API__SECRET_KEY" in program_env(cfg, log_server)
    with pytest.raises(Exception, match="loopback"):
        workerhost.export_env(_cfg(tmp_path / "lo", ""), "10.0.0.6", tmp_path / "h")
