"""`down` then `up` keeps DAG run history, the model registry and the landing data; `down` leaves
no process behind. Between the two, an `up` with a program that can never start stops as soon as
supervisord gives up on it. It restarts the shared test stack."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from stack import health
from stack.ctl import is_running, stack_processes


def _registry(stack) -> dict:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    viewer = stack.mlflow_login("viewer")
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/model-versions/search",
                        params={"filter": f"name='{name}'"}, auth=viewer, timeout=30)
    assert resp.status_code == 200, resp.text
    versions = {v["version"]: v.get("aliases", []) for v in resp.json().get("model_versions", [])}
    champion = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                            params={"name": name, "alias": "champion"}, auth=viewer, timeout=30)
    return {"versions": versions, "champion": champion.json().get("model_version", {}).get("version")}


def _history(stack) -> dict[str, str]:
    out = {}
    for dag_id in ("ml_pipeline_dag", "model_retraining_dag", "data_validation_dag"):
        resp = stack.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        out.update({f"{dag_id}/{r['dag_run_id']}": r["state"] for r in resp.json()["dag_runs"]})
    return out


@pytest.fixture(scope="module")
def stopped(stack, runs) -> dict:
    """What the stack holds (DAG runs, registry, landing files), then `down`."""
    before = {"history": _history(stack), "registry": _registry(stack),
              "landing": sorted(p.name for p in (stack.cfg.data_dir / "landing").glob("*.csv"))}
    assert before["history"] and before["registry"]["versions"] and before["registry"]["champion"] and before["landing"]
    before["down"] = stack.ctl("down", timeout=180)
    return before


def test_up_stops_at_once_when_a_program_is_fatal(stack, stopped, tmp_path: Path) -> None:
    """A typo in PROMETHEUS_RETENTION_TIME makes prometheus exit at once on every start: once
    supervisord marks it FATAL (after STACK_START_RETRIES tries; 1 here), `up` stops waiting (well
    before STACK_UP_TIMEOUT), exits 1 naming the program, its log and the log's last lines, and
    leaves the stack as it is for inspection; `down` then stops everything."""
    assert stopped["down"].returncode == 0, stopped["down"].stdout + stopped["down"].stderr
    text = stack.env_file.read_text()
    assert re.search(r"^PROMETHEUS_RETENTION_TIME=", text, re.M)
    bad = tmp_path / "fatal.env"
    bad.write_text(re.sub(r"^PROMETHEUS_RETENTION_TIME=.*$", "PROMETHEUS_RETENTION_TIME=30days", text, flags=re.M))
    timeout = 600
    started = time.monotonic()
    try:
        up = stack.ctl("up", env_file=bad, timeout=timeout + 120,
                       extra_env={"STACK_START_RETRIES": "1", "STACK_UP_TIMEOUT": str(timeout)})
        took = time.monotonic() - started
        print(f"up with a FATAL program failed after {took:.1f} s")
        assert up.returncode == 1, up.stdout + up.stderr
        assert took < timeout / 4, took
        log = stack.cfg.logs / "prometheus.log"
        lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
        assert 'not a valid duration string: "30days"' in "\n".join(lines)
        assert "prometheus:prometheus is FATAL" in up.stderr and f"{log};" in up.stderr, up.stderr
        assert lines[-1] in up.stderr, (lines[-1], up.stderr)
        assert "`make down`" in up.stderr, up.stderr
        # Left as it is: supervisord and the programs that did start still run.
        assert is_running(stack.cfg)
        states = {name: info["statename"] for name, info in (health.supervisor_states(stack.cfg) or {}).items()}
        assert states["prometheus"] == "FATAL" and states["postgres"] == "RUNNING", states
    finally:
        down = stack.ctl("down", env_file=bad, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack_processes(stack.cfg) == []


def test_restart_keeps_history_registry_and_landing(stack, stopped) -> None:
    assert stopped["down"].returncode == 0, stopped["down"].stdout + stopped["down"].stderr
    assert stack_processes(stack.cfg) == []
    for var in ("AIRFLOW_API_PORT", "POSTGRES_PORT", "MLFLOW_PORT", "FLOWER_PORT", "REDIS_PORT"):
        assert not health.port_in_use(stack.cfg.ports[var]), f"{var} still bound after down"
    status = stack.ctl("status")
    assert status.returncode == 0 and "not running" in status.stdout

    up = stack.ctl("up")
    assert up.returncode == 0, up.stdout + up.stderr
    stack._tokens.clear()
    after = _history(stack)
    assert {k: v for k, v in after.items() if k in stopped["history"]} == stopped["history"]
    assert _registry(stack) == stopped["registry"]
    assert sorted(p.name for p in (stack.cfg.data_dir / "landing").glob("*.csv")) == stopped["landing"]
