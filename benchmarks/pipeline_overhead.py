"""Benchmark of the pipeline's per-task overhead (issue 16); prints ONE JSON object.

It brings up a stack of its own (benchmarks/benchstack.py: a /tmp folder, its own ports), replays
a history (weeks up to HISTORY_UNTIL), runs `ml_pipeline_dag` on it once (unmeasured: the first
champion), then replays one new week and measures:

- `dag_wall_s`: trigger to success of `ml_pipeline_dag` for that one week (its run's end_date
  minus the moment of the trigger request);
- `inprocess_s`: the same seven steps through the `mlops` functions in this one warm process, on
  the same data (a second data folder replayed identically, which went through the same history
  round in this process first) and the same MLflow server (its own experiment and model name, so
  neither side reuses the other's fitted run);
- `overhead_s`: `dag_wall_s - inprocess_s`;
- `tasks`: per task of the measured run, `duration_s` (start to end in Airflow), `queued_s` (queued
  to start), `inprocess_s` (the same step in this process) and `work_s` where the task reports its
  work (train's `fit_seconds`);
- `queue_isolation`: the wall time of `data_validation_dag` (one history week) while the heavy
  queue runs a training (the `model_retraining_dag` run the measured run's drift check triggered,
  else one triggered here), divided by its best of two on the idle stack (after the history);
- `idle_pss_mb`: the idle stack's summed PSS after the history run (workers warm, no task
  running; target 2.5 GiB).

The in-process round runs once that retraining has ended (no competition from the stack). On
stderr: progress, the per-task breakdown and the idle stack's PSS (summed over every process of the
stack after the history run, workers warm, no task running: the issue's 2.5 GiB ceiling), by
process.

`--cold` brings the stack up without the workers' preload (Celery's `imports` left out of
`[celery] extra_celery_config` in the benchmark's env file): the before figure.

Run: MLOPS_BENCH_PORT_OFFSET=<n> .venv/bin/python benchmarks/pipeline_overhead.py [--cold]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from benchstack import REPO, bench_stack, process_name, pss_mb, say
from stack import envfile
from stack.api import Airflow
from stack.config import AIRFLOW_ENV_FILE, StackConfig
from stack.ctl import stack_processes

DAG_ID = "ml_pipeline_dag"
VALIDATION_DAG = "data_validation_dag"
RETRAINING_DAG = "model_retraining_dag"
HISTORY_UNTIL = "2013-W08"
NEW_WEEK = "2013-W09"
TASKS = ("check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "deploy")
POLL_S = 0.2
MLOPS = str(REPO / ".venv" / "bin" / "mlops")


def _ts(value: str) -> float:
    """API timestamp -> epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def replay(data_dir: Path, until: str, from_week: str | None = None) -> None:
    """Replay weeks into a data folder's landing/ with the mlops CLI."""
    args = [MLOPS, "data", "replay", "--until", until, *(["--from", from_week] if from_week else [])]
    proc = subprocess.run(args, env={**os.environ, "MLOPS_DATA_DIR": str(data_dir)}, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"replay into {data_dir} failed: {proc.stderr[-2000:]}")


def wait_run(api: Airflow, dag_id: str, run_id: str, timeout: float = 900) -> dict:
    """Poll one run until it ends; raise unless it succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        run = api.run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} {run_id} not finished after {timeout:.0f} s")
        time.sleep(POLL_S)
    if run["state"] != "success":
        states = {t["task_id"]: t["state"] for t in api.task_instances(dag_id, run_id)}
        raise RuntimeError(f"{dag_id} {run_id} failed: {states}")
    return run


def timed_run(api: Airflow, dag_id: str, conf: dict | None = None) -> tuple[float, str]:
    """Trigger `dag_id`, wait for success; (trigger-to-end seconds, run id)."""
    started = time.time()
    run_id = api.trigger(dag_id, conf)["dag_run_id"]
    run = wait_run(api, dag_id, run_id)
    return _ts(run["end_date"]) - started, run_id


def xcom(api: Airflow, dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's return value (None when it has none)."""
    with contextlib.suppress(Exception):
        value = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")["value"]
        return json.loads(value) if isinstance(value, str) else value
    return None


