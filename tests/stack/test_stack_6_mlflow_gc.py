"""`mlflow gc` on the running stack: what maintenance_dag.prune_mlflow_runs soft-deleted leaves the
disk once the mlflow-gc program ran; the run of a registered model version keeps its files.

Runs of the pipeline's experiment that started 40 days ago get an artifact (proxied through the
tracking server into $STACK_HOME/mlflow/artifacts, as the pipeline's are) and a logged model with a
file (MLflow 3 keeps a model's files apart from its run's); one of them is registered as a version
of a probe model. maintenance_dag (retention 30 days, the other retentions left wide) soft-deletes
the others and their models; then the program gets SIGUSR1 (its "pass now", what an operator
sends) from supervisord. The test stack's MLFLOW_GC_RETENTION_DAYS is 0, so the pass collects what
was just deleted (the retention itself is checked in tests/model/test_mlflow_gc.py).

The same maintenance run first deletes an old registered version of the other data set's model
(synthetic_drift): on a compressed clock (a model-version retention of half a second), a version
registered from another 40-day-old run and followed by as many newer versions as the flights' model
holds, which is the number of newest versions kept. It holds no alias, so it goes; then its run is
pruned and the gc frees its files. Every flights version and every alias stay (their model holds no
more versions than are kept).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from stack.health import supervisor

GC_PROGRAM = "mlflow-gc"
PROBE_MODEL = "upkeep_gc_probe"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _versions(client, model: str) -> dict[str, list[str]]:
    """{version: its aliases} of a registered model (aliases from the model itself)."""
    versions = client.search_model_versions(f"name = '{model}'")
    aliases = client.get_registered_model(model).aliases if versions else {}
    return {str(v.version): sorted(a for a, n in aliases.items() if str(n) == str(v.version)) for v in versions}


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

    # The other data set's model: an old version (from a 40-day-old run), then as many newer ones
    # as the flights' model holds (the number kept), so that only the old one is beyond the newest.
    from mlops.dataset import resolve

    synthetic = resolve("synthetic_drift")
    flights_versions = _versions(client, env["MLOPS_MODEL_NAME"])
    keep = max(1, len(flights_versions))
    synthetic_experiment = client.get_experiment_by_name(synthetic.experiment_name).experiment_id
    version_run, version_model = _aged_run_with_files(client, synthetic_experiment, tmp_path)
    old_version = str(client.create_model_version(synthetic.model_name, f"models:/{version_model}",
                                                  run_id=version_run, model_id=version_model).version)
    newer = [str(client.create_model_version(synthetic.model_name, f"models:/{kept_model}", run_id=kept_run,
                                             model_id=kept_model).version) for _ in range(keep)]
    synthetic_aliased = {v: a for v, a in _versions(client, synthetic.model_name).items() if a}

    artifacts = stack.cfg.home / "mlflow" / "artifacts" / experiment
    places = {run: (artifacts / run, artifacts / "models" / model) for run, model in
              ((pruned_run, pruned_model), (other_run, other_model), (kept_run, kept_model))}
    synthetic_artifacts = stack.cfg.home / "mlflow" / "artifacts" / synthetic_experiment
    places[version_run] = (synthetic_artifacts / version_run, synthetic_artifacts / "models" / version_model)
    for run, (run_dir, model_dir) in places.items():
        assert _files(run_dir) and _files(model_dir), f"no files of run {run} under {artifacts}"

    # Only the MLflow prune does anything: the other retentions are wide.
    conf = {"mlflow_run_retention_days": 30, "log_retention_days": 3650, "report_retention_days": 3650,
            "clean_before": "2000-01-01T00:00:00+00:00",
            "mlflow_model_version_retention_days": 0.5 / 86400, "mlflow_keep_model_versions": keep}
    time.sleep(0.5)  # the versions made above are older than the version retention
    run = stack.trigger("maintenance_dag", conf=conf, role="op")
    final = stack.wait_run("maintenance_dag", run, timeout=300)
    states = {t["task_id"]: t["state"] for t in stack.task_instances("maintenance_dag", run)}
    assert final["state"] == "success", states
    for run_id in (pruned_run, other_run, version_run):
        assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    # The old unaliased version went (before the runs: its run went in the same pass); the newer
    # ones, every aliased one and every flights version stayed, aliases unmoved.
    resp = stack.api("GET", f"/dags/maintenance_dag/dagRuns/{run}/taskInstances/prune_mlflow_runs/xcomEntries/"
                            "return_value")
    assert resp.status_code == 200, resp.text
    pruned = resp.json()["value"]
    pruned = json.loads(pruned) if isinstance(pruned, str) else pruned
    assert f"{synthetic.model_name}/{old_version}" in pruned["deleted_versions"], pruned
    left = _versions(client, synthetic.model_name)
    assert old_version not in left and set(newer) <= set(left), (old_version, newer, left)
    assert {v: left.get(v) for v in synthetic_aliased} == synthetic_aliased
    assert _versions(client, env["MLOPS_MODEL_NAME"]) == flights_versions
    # Its login may delete versions of the data sets' models only (MANAGE there), not of another model.
    refused = requests.delete(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/model-versions/delete",
                              auth=stack.mlflow_login("maintenance"), json={"name": model_name, "version": "1"},
                              timeout=30)
    assert refused.status_code == 403, refused.text
    # Soft delete: the files are still there until the gc.
    assert _files(places[pruned_run][0]) and _files(places[pruned_run][1])

    rpc.signalProcess(GC_PROGRAM, "USR1")

    @retry(retry=retry_if_result(bool), stop=stop_after_delay(120), wait=wait_fixed(1))
    def left() -> list[Path]:
        return [p for r in (pruned_run, other_run, version_run) for place in places[r] for p in _files(place)]

    try:
        remaining = left()
    except RetryError as exc:
        remaining = exc.last_attempt.result()
    assert remaining == [], f"files of pruned runs still on disk after the gc: {remaining}"
    # Gone for good, rows too: asked as MLflow's admin (a missing run is a 403 to other logins).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_ADMIN_USER"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_ADMIN_PASSWORD"])
    for run_id in (pruned_run, other_run, version_run):
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found|No Run"):
            client.get_run(run_id)
    for model_id in (pruned_model, other_model, version_model):
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
    for version in newer:  # the filler versions (they hold the probe's kept run)
        client.delete_model_version(synthetic.model_name, version)

