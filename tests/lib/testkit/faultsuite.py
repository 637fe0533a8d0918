"""What the fault tests share: the fault stack's handle (the restarted test stack, its second host,
the clients), the end-state check every fault must pass, and small REST helpers."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from stack import config as stack_config
from stack import workerhost
from stack.api import Airflow
from testkit import faults, secondhost

from testkit.stack_session import REPO, StackHandle, StatsdCapture

FAULT_DAGS = REPO / "tests" / "faults" / "dags"
PIPELINE, RETRAIN, LONG = "ml_pipeline_dag", "model_retraining_dag", "fault_long_training"
# Values no signal reaches (each fires at or above its threshold; shares and rates stay <= 1).
NO_DRIFT = {"mlops_drift_share": "2", "mlops_auc_drop": "2", "mlops_label_shift": "2"}
MLOPS = str(REPO / ".venv" / "bin" / "mlops")


@dataclass
class FaultStack:
    """The restarted test stack, its second host and the clients the fault tests use."""

    handle: StackHandle
    api: Airflow
    host: secondhost.SecondHost
    host_cfg: stack_config.StackConfig
    statsd: StatsdCapture

    @property
    def cfg(self) -> stack_config.StackConfig:
        return self.handle.cfg

    @property
    def viewer(self) -> tuple[str, str]:
        return self.handle.mlflow_login("viewer")

    def registry(self) -> faults.Registry:
        return faults.registry(self.cfg, self.viewer)

    def replay(self, week: str) -> str:
        """Write one more weekly batch into the landing folder (as a feed would); its path. The week
        must be new to the stack (the stack tests before the suite use 2013-W01..W05 and W27), or
        the pipeline has nothing to do and the fault would hit no training."""
        seen = set(self.watermark()) | self.quarantined() | set(self.accepted())
        assert week not in seen, f"{week} was already fed to the session stack: pick a week no earlier test uses"
        env = {**os.environ, "MLOPS_DATA_DIR": str(self.cfg.data_dir)}
        proc = subprocess.run([MLOPS, "data", "replay", "--from", week, "--until", week], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return str(self.cfg.data_dir / "landing" / f"{week}.csv")

    def watermark(self) -> list[str]:
        path = self.cfg.data_dir / "state" / "processed.json"
        return sorted(json.loads(path.read_text())["weeks"]) if path.exists() else []

    def accepted(self) -> list[str]:
        return sorted(p.stem for p in (self.cfg.data_dir / "accepted").glob("*.csv"))

    def quarantined(self) -> set[str]:
        return {p.name.split(".")[0] for p in (self.cfg.data_dir / "quarantine").glob("*.csv")}

    def host_up(self) -> None:
        """Start the worker host inside the second host (its namespaces)."""
        proc = subprocess.run(self.host.command([str(REPO / ".venv" / "bin" / "python"), "-m", "stack.workerhost",
                                                 "--env-file", str(self.host_cfg.env_file), "up"]),
                              cwd=REPO, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, f"worker host up failed:\n{proc.stdout}\n{proc.stderr}"

    def host_down(self) -> None:
        workerhost.cmd_down(self.host_cfg)

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.api.get(path, **({"map_index": map_index} if map_index >= 0 else {}))["value"]
        return json.loads(value) if isinstance(value, str) else value


def recipe_index(recipe: str) -> int:
    """The map index of `recipe`'s retrain_model task instance (recipes in file order)."""
    from mlops.config import load_recipes

    return list(load_recipes()).index(recipe)


def heartbeat_timeouts(fs: FaultStack, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    """The scheduler's "heartbeat timeout" audit-log entries for one task of a run."""
    found = fs.api.get("/eventLogs", dag_id=dag_id, task_id=task_id, event="heartbeat timeout", limit=100)
    return [e for e in found["event_logs"] if e.get("run_id") == run_id]


def assert_nothing_half_done(fs: FaultStack, before: faults.Registry, runs: list[tuple[str, str]],
                             trainings: int) -> faults.Registry:
    """The end state every fault must leave: each run ended `success`; at most one new model version
    per training, never two of one fingerprint; no MLflow run left RUNNING; the watermark lists
    exactly the accepted batches (all trained on); the champion moved only to an evaluated winner."""
    for dag_id, run_id in runs:
        run = fs.api.run(dag_id, run_id)
        states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in fs.api.task_instances(dag_id, run_id)}
        assert run["state"] == "success", f"{dag_id} {run_id}: {run['state']} {states}"
    after = fs.registry()
    new = sorted(set(after.versions) - set(before.versions), key=int)
    assert len(new) <= trainings, f"{len(new)} new versions for {trainings} trainings: {new}"
    fingerprints = [v["tags"].get("fingerprint") for v in after.versions.values()]
    assert len(fingerprints) == len(set(fingerprints)), f"a fingerprint registered twice: {sorted(fingerprints)}"
    assert not after.running_runs, f"MLflow runs left RUNNING: {after.running_runs}"
    # Rejected batches are marked processed too; every other one was accepted and trained on.
    assert sorted(set(fs.watermark()) - fs.quarantined()) == fs.accepted(), (fs.watermark(), fs.accepted())
    if after.champion != before.champion:
        deciders = []
        for dag_id, run_id in runs:
            task_id = "evaluate" if dag_id == PIPELINE else "evaluate_new_model"
            evaluation = fs.xcom(dag_id, run_id, task_id)
            if evaluation["decision"]["deploy"]:
                deciders.append(str(evaluation["version"]))
        assert after.champion in deciders, f"champion v{after.champion} is no evaluated winner of {runs}"
        assert after.versions[after.champion]["tags"].get("deployed_reason"), after.versions[after.champion]
    return after
