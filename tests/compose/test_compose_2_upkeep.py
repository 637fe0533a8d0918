"""Issue 23 on the compose stack: the exporters scraped with data, no false alarm after the
pipeline run, and a warm shutdown of the heavy worker (`docker compose stop`) while a training of
35 s runs.

Compose runs the production alert clock (scrape 15 s, `for:` up to 5 minutes): a condition that
holds on the idle stack shows as a pending alert at once, so the watch looks for pending and
firing alerts, at Prometheus and at Alertmanager, over two minutes.

The warm-shutdown training is tests/stack/dags/upkeep_probe_dag.py, copied into the containers
that parse or run it (the image holds no test file); the dag-processor restarts to parse it at
once. Runs right after the pipeline test (file order): before the isolation and security
probes, whose deliberate task failures would rightly raise AirflowDagRunFailed."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import requests

from stack import grants

from testkit.compose_stack import ComposeStack

REPO = Path(__file__).resolve().parents[2]
PROBE_FILE = REPO / "tests" / "stack" / "dags" / "upkeep_probe_dag.py"
PROBE = "stack_upkeep_probe"
JUSTIFIED = {"MlDriftDetected", "MlChampionAucBelowFloor"}
WATCH_S = 120
TRAINING_S = 35


def _unjustified(stack: ComposeStack) -> list[tuple[str, str]]:
    alerts = stack.prometheus_get("/api/v1/alerts")["data"]["alerts"]
    out = [(a["labels"]["alertname"], a["state"]) for a in alerts if a["labels"]["alertname"] not in JUSTIFIED]
    routed = requests.get(f"{stack.url('ALERTMANAGER_PORT')}/api/v2/alerts", timeout=30,
                          auth=grants.web_login(stack.env, "alertmanager", "admin")).json()
    out += [(a["labels"]["alertname"], "at alertmanager") for a in routed
            if a["labels"]["alertname"] not in JUSTIFIED]
    return out


def test_exporters_scraped_with_data(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    assert pipeline_run["run"]["state"] == "success"
    runs = stack.api("GET", "/dags/ml_pipeline_dag/dagRuns", params={"state": "success", "limit": 1}).json()
    query = 'airflow_db_dag_runs_count{dag_id="ml_pipeline_dag", state="success"}'
    stack.wait_for(f"{query} == {runs['total_entries']}",
                   lambda: stack.prometheus_value(query) == runs["total_entries"], timeout=90)
    assert stack.prometheus_value('airflow_db_task_instances_count{queue="heavy", state="success"}') >= 1
    age = stack.prometheus_value('time() - airflow_db_job_latest_heartbeat_seconds{job_type="SchedulerJob"}')
    assert age is not None and age < 60, age
    for queue in ("light", "heavy"):
        assert stack.prometheus_value(f'redis_key_size{{key="{queue}"}}') is not None, queue
    for group in ("scheduler", "api-server", "worker-light", "worker-heavy", "postgres", "redis"):
        assert (stack.prometheus_value(f'namedprocess_namegroup_num_procs{{groupname="{group}"}}') or 0) >= 1, group


def test_no_false_alarm_after_the_pipeline(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    assert pipeline_run["run"]["state"] == "success"
    seen: list[tuple[str, str]] = []
    end = time.monotonic() + WATCH_S
    while time.monotonic() < end:
        seen += _unjustified(stack)
        time.sleep(5)
    assert not seen, sorted(set(seen))
    groups = stack.prometheus_get("/api/v1/rules")["data"]["groups"]
    assert {r["name"]: r["health"] for g in groups for r in g["rules"] if r["health"] != "ok"} == {}


def _copy_probe(stack: ComposeStack) -> None:
    """The probe DAG into every container that parses or runs it; the dag-processor parses it now."""
    services = ["airflow-dag-processor", "airflow-worker-heavy", "airflow-worker-light"]
    for service in services:
        for container in stack.containers(service, all_states=False):
            out = stack.docker("cp", str(PROBE_FILE), f"{container['Id']}:/opt/mlops/dags/{PROBE_FILE.name}")
            assert out.returncode == 0, out.stderr
    stack.compose("restart", "airflow-dag-processor", timeout=180)
    stack.wait_for(f"{PROBE} parsed", lambda: stack.api("GET", f"/dags/{PROBE}").status_code == 200, timeout=240)


def _ti(stack: ComposeStack, run_id: str) -> dict:
    return next(t for t in stack.task_instances(PROBE, run_id) if t["task_id"] == "training")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_docker_compose_stop_lets_the_heavy_workers_training_finish(compose_stack: ComposeStack,
                                                                   pipeline_run: dict) -> None:
    stack = compose_stack
    _copy_probe(stack)
    first = stack.trigger(PROBE, conf={"mode": "training", "seconds": TRAINING_S})
    stack.wait_for("training running", lambda: _ti(stack, first)["state"] == "running", timeout=240, every=1)
    second = stack.trigger(PROBE, conf={"mode": "training", "seconds": 0})
    stack.wait_for("second training queued", lambda: _ti(stack, second)["state"] == "queued", timeout=120, every=1)
    stopped: dict[str, float] = {}

    def stop() -> None:
        started = time.monotonic()
        stack.compose("stop", "airflow-worker-heavy", timeout=TRAINING_S + 300)
        stopped["after_s"] = time.monotonic() - started
        stopped["at"] = time.time()

    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(timeout=TRAINING_S + 330)
    assert stopped, "docker compose stop did not return"
    done = stack.wait_for("first training ended", lambda: (lambda t: t["state"] in ("success", "failed") and t)(
        _ti(stack, first)), timeout=60)
    assert done["state"] == "success" and done["try_number"] == 1, done
    assert _epoch(done["end_date"]) <= stopped["at"] + 1, (done["end_date"], stopped)
    assert stopped["after_s"] > 5, stopped
    time.sleep(3)
    assert _ti(stack, second)["state"] == "queued"
    waiting = stack.exec("redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -n 0 llen heavy')
    assert waiting.stdout.strip() == "1", waiting.stdout + waiting.stderr
    stack.compose("start", "airflow-worker-heavy", timeout=180)
    assert stack.wait_run(PROBE, second, timeout=300)["state"] == "success"
