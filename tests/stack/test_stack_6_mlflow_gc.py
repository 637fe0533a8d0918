"""`mlflow gc` on the running stack: what maintenance_dag.prune_mlflow_runs soft-deleted leaves the
disk once the mlflow-gc program ran; the run of a registered model version keeps its files.

Runs of the pipeline's experiment that started 40 days ago get an artifact (proxied through the
tracking server into $STACK_HOME/mlflow/artifacts, as the pipeline's are) and a logged model with a
file (MLflow 3 keeps a model's files apart from its run's); one of them is registered as a version
of a probe model. maintenance_dag (retention 30 days, the other retentions left wide) soft-deletes
the others and their models; then the program gets SIGUSR1 (its "pass now", what an operator
sends) from supervisord. The test stack's MLFLOW_GC_RETENTION_DAYS is 0, so the pass collects what
was just deleted (the retention itself is checked in tests/model/test_mlflow_gc.py).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from stack.health import supervisor

GC_PROGRAM = "mlflow-gc"
PROBE_MODEL = "upkeep_gc_probe"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _aged_run_with_files(client, experiment: str, tmp_path: Path) -> tuple[str, str]:
    """A run that started 40 days ago and ended, with an artifact and a logged model with a file:
    (run id, model id)."""
    started = int((time.time() - 40 * 86400) * 1000)
    run = client.create_run(experiment, start_time=started, tags={"upkeep_test": "gc"})
    run_id = run.info.run_id
    client.log_text(run_id, f"gc probe {run_id}\n", "probe/notes.txt")
    model = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    weights = tmp_path / run_id / "weights.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\0" * 4096)
    client.log_model_artifact(model.model_id, str(weights))
    client.set_terminated(run_id, end_time=started + 1000)
    return run_id, model.model_id


def test_mlflow_gc_frees_the_files_of_pruned_runs_and_keeps_registered_ones(
        dags_ready, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

    stack = dags_ready
    env = stack.cfg.env
    rpc = supervisor(stack.cfg).supervisor
    assert rpc.getProcessInfo(GC_PROGRAM)["statename"] == "RUNNING"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_PIPELINE_USER"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_PIPELINE_PASSWORD"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.cfg.mlflow_url)  # the client resolves `models:/` there
    client = MlflowClient(tracking_uri=stack.cfg.mlflow_url, registry_uri=stack.cfg.mlflow_url)
    experiment = client.get_experiment_by_name(env.get("MLOPS_EXPERIMENT") or env["MLOPS_MODEL_NAME"]).experiment_id
    (pruned_run, pruned_model), (other_run, other_model), (kept_run, kept_model) = (
        _aged_run_with_files(client, experiment, tmp_path) for _ in range(3))
    model_name = f"{PROBE_MODEL}_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"models:/{kept_model}", run_id=kept_run, model_id=kept_model)

    artifacts = stack.cfg.home / "mlflow" / "artifacts" / experiment
    places = {run: (artifacts / run, artifacts / "models" / model) for run, model in
              ((pruned_run, pruned_model), (other_run, other_model), (kept_run, kept_model))}
    for run, (run_dir, model_dir) in places.items():
        assert _files(run_dir) and _files(model_dir), f"no files of run {run} under {artifacts}"

    # Only the MLflow prune does anything: the other retentions are wide.
    conf = {"mlflow_run_retention_days": 30, "log_retention_days": 3650, "report_retention_days": 3650,
            "clean_before": "2000-01-01T00:00:00+00:00"}
    run = stack.trigger("maintenance_dag", conf=conf, role="op")
    final = stack.wait_run("maintenance_dag", run, timeout=300)
    states = {t["task_id"]: t["state"] for t in stack.task_instances("maintenance_dag", run)}
    assert final["state"] == "success", states
    for run_id in (pruned_run, other_run):
        assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    # Soft delete: the files are still there until the gc.
    assert _files(places[pruned_run][0]) and _files(places[pruned_run][1])

    rpc.signalProcess(GC_PROGRAM, "USR1")

    @retry(retry=retry_if_result(bool), stop=stop_after_delay(120), wait=wait_fixed(1))
    def left() -> list[Path]:
        return [p for r in (pruned_run, other_run) for place in places[r] for p in _files(place)]

    try:
        remaining = left()
    except RetryError as exc:
        remaining = exc.last_attempt.result()
    assert remaining == [], f"files of pruned runs still on disk after the gc: {remaining}"
    # Gone for good, rows too: asked as MLflow's admin (a missing run is a 403 to other logins).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_ADMIN_USER"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_ADMIN_PASSWORD"])
    for run_id in (pruned_run, other_run):
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found|No Run"):
            client.get_run(run_id)
    for model_id in (pruned_model, other_model):
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
            client.get_logged_model(model_id)
    # The registered version's run and model keep their files and rows.
    assert _files(places[kept_run][0]) and _files(places[kept_run][1])
    assert client.get_run(kept_run).info.lifecycle_stage == "active"
    assert client.get_logged_model(kept_model).model_id == kept_model
    assert rpc.getProcessInfo(GC_PROGRAM)["statename"] == "RUNNING"
    log = Path(rpc.getProcessInfo(GC_PROGRAM)["stdout_logfile"]).read_text(errors="replace")
    assert f"Run with ID {pruned_run} has been permanently deleted" in log
    client.delete_registered_model(model_name)