class InProcess:
    """The pipeline's steps through the mlops functions in this process, on its own data folder and
    MLflow experiment/model (admin login on the benchmark stack's MLflow)."""

    def __init__(self, cfg: StackConfig, data_dir: Path) -> None:
        os.environ.update({
            "MLOPS_DATA_DIR": str(data_dir),
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": cfg.env["MLFLOW_ADMIN_USER"],
            "MLFLOW_TRACKING_PASSWORD": cfg.env["MLFLOW_ADMIN_PASSWORD"],
            "MLOPS_EXPERIMENT": "bench_inprocess", "MLOPS_MODEL_NAME": "bench_inprocess_model",
            "MLOPS_STATSD_HOST": "127.0.0.1", "MLOPS_STATSD_PORT": str(cfg.ports["STATSD_PORT"]),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        })

    def round(self) -> dict[str, float]:
        """One pipeline run over the new batches; seconds per task id."""
        from mlops.batches import mark_processed, new_batches
        from mlops.drift import detect_drift
        from mlops.errors import BatchValidationError
        from mlops.preprocess import run_preprocess
        from mlops.promotion import deploy, evaluate_candidate
        from mlops.train import register_candidate, train_model
        from mlops.validate import accept_batch, validate_batch

        took: dict[str, float] = {}
        state: dict[str, Any] = {}

        def step(task_id: str, fn: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            out = fn()
            took[task_id] = round(time.perf_counter() - t0, 3)
            return out

        batches = step("check_new_data", lambda: sorted(new_batches()))

        def validate() -> list[str]:
            accepted = []
            for path in batches:
                with contextlib.suppress(BatchValidationError):
                    validate_batch(path)
                    accepted.append(accept_batch(path))
            return accepted

        step("validate_data", validate)
        step("preprocess", run_preprocess)

        def train() -> dict[str, Any]:
            trained = train_model(register=False)
            mark_processed(batches)
            return trained

        state["model"] = step("train", train)

        def evaluate() -> dict[str, Any]:
            version = state["model"].get("version") or register_candidate(state["model"])["version"]
            state["version"] = version
            return evaluate_candidate(version, holdout_week=state["model"].get("holdout_week"))

        state["evaluation"] = step("evaluate", evaluate)
        step("check_drift", detect_drift)
        step("deploy", lambda: deploy(state["version"], evaluation=state["evaluation"]))
        return took


def idle_pss(cfg: StackConfig, settle_s: float = 5.0) -> tuple[float, dict[str, float]]:
    """Summed PSS (MiB) of the idle stack and its split by process kind (the largest sample of 3)."""
    time.sleep(settle_s)
    best, split = 0.0, {}
    for _ in range(3):
        pids = stack_processes(cfg)
        by: dict[str, float] = defaultdict(float)
        for pid in pids:
            by[process_name(pid)] += pss_mb([pid])
        total = sum(by.values())
        if total > best:
            best, split = total, dict(by)
        time.sleep(1)
    return best, split


def active_retraining(api: Airflow) -> list[str]:
    """Run ids of model_retraining_dag that are queued or running."""
    runs = api.get(f"/dags/{RETRAINING_DAG}/dagRuns", limit=100)["dag_runs"]
    return [r["dag_run_id"] for r in runs if r["state"] in ("queued", "running")]


def wait_no_retraining(api: Airflow, timeout: float = 900) -> None:
    """Wait until no model_retraining_dag run (one a drift check triggered) is active."""
    deadline = time.monotonic() + timeout
    while active := active_retraining(api):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{RETRAINING_DAG} {active} still active after {timeout:.0f} s")
        time.sleep(1)


def validation_wall(api: Airflow, week: str, runs: int = 2) -> float:
    """Best trigger-to-success seconds of data_validation_dag on one week over `runs` runs."""
    return min(timed_run(api, VALIDATION_DAG, {"weeks": [week]})[0] for _ in range(runs))


def validation_while_training(api: Airflow, week: str) -> float:
    """data_validation_dag's wall time while a retrain_model task runs on the heavy queue (the
    retraining the measured run's drift check triggered, else one triggered here)."""
    active = active_retraining(api)
    retrain = active[0] if active else api.trigger(RETRAINING_DAG, {})["dag_run_id"]
    deadline = time.monotonic() + 300
    while not any(t["task_id"] == "retrain_model" and t["state"] == "running"
                  for t in api.task_instances(RETRAINING_DAG, retrain)):
        if time.monotonic() > deadline:
            raise RuntimeError("retrain_model never ran on the heavy queue")
        time.sleep(POLL_S)
    busy, _ = timed_run(api, VALIDATION_DAG, {"weeks": [week]})
    still = [t for t in api.task_instances(RETRAINING_DAG, retrain)
             if t["task_id"] == "retrain_model" and t["state"] in ("running", "queued", "scheduled")]
    say(f"validation while {retrain} trains ({'triggered by drift' if active else 'triggered here'}): "
        f"{busy:.2f} s; retrain_model tasks still running/queued at its end: {len(still)}")
    return busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cold", action="store_true", help="workers without the preload (the before figure)")
    args = parser.parse_args()
    overrides = {}
    if args.cold:
        celery = json.loads(envfile.parse(AIRFLOW_ENV_FILE)["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"])
        celery.pop("imports", None)
        overrides["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"] = json.dumps(celery)
    with bench_stack("overhead", overrides) as (env_file, cfg, up_s):
        say(f"stack up in {up_s:.0f} s (preload {'off' if args.cold else 'on'}); load {os.getloadavg()}")
        inproc_dir = env_file.parent / "inprocess-data"
        replay(cfg.data_dir, HISTORY_UNTIL)
        replay(inproc_dir, HISTORY_UNTIL)
        api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        for dag_id in (DAG_ID, VALIDATION_DAG, RETRAINING_DAG):
            api.wait_dag(dag_id)
        history_s, _ = timed_run(api, DAG_ID)
        say(f"history run (weeks ..{HISTORY_UNTIL}): {history_s:.1f} s")
        wait_no_retraining(api)
        inprocess = InProcess(cfg, inproc_dir)
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links
            say(f"in-process history round: {sum(inprocess.round().values()):.1f} s")
        timed_run(api, VALIDATION_DAG, {"weeks": [HISTORY_UNTIL]})  # warm-up
        idle_validation = validation_wall(api, HISTORY_UNTIL)
        say(f"data_validation_dag on the idle stack: {idle_validation:.2f} s")
        pss, split = idle_pss(cfg)
        say(f"idle stack PSS {pss:.0f} MiB ({pss / 1024:.2f} GiB) over {len(stack_processes(cfg))} processes "
            f"(workers warm, no task running):")
        for name, mb in sorted(split.items(), key=lambda kv: -kv[1])[:14]:
            say(f"  {mb:7.1f} MiB  {name}")
        replay(cfg.data_dir, NEW_WEEK, NEW_WEEK)
        replay(inproc_dir, NEW_WEEK, NEW_WEEK)
        load_before = os.getloadavg()
        dag_wall, run_id = timed_run(api, DAG_ID)
        tis = {t["task_id"]: t for t in api.task_instances(DAG_ID, run_id)}
        busy_validation = validation_while_training(api, HISTORY_UNTIL)
        wait_no_retraining(api)
        with contextlib.redirect_stdout(sys.stderr):
            steps = inprocess.round()
        inprocess_s = sum(steps.values())
        tasks: dict[str, dict[str, Any]] = {}
        for task_id in TASKS:
            ti = tis[task_id]
            entry: dict[str, Any] = {"state": ti["state"], "inprocess_s": steps.get(task_id)}
            if ti.get("start_date") and ti.get("end_date"):
                entry["duration_s"] = round(_ts(ti["end_date"]) - _ts(ti["start_date"]), 3)
            if ti.get("queued_when") and ti.get("start_date"):
                entry["queued_s"] = round(_ts(ti["start_date"]) - _ts(ti["queued_when"]), 3)
            reported = xcom(api, DAG_ID, run_id, task_id)
            if isinstance(reported, dict) and "fit_seconds" in reported:
                entry["work_s"] = reported["fit_seconds"]
            tasks[task_id] = entry
            say(f"{task_id:15s} {entry}")
        ratio = busy_validation / idle_validation
        say(f"load average: before the measured run {load_before}, at the end {os.getloadavg()}")
        result = {
            "dag_wall_s": round(dag_wall, 2),
            "inprocess_s": round(inprocess_s, 2),
            "overhead_s": round(dag_wall - inprocess_s, 2),
            "tasks": tasks,
            "queue_isolation": round(ratio, 2),
            "idle_pss_mb": round(pss),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
